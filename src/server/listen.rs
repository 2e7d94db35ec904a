//! Serving: plain HTTP or HTTPS (rustls), with a cap on concurrent connections and graceful
//! shutdown. A connection over the cap is closed at once, before any byte is read.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum Tls {
    Off,
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    /// Generated at start for `localhost`, `127.0.0.1`, `::1` and any extra names.
    SelfSigned {
        names: Vec<String>,
    },
}

/// A ready TLS configuration and the certificate's SHA-256 fingerprint (to pin in senders).
pub struct TlsReady {
    pub config: RustlsConfig,
    pub fingerprint: String,
}

/// Loads or generates the certificate.
pub async fn tls(tls: &Tls) -> io::Result<Option<TlsReady>> {
    // One crypto provider for the process (ring); a second install is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert_pem, key_pem) = match tls {
        Tls::Off => return Ok(None),
        Tls::Files { cert, key } => (tokio::fs::read(cert).await?, tokio::fs::read(key).await?),
        Tls::SelfSigned { names } => {
            let mut all = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            all.extend(names.iter().cloned());
            let ck = rcgen::generate_simple_self_signed(all).map_err(io::Error::other)?;
            (
                ck.cert.pem().into_bytes(),
                ck.signing_key.serialize_pem().into_bytes(),
            )
        }
    };
    let fingerprint = first_cert_fingerprint(&cert_pem)?;
    let config = RustlsConfig::from_pem(cert_pem, key_pem).await?;
    Ok(Some(TlsReady {
        config,
        fingerprint,
    }))
}

/// `AA:BB:…` SHA-256 of the first certificate in a PEM bundle.
fn first_cert_fingerprint(pem: &[u8]) -> io::Result<String> {
    let text = std::str::from_utf8(pem).map_err(io::Error::other)?;
    let body: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .ok_or_else(|| io::Error::other("no certificate in the PEM file"))?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(io::Error::other)?;
    let digest = Sha256::digest(der);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Refuses connections beyond the cap; holds a permit for each accepted one.
#[derive(Clone)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
}

impl<I, S> Accept<I, S> for LimitAcceptor {
    type Stream = Limited<I>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Limited<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        std::future::ready(match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok((
                Limited {
                    inner: stream,
                    _permit: permit,
                },
                service,
            )),
            Err(_) => Err(io::Error::other("connection limit reached")),
        })
    }
}

/// A connection counted against the cap until it is dropped.
pub struct Limited<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and gives open
/// connections `drain` to finish.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle: Handle<SocketAddr> = Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(drain));
    });
    let limit = LimitAcceptor {
        permits: Arc::new(Semaphore::new(max_connections.max(1))),
    };
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            axum_server::from_tcp(listener)?
                .acceptor(limit)
                .handle(handle)
                .serve(make)
                .await
        }
        Some(config) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(limit);
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(make)
                .await
        }
    }
}

//! Serving: plain HTTP or HTTPS (rustls), with a cap on concurrent connections and graceful
//! shutdown. A connection over the cap is closed at once, before any byte is read.
//!
//! Idle connections cannot lock others out: one client address may hold only its share of the
//! cap, a connection must send its request headers within the header timeout (counted from its
//! start, or from the end of the previous response), and a connection with no traffic for the
//! idle timeout is closed (HTTP/2 included).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
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
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

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

/// Limits on connections: how many, how many per client address, how long they may idle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// 0: an eighth of `max_connections` (at least 1).
    pub per_client: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// A connection without any traffic this long is closed.
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn new(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            per_client: 0,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn per_client(&self) -> usize {
        match self.per_client {
            0 => (self.max_connections / 8).max(1),
            n => n,
        }
    }
}

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 64;

/// Refuses connections beyond the cap, or beyond their address's share of it; holds a permit
/// for each accepted one.
#[derive(Clone)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
    clients: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    per_client: usize,
    idle: Duration,
}

impl LimitAcceptor {
    fn new(limits: &Limits) -> LimitAcceptor {
        LimitAcceptor {
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            clients: Arc::default(),
            per_client: limits.per_client(),
            idle: limits.idle_timeout,
        }
    }

    fn admit(&self, stream: &TcpStream) -> io::Result<(OwnedSemaphorePermit, ClientSlot)> {
        let ip = stream.peer_addr()?.ip();
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let slot = {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let n = clients.entry(ip).or_insert(0);
            if *n >= self.per_client {
                return Err(io::Error::other("connection limit of this client reached"));
            }
            *n += 1;
            ClientSlot {
                ip,
                clients: self.clients.clone(),
            }
        };
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| io::Error::other("connection limit reached"))?;
        Ok((permit, slot))
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Limited<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Limited<TcpStream>, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(&stream).map(|(permit, slot)| {
            (
                Limited {
                    inner: stream,
                    idle: self.idle,
                    deadline: Box::pin(tokio::time::sleep(self.idle)),
                    _permit: permit,
                    _slot: slot,
                },
                service,
            )
        }))
    }
}

/// One connection counted against its client address's share; released when dropped.
pub struct ClientSlot {
    ip: IpAddr,
    clients: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// A connection counted against the cap until it is dropped; it fails with `TimedOut` once no
/// byte went either way for its idle time.
pub struct Limited<I> {
    inner: I,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    _slot: ClientSlot,
}

impl<I> Limited<I> {
    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
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
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
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
    limits: Limits,
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
    let limit = LimitAcceptor::new(&limits);
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener)?
        .handle(handle)
        .first_request_timeout(limits.header_timeout);
    {
        let timer = hyper_util::rt::TokioTimer::new();
        let b = server.http_builder();
        b.http1()
            .timer(timer.clone())
            .header_read_timeout(limits.header_timeout);
        b.http2().timer(timer).max_concurrent_streams(MAX_STREAMS);
    }
    match tls {
        None => server.acceptor(limit).serve(make).await,
        Some(config) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(limit);
            server.acceptor(acceptor).serve(make).await
        }
    }
}

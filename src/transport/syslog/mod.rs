//! Syslog in: UDP datagrams (RFC 5426), TCP streams (RFC 6587, both framings), TLS streams
//! (RFC 5425: octet counting, LF framing also taken; client certificates required when the
//! source names a `client_ca`) and RELP, each message parsed by [`parse`] and handed to the
//! engine through a [`Handoff`].
//!
//! UDP is best effort by nature: the socket asks for a large receive buffer, and what is lost
//! or unreadable is counted. TCP connections are capped per listener (`max_connections`; past
//! it a new connection is closed at once; one from outside `allow_from` too, before it takes a
//! slot), and one sender address may hold only its share of the cap
//! (`max_connections_per_client`), so idle connections from one address cannot lock every
//! device out until they time out; connections are closed after `idle_timeout` of silence (RELP: also when an answer cannot be
//! written for that long); a connection hands on its messages in order, one stored before
//! the next is read.

pub mod cisco;
pub mod frame;
pub mod parse;
pub mod relp;
pub mod sd;
pub mod utf8;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::Handoff;
use crate::sources::{Endpoint, Listening, Scheme};

/// The receive buffer asked for on UDP sockets (the kernel may grant less).
const UDP_RECV_BUFFER: usize = 8 << 20;

/// Binds `endpoint` and serves it in a task until `shutdown`; returns the bound address.
pub async fn listen(
    endpoint: &Endpoint,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    match endpoint.scheme {
        Scheme::Udp => {
            let socket = udp_socket(endpoint.addr)?;
            let addr = socket.local_addr()?;
            tokio::spawn(serve_udp(socket, settings, hand, shutdown));
            Ok(addr)
        }
        Scheme::Tcp | Scheme::Relp | Scheme::Tls => {
            let tls = match endpoint.scheme {
                Scheme::Tls => Some(acceptor(&settings)?),
                _ => None,
            };
            let listener = TcpListener::bind(endpoint.addr).await?;
            let addr = listener.local_addr()?;
            let relp = endpoint.scheme == Scheme::Relp;
            tokio::spawn(serve_tcp(listener, settings, hand, shutdown, relp, tls));
            Ok(addr)
        }
    }
}

/// The `tls://` listener's acceptor, from the source's `tls:` files (RFC 5425).
fn acceptor(settings: &Listening) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let files = settings
        .tls
        .as_ref()
        .ok_or_else(|| std::io::Error::other("tls:// needs the source's `tls:` block"))?;
    let config = crate::tls::server_config(&files.cert, &files.key, files.client_ca.as_deref())
        .map_err(std::io::Error::other)?;
    Ok(tokio_rustls::TlsAcceptor::from(config))
}

pub(crate) fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only means more drops under bursts (counted by the kernel).
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn serve_udp(
    socket: UdpSocket,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
) {
    let max = settings.max_message;
    // One byte more than allowed tells a cut datagram from one exactly `max` long.
    let mut buf = vec![0u8; max + 1];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(source = %hand.source(), "udp receive: {e}");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let truncated = n > max;
        let now = parse::Now::read();
        // A message the store refused is lost and counted (`store_failed`); the socket keeps
        // being read, so the next ones are stored once the store is back, or counted.
        if let Some(event) = read(&hand, &buf[..n.min(max)], truncated, peer, &now) {
            deliver(&hand, event, peer).await;
        }
    }
}

/// Reads one message (`now`: the clock read for its batch) into its event, unless it is taken
/// here already: a line of the common shape no rule can want is counted without its event
/// being built ([`Handoff::ruled_out`]). Unreadable and cut messages are counted.
fn read(
    hand: &Handoff,
    bytes: &[u8],
    truncated: bool,
    peer: SocketAddr,
    now: &parse::Now,
) -> Option<Value> {
    match parse::read(bytes, truncated, now) {
        parse::Read::Line(line) => {
            (!hand.ruled_out(&line, peer.ip(), now.ms, || line.event())).then(|| line.event())
        }
        parse::Read::Event(event) => {
            if truncated {
                hand.malformed("truncated", peer.ip());
            }
            if event.get("parse_error").is_some() {
                hand.malformed("unparsed", peer.ip());
            }
            if event.get("invalid_utf8").is_some() {
                hand.malformed("invalid_utf8", peer.ip());
            }
            if event.get("structured_data_unread").is_some() {
                hand.malformed("structured_data", peer.ip());
            }
            Some(event)
        }
    }
}

/// Delivers one message's event: `true` once it is stored or known not to be kept (matched
/// nothing, or dropped by policy and counted); `false` when the store failed.
async fn deliver(hand: &Handoff, event: Value, peer: SocketAddr) -> bool {
    match hand.deliver(event, peer.ip(), Vec::new()).await {
        Ok(_) => true,
        Err(e) => {
            hand.store_failed(Some(peer.ip()), "a syslog message", &e);
            false
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    settings: Arc<Listening>,
    hand: Handoff,
    shutdown: CancellationToken,
    relp: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Slots::new(&settings);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(source = %hand.source(), "tcp accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        // A sender outside `allow_from` (read from the rules in force, as per message) is
        // closed before it takes a slot: idle connections from outside would otherwise lock
        // the allowed devices out until `idle_timeout`.
        if hand
            .rules()
            .source(hand.source())
            .is_some_and(|s| !s.allows(peer.ip()))
        {
            hand.dropped("forbidden", Some(peer.ip()));
            drop(stream);
            continue;
        }
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                hand.dropped(reason, Some(peer.ip()));
                drop(stream);
                continue;
            }
        };
        let (hand, settings, shutdown) = (hand.clone(), settings.clone(), shutdown.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let serve = async {
                if relp {
                    serve_relp(stream, peer, &settings, &hand).await;
                } else if let Some(tls) = tls {
                    // The handshake within the idle timeout; a refused client certificate
                    // (or none, when `client_ca` asks for one) ends here, counted.
                    match tokio::time::timeout(settings.idle_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_stream(stream, peer, &settings, &hand).await,
                        Ok(Err(e)) => {
                            hand.dropped("tls_handshake", Some(peer.ip()));
                            tracing::debug!(source = %hand.source(), %peer, "tls handshake: {e}");
                        }
                        Err(_) => {
                            hand.dropped("idle_timeout", Some(peer.ip()));
                        }
                    }
                } else {
                    serve_stream(stream, peer, &settings, &hand).await;
                }
            };
            tokio::select! {
                () = serve => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// A listener's connection slots: `max_connections` in all, of which one sender address may
/// hold `max_connections_per_client`.
struct Slots {
    all: Arc<tokio::sync::Semaphore>,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_client: usize,
}

/// One accepted connection's slot; given back when dropped.
struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    ip: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Slots {
    fn new(settings: &Listening) -> Slots {
        Slots {
            all: Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1))),
            held: Arc::default(),
            per_client: settings.max_connections_per_client.max(1),
        }
    }

    /// A slot for a connection from `ip`, or the reason it gets none (the counter's label):
    /// `connection_cap` (all are held: nobody gets in), else `connection_cap_client` (its
    /// address holds its share).
    fn take(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        // An IPv4 sender reaching a `[::]` listener counts as itself.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| "connection_cap")?;
        let n = held.get(&ip).copied().unwrap_or(0);
        if n >= self.per_client {
            // The permit goes back as it is dropped.
            return Err("connection_cap_client");
        }
        held.insert(ip, n + 1);
        Ok(Slot {
            _all: permit,
            ip,
            held: self.held.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

async fn serve_stream(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    peer: SocketAddr,
    settings: &Listening,
    hand: &Handoff,
) {
    let mut framer = frame::Framer::new(settings.max_message);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // One clock read for all the messages of a read.
        let now = parse::Now::read();
        while let Some(f) = framer.next(&mut buf) {
            if let Some(event) = read(hand, &f.bytes, f.truncated, peer, &now) {
                deliver(hand, event, peer).await;
            }
        }
        buf.reserve(16 * 1024);
        match tokio::time::timeout(settings.idle_timeout, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {}
            // A reset, or a TLS stream ended without close_notify (many clients do that):
            // what was read is handed on as at a clean close, not dropped with the error.
            Ok(Err(e)) => {
                tracing::debug!(source = %hand.source(), %peer, "tcp read: {e}");
                break;
            }
            // Closed for silence: a last message without its LF is handed on as at a close
            // too (it was dropped with the connection).
            Err(_) => {
                hand.dropped("idle_timeout", Some(peer.ip()));
                break;
            }
        }
    }
    if let Some(f) = framer.rest(&mut buf)
        && let Some(event) = read(hand, &f.bytes, f.truncated, peer, &parse::Now::read())
    {
        deliver(hand, event, peer).await;
    }
}

/// One RELP session: every `syslog` frame is answered only after it is taken ([`read`], [`deliver`]).
async fn serve_relp(stream: TcpStream, peer: SocketAddr, settings: &Listening, hand: &Handoff) {
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = relp::Framer::new(settings.max_message);
    let mut session = relp::Session::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let now = parse::Now::read();
        loop {
            let frame = match framer.next(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    hand.malformed("relp", peer.ip());
                    tracing::debug!(source = %hand.source(), %peer, "relp: {e}");
                    return;
                }
            };
            // Out of librelp's order: a broken session is closed, a command it does not take
            // yet (or again) answered with a refusal; both counted (and so is an unknown
            // command, below).
            let reply = match session.admit(&frame) {
                Err(relp::Refused::OutOfSequence { expected, got }) => {
                    hand.malformed("relp", peer.ip());
                    tracing::debug!(source = %hand.source(), %peer, expected, got, "relp: transaction number out of sequence");
                    return;
                }
                Err(relp::Refused::Answer(text)) => {
                    hand.malformed("relp", peer.ip());
                    Some(relp::rsp(frame.txnr, text))
                }
                Ok(()) => None,
            };
            let reply = match (reply, frame.command.as_str()) {
                (Some(refusal), _) => refusal,
                (None, "open") => relp::open_answer(frame.txnr),
                (None, "syslog") => {
                    let taken = match read(hand, &frame.data, frame.truncated, peer, &now) {
                        Some(event) => deliver(hand, event, peer).await,
                        None => true,
                    };
                    if taken {
                        relp::rsp(frame.txnr, "200 OK")
                    } else {
                        relp::rsp(frame.txnr, "500 not stored, send again")
                    }
                }
                (None, "close") => {
                    answer(&mut wr, &relp::rsp(frame.txnr, ""), peer, settings, hand).await;
                    return;
                }
                // As librelp's server does, a command it does not know ends the session; the
                // client is told why first, and sends again what it has no answer for.
                (None, _) => {
                    hand.malformed("relp", peer.ip());
                    tracing::debug!(source = %hand.source(), %peer, command = %frame.command, "relp: unknown command; closing the session");
                    answer(
                        &mut wr,
                        &relp::rsp(frame.txnr, "500 unknown command"),
                        peer,
                        settings,
                        hand,
                    )
                    .await;
                    return;
                }
            };
            if !answer(&mut wr, &reply, peer, settings, hand).await {
                return;
            }
        }
        buf.reserve(16 * 1024);
        match tokio::time::timeout(settings.idle_timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                hand.dropped("idle_timeout", Some(peer.ip()));
                return;
            }
        }
    }
}

/// Writes one RELP answer: `false` when the connection is to be closed — the write failed, or
/// it could not finish within `idle_timeout` because the client reads no answers (counted as
/// `idle_timeout`, as a silent client is): such a client would otherwise hold its connection
/// slot for ever, the task parked on a full socket buffer.
async fn answer(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    peer: SocketAddr,
    settings: &Listening,
    hand: &Handoff,
) -> bool {
    use tokio::io::AsyncWriteExt;
    match tokio::time::timeout(settings.idle_timeout, wr.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(source = %hand.source(), %peer, "relp write: {e}");
            false
        }
        Err(_) => {
            hand.dropped("idle_timeout", Some(peer.ip()));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, per_client: usize) -> Slots {
        Slots::new(&Listening {
            endpoints: Vec::new(),
            broker: None,
            nats: None,
            snmp: None,
            format: crate::body::BodyFormat::Json,
            keep: crate::sources::Keep::Matched,
            max_message: 1024,
            max_connections: max,
            max_connections_per_client: per_client,
            idle_timeout: crate::sources::DEFAULT_IDLE_TIMEOUT,
            tls: None,
        })
    }

    #[test]
    fn one_address_holds_only_its_share_and_gets_it_back() {
        let s = slots(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = s.take(a).unwrap();
        let _second = s.take(mapped).unwrap();
        assert_eq!(s.take(a).err(), Some("connection_cap_client"));
        let _third = s.take(b).unwrap();
        assert_eq!(
            s.take("10.0.0.3".parse().unwrap()).err(),
            Some("connection_cap")
        );
        assert_eq!(s.take(a).err(), Some("connection_cap"), "all held: the cap");
        drop(first);
        assert!(s.take(a).is_ok(), "a closed connection gives its slot back");
        // A refusal for the share takes no slot of the cap.
        let s = slots(3, 1);
        let _one = s.take(a).unwrap();
        assert_eq!(s.take(a).err(), Some("connection_cap_client"));
        let _two = s.take(b).unwrap();
        assert!(s.take("10.0.0.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_default_share_lets_a_relay_in() {
        use crate::sources::default_per_client;
        assert_eq!(default_per_client(1024), 128);
        assert_eq!(default_per_client(64), 8);
        assert_eq!(default_per_client(20), 8);
        assert_eq!(default_per_client(3), 3);
        assert_eq!(default_per_client(1), 1);
    }
}

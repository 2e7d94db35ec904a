//! SNMP notifications in (`kind: snmp_trap`): v1 and v2c traps by community, v2c informs
//! answered with a Response, v3 traps and informs through USM ([`v3`]), rulehook being the
//! authoritative engine for informs ([`engine`]). Each notification becomes an event through
//! the source's [`Handoff`]; an inform is answered only once that returned (stored, or known
//! not to be kept), so a sender whose inform was lost sends it again.
//!
//! Refused messages (wrong community, unknown user, bad authentication, undecryptable, outside
//! the time window, …) are never events: each is counted by reason in
//! `rulehook_transport_dropped_total`.

pub mod engine;
pub mod message;
pub mod mib;
pub mod pdu;
pub mod v3;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Delivered, Handoff};
use crate::sources::{Endpoint, Listening, Scheme};
use crate::verify::snmp_trap::SnmpTrap;
use engine::LocalEngine;
use message::{CommunityPdu, Parsed};
use pdu::{Notification, Version};

/// Binds `endpoint` (UDP) and serves it until `shutdown`; returns the bound address.
pub async fn listen(
    endpoint: &Endpoint,
    settings: Arc<Listening>,
    hand: Handoff,
    engine: Arc<LocalEngine>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    if endpoint.scheme != Scheme::Udp {
        return Err(std::io::Error::other(
            "SNMP notifications come over udp:// only",
        ));
    }
    let socket = super::syslog::udp_socket(endpoint.addr)?;
    let addr = socket.local_addr()?;
    tokio::spawn(serve(socket, settings, hand, engine, shutdown));
    Ok(addr)
}

async fn serve(
    socket: UdpSocket,
    settings: Arc<Listening>,
    hand: Handoff,
    engine: Arc<LocalEngine>,
    shutdown: CancellationToken,
) {
    // SNMP messages fit a UDP datagram; one more byte tells a cut one.
    let max = settings.max_message.min(65_507);
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
            _ = shutdown.cancelled() => return,
        };
        if n > max {
            hand.dropped("too_long", Some(peer.ip()));
            continue;
        }
        handle(&socket, &buf[..n], peer, &hand, &engine).await;
    }
}

/// The source's current credentials (a reload may change them), if it still listens and
/// admits `peer`.
fn current(hand: &Handoff, peer: SocketAddr) -> Result<Arc<SnmpTrap>, &'static str> {
    let rules = hand.rules();
    let source = rules.source(hand.source()).ok_or("source_removed")?;
    if !source.allows(peer.ip()) {
        return Err("forbidden");
    }
    source
        .listening
        .as_ref()
        .and_then(|l| l.snmp.clone())
        .ok_or("source_removed")
}

/// One datagram: checked, handed on, and for an inform answered once handed on.
pub async fn handle(
    socket: &UdpSocket,
    bytes: &[u8],
    peer: SocketAddr,
    hand: &Handoff,
    engine: &LocalEngine,
) {
    let settings = match current(hand, peer) {
        Ok(s) => s,
        Err(reason) => {
            hand.dropped(reason, Some(peer.ip()));
            return;
        }
    };
    let parsed = match message::parse(bytes) {
        Ok(p) => p,
        Err(reason) => {
            hand.dropped(reason, Some(peer.ip()));
            return;
        }
    };
    let (notification, reply): (Notification, Reply) = match parsed {
        Parsed::Community {
            version,
            community,
            pdu,
        } => {
            if !settings.takes_communities() {
                hand.dropped("community_not_configured", Some(peer.ip()));
                return;
            }
            if !settings.community_ok(&community) {
                hand.dropped("bad_community", Some(peer.ip()));
                return;
            }
            match pdu {
                CommunityPdu::V1Trap(t) => {
                    let (varbinds, agent) = pdu::v1_translate(&t);
                    let n = Notification {
                        version,
                        inform: false,
                        varbinds,
                        agent: Some(agent),
                        user: None,
                    };
                    (n, Reply::None)
                }
                CommunityPdu::Trap(p) => (v2c_notification(version, &p, false), Reply::None),
                CommunityPdu::Inform(p) => (
                    v2c_notification(version, &p, true),
                    Reply::Bytes(message::v2c_response(community, &p)),
                ),
                CommunityPdu::Other => {
                    hand.dropped("unsupported_pdu", Some(peer.ip()));
                    return;
                }
            }
        }
        Parsed::V3(msg) => match v3::process(bytes, &msg, &settings, engine) {
            v3::Outcome::Refused { reason, report } => {
                if let Some(r) = report {
                    let _ = socket.send_to(&r, peer).await;
                }
                hand.dropped(reason, Some(peer.ip()));
                return;
            }
            v3::Outcome::Notification { user, pdu, reply } => {
                let n = Notification {
                    version: Version::V3,
                    inform: reply.is_some(),
                    varbinds: pdu::v2_varbinds(&pdu),
                    agent: None,
                    user: Some(user),
                };
                (n, reply.map(Reply::V3).unwrap_or(Reply::None))
            }
        },
    };
    let body = notification.into_body(peer.ip());
    match hand.deliver(body, peer.ip(), Vec::new()).await {
        Ok(Delivered::Stored | Delivered::Unmatched) => {}
        Ok(Delivered::Dropped(_)) => return,
        Err(e) => {
            // Not answered: the sender of an inform tries again.
            tracing::warn!(source = %hand.source(), %peer, "trap not stored: {e}");
            return;
        }
    }
    let out = match reply {
        Reply::None => None,
        Reply::Bytes(b) => b,
        Reply::V3(r) => r.encode(engine),
    };
    if let Some(out) = out
        && let Err(e) = socket.send_to(&out, peer).await
    {
        tracing::debug!(source = %hand.source(), %peer, "inform response not sent: {e}");
    }
}

/// The answer an inform gets once it is handed on.
enum Reply {
    None,
    Bytes(Option<Vec<u8>>),
    V3(Box<v3::Reply>),
}

fn v2c_notification(version: Version, p: &rasn_snmp::v2::Pdu, inform: bool) -> Notification {
    Notification {
        version,
        inform,
        varbinds: pdu::v2_varbinds(p),
        agent: None,
        user: None,
    }
}

#[cfg(test)]
mod tests {
    //! Datagrams as net-snmp 5.9's `snmptrap`/`snmpinform` sent them (tests/data/snmp).
    use super::*;
    use crate::verify::snmp_trap::UsmUser;
    use crate::verify::usm::{AuthProtocol, PrivProtocol};

    const V2C_TRAP: &[u8] = include_bytes!("../../../tests/data/snmp/v2c-trap.bin");
    const V1_TRAP: &[u8] = include_bytes!("../../../tests/data/snmp/v1-trap.bin");
    const V3_AUTH: &[u8] = include_bytes!("../../../tests/data/snmp/v3-authnopriv-trap.bin");
    const V3_DES: &[u8] = include_bytes!("../../../tests/data/snmp/v3-authpriv-des-trap.bin");
    const V3_PROBE: &[u8] = include_bytes!("../../../tests/data/snmp/v3-discovery.bin");

    fn users() -> SnmpTrap {
        SnmpTrap::new(
            Vec::new(),
            vec![
                UsmUser {
                    name: "ops".into(),
                    auth: AuthProtocol::Sha1,
                    auth_ku: AuthProtocol::Sha1.password_key(b"authpassword"),
                    privacy: None,
                },
                UsmUser {
                    name: "sec".into(),
                    auth: AuthProtocol::Md5,
                    auth_ku: AuthProtocol::Md5.password_key(b"authpassword"),
                    privacy: Some((
                        PrivProtocol::Des,
                        AuthProtocol::Md5.password_key(b"privpassword"),
                    )),
                },
            ],
        )
    }

    #[test]
    fn every_value_type_of_a_real_v2c_trap() {
        let Ok(Parsed::Community {
            version,
            community,
            pdu: CommunityPdu::Trap(p),
        }) = message::parse(V2C_TRAP)
        else {
            panic!("not a v2c trap");
        };
        assert_eq!(version, Version::V2c);
        assert_eq!(&community[..], b"public");
        let n = v2c_notification(version, &p, false);
        let body = n.into_body("127.0.0.1".parse().unwrap());
        let vb = &body["varbinds"];
        assert_eq!(body["trap_name"], "linkDown");
        assert_eq!(vb["1.3.6.1.2.1.2.2.1.1.2"], 2);
        assert_eq!(vb["1.3.6.1.2.1.2.2.1.2.2"], "Gi0/2");
        assert_eq!(
            vb["1.3.6.1.2.1.1.5.0"], "001bff",
            "binary OCTET STRING as hex"
        );
        assert_eq!(vb["1.3.6.1.4.1.9.9.1"], "10.1.2.3");
        assert_eq!(vb["1.3.6.1.4.1.9.9.2"], "1.3.6.1.4.1.9");
        assert_eq!(vb["1.3.6.1.4.1.9.9.3"], 4242);
        assert_eq!(vb["1.3.6.1.4.1.9.9.4"], 7);
        assert_eq!(vb["1.3.6.1.4.1.9.9.5"], u64::MAX);
        assert_eq!(body["varbind_names"]["ifDescr.2"], "Gi0/2");
        assert_eq!(body["varbind_names"]["sysName.0"], "001bff");
    }

    #[test]
    fn a_real_v1_trap_is_translated() {
        let Ok(Parsed::Community {
            pdu: CommunityPdu::V1Trap(t),
            ..
        }) = message::parse(V1_TRAP)
        else {
            panic!("not a v1 trap");
        };
        let (vbs, agent) = pdu::v1_translate(&t);
        assert_eq!(agent, "10.9.8.7");
        assert_eq!(vbs[1].1, "1.3.6.1.4.1.9.0.42");
    }

    #[test]
    fn real_v3_traps_authenticate_and_decrypt() {
        let engine = LocalEngine::new(b"\x80\0\0\0\x05here".to_vec(), 1);
        for (raw, user) in [(V3_AUTH, "ops"), (V3_DES, "sec")] {
            let Ok(Parsed::V3(m)) = message::parse(raw) else {
                panic!("not v3");
            };
            match v3::process(raw, &m, &users(), &engine) {
                v3::Outcome::Notification {
                    user: u,
                    pdu,
                    reply,
                } => {
                    assert_eq!(u, user);
                    assert!(reply.is_none());
                    assert_eq!(pdu::v2_varbinds(&pdu)[2].1, 2);
                }
                v3::Outcome::Refused { reason, .. } => panic!("{user}: {reason}"),
            }
        }
    }

    #[test]
    fn a_real_discovery_probe_gets_a_report() {
        let engine = LocalEngine::new(b"\x80\0\0\0\x05here".to_vec(), 1);
        let Ok(Parsed::V3(m)) = message::parse(V3_PROBE) else {
            panic!("not v3");
        };
        assert!(matches!(
            v3::process(V3_PROBE, &m, &users(), &engine),
            v3::Outcome::Refused {
                reason: "unknown_engine_id",
                report: Some(_)
            }
        ));
    }
}

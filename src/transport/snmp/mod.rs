//! SNMP notifications in (`kind: snmp_trap`): v1 and v2c traps by community, v2c informs
//! answered with a Response, v3 traps and informs through USM ([`v3`]), rulehook being the
//! authoritative engine for informs ([`engine`]). Each notification becomes an event through
//! the source's [`Handoff`]; an inform is answered only once that returned (stored, or known
//! not to be kept), so a sender whose inform was lost sends it again. An inform sent again
//! because its Response was lost is recognised by its delivery key ([`inform_key`]) within the
//! source's `dedup_window` ([`INFORM_WINDOW`] by default): answered again, not a second event.
//!
//! Refused messages (wrong community, unknown user, bad authentication, undecryptable, outside
//! the time window, …) are never events: each is counted by reason in
//! `rulehook_transport_dropped_total`.

pub mod engine;
pub mod message;
pub mod mib;
pub mod pdu;
pub mod v3;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Delivered, Handoff};
use crate::sources::{Endpoint, Listening, Scheme};
use crate::verify::Delivery;
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

/// How long a repeated inform is answered again without becoming a second event, when the
/// source sets no `dedup_window`: past the retries of common agents (net-snmp: 5 × 1 s; Cisco
/// IOS: 3 × 30 s).
pub const INFORM_WINDOW: Duration = Duration::from_secs(120);

/// The source's settings in force now (a reload may change them).
struct Current {
    snmp: Arc<SnmpTrap>,
    /// How long a repeated inform is a duplicate; `None`: never (`dedup_window: off`).
    window: Option<Duration>,
}

/// The source's current settings, if it still listens and admits `peer`.
fn current(hand: &Handoff, peer: SocketAddr) -> Result<Current, &'static str> {
    let rules = hand.rules();
    let source = rules.source(hand.source()).ok_or("source_removed")?;
    if !source.allows(peer.ip()) {
        return Err("forbidden");
    }
    let snmp = source
        .listening
        .as_ref()
        .and_then(|l| l.snmp.clone())
        .ok_or("source_removed")?;
    let window = Some(source.dedup_window.unwrap_or(INFORM_WINDOW)).filter(|w| !w.is_zero());
    Ok(Current { snmp, window })
}

/// A datagram read as a notification, with its answer and, for an inform, its delivery key.
struct Read {
    notification: Notification,
    reply: Reply,
    key: Option<String>,
}

/// Why a datagram is no notification: the reason it is counted under, the Report to send back
/// (discovery, time), and for v3 the user name it gave, escaped and cut ([`v3::shown_user`]),
/// so the log says which device's settings are wrong.
type Refusal = (&'static str, Option<Vec<u8>>, Option<String>);

/// Checks and reads one datagram.
fn read(
    bytes: &[u8],
    peer: IpAddr,
    settings: &SnmpTrap,
    engine: &LocalEngine,
) -> Result<Read, Refusal> {
    let parsed = message::parse(bytes).map_err(|r| (r, None, None))?;
    let (version, community, pdu) = match parsed {
        Parsed::Community {
            version,
            community,
            pdu,
        } => (version, community, pdu),
        Parsed::V3(msg) => {
            return match v3::process(bytes, &msg, settings, engine) {
                v3::Outcome::Refused {
                    reason,
                    report,
                    user,
                } => Err((reason, report, user)),
                v3::Outcome::Notification { user, pdu, reply } => {
                    let principal = [user.as_bytes(), engine.id()].join(&0u8);
                    let key = reply
                        .is_some()
                        .then(|| inform_key(peer, Version::V3, &principal, &pdu));
                    let notification = Notification {
                        version: Version::V3,
                        inform: reply.is_some(),
                        varbinds: pdu::v2_varbinds(&pdu),
                        agent: None,
                        user: Some(user),
                    };
                    let reply = reply.map(Reply::V3).unwrap_or(Reply::None);
                    Ok(Read {
                        notification,
                        reply,
                        key,
                    })
                }
            };
        }
    };
    if !settings.takes_communities() {
        return Err(("community_not_configured", None, None));
    }
    if !settings.community_ok(&community) {
        return Err(("bad_community", None, None));
    }
    Ok(match pdu {
        CommunityPdu::V1Trap(t) => {
            let (varbinds, agent) = pdu::v1_translate(&t);
            let notification = Notification {
                version,
                inform: false,
                varbinds,
                agent: Some(agent),
                user: None,
            };
            Read {
                notification,
                reply: Reply::None,
                key: None,
            }
        }
        CommunityPdu::Trap(p) => Read {
            notification: v2c_notification(version, &p, false),
            reply: Reply::None,
            key: None,
        },
        CommunityPdu::Inform(p) => Read {
            notification: v2c_notification(version, &p, true),
            key: Some(inform_key(peer, version, &community, &p)),
            reply: Reply::Bytes(message::v2c_response(community, &p)),
        },
        CommunityPdu::Other => return Err(("unsupported_pdu", None, None)),
    })
}

/// What a repeat of an inform is recognised by: the agent's address, the version, the
/// community (or user and engine id), the request id and the variable bindings — what an agent
/// sends again unchanged when it repeats an inform whose Response it did not get (a v3 agent
/// may take a new msgID and engine time for each try). The community and user are hashed in,
/// never written out.
fn inform_key(
    peer: IpAddr,
    version: Version,
    principal: &[u8],
    pdu: &rasn_snmp::v2::Pdu,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((principal.len() as u64).to_be_bytes());
    h.update(principal);
    h.update(rasn::ber::encode(&pdu.variable_bindings).unwrap_or_default());
    let digest = h.finalize();
    format!(
        "snmp/{peer}/{}/{}/{}",
        version.as_str(),
        pdu.request_id,
        hex::encode(&digest[..16])
    )
}

/// One datagram: checked, handed on, and for an inform answered once handed on (again when it
/// is a repeat within the window, with no second event).
pub async fn handle(
    socket: &UdpSocket,
    bytes: &[u8],
    peer: SocketAddr,
    hand: &Handoff,
    engine: &LocalEngine,
) {
    let now = match current(hand, peer) {
        Ok(s) => s,
        Err(reason) => {
            hand.dropped(reason, Some(peer.ip()));
            return;
        }
    };
    let Read {
        notification,
        reply,
        key,
    } = match read(bytes, peer.ip(), &now.snmp, engine) {
        Ok(r) => r,
        Err((reason, report, user)) => {
            if let Some(r) = report {
                let _ = socket.send_to(&r, peer).await;
            }
            match user {
                Some(user) => hand.dropped_from_user(reason, peer.ip(), &user),
                None => hand.dropped(reason, Some(peer.ip())),
            };
            return;
        }
    };
    let body = notification.into_body(peer.ip());
    let delivered = match key {
        Some(key) => {
            let once = Delivery {
                key,
                window: now.window,
            };
            hand.deliver_once(body, peer.ip(), Vec::new(), once).await
        }
        None => hand.deliver(body, peer.ip(), Vec::new()).await,
    };
    match delivered {
        Ok(Delivered::Stored | Delivered::Unmatched | Delivered::Duplicate) => {}
        Ok(Delivered::Dropped(_)) => return,
        Err(e) => {
            // Not answered: the sender of an inform tries again. A trap is lost: counted.
            hand.store_failed(Some(peer.ip()), "a trap", &e);
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
    use crate::secrets::Secret;
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

    const V2C_INFORM: &[u8] = include_bytes!("../../../tests/data/snmp/v2c-inform.bin");

    fn key_of(raw: &[u8], peer: &str, settings: &SnmpTrap, engine: &LocalEngine) -> Option<String> {
        match read(raw, peer.parse().unwrap(), settings, engine) {
            Ok(r) => r.key,
            Err((reason, ..)) => panic!("{reason}"),
        }
    }

    #[test]
    fn a_repeated_inform_has_the_same_key_and_a_trap_none() {
        let engine = LocalEngine::new(b"\x80\0\0\0\x05here".to_vec(), 1);
        let two = SnmpTrap::new(
            vec![Secret::new("public".into()), Secret::new("secret".into())],
            Vec::new(),
        );
        let key = key_of(V2C_INFORM, "10.0.0.1", &two, &engine).unwrap();
        assert!(key.starts_with("snmp/10.0.0.1/v2c/1563388073/"), "{key}");
        assert!(!key.contains("public"), "the community is hashed: {key}");
        assert_eq!(
            key_of(V2C_INFORM, "10.0.0.1", &two, &engine),
            Some(key.clone())
        );
        // Another agent, another request id, other bindings, another community: another key.
        assert_ne!(
            key_of(V2C_INFORM, "10.0.0.2", &two, &engine),
            Some(key.clone())
        );
        let at = V2C_INFORM
            .windows(4)
            .position(|w| w == 0x5d2f_68a9_u32.to_be_bytes())
            .unwrap();
        let mut other_id = V2C_INFORM.to_vec();
        other_id[at + 3] ^= 1;
        let other_id = key_of(&other_id, "10.0.0.1", &two, &engine).unwrap();
        assert!(other_id.contains("/1563388072/"), "{other_id}");
        let mut other_value = V2C_INFORM.to_vec();
        *other_value.last_mut().unwrap() = 3;
        assert_ne!(
            key_of(&other_value, "10.0.0.1", &two, &engine),
            Some(key.clone())
        );
        let other_community = [&V2C_INFORM[..7], b"secret", &V2C_INFORM[13..]].concat();
        assert_ne!(
            key_of(&other_community, "10.0.0.1", &two, &engine),
            Some(key)
        );
        // A trap is never de-duplicated.
        assert_eq!(key_of(V2C_TRAP, "10.0.0.1", &two, &engine), None);
        assert_eq!(key_of(V3_AUTH, "10.0.0.1", &users(), &engine), None);
    }

    #[test]
    fn a_repeated_v3_inform_has_the_same_key_whatever_its_msg_id() {
        let engine = LocalEngine::new(b"\x80\0\0\0\x05here".to_vec(), 1);
        let user = UsmUser {
            name: "ops".into(),
            auth: AuthProtocol::Sha1,
            auth_ku: AuthProtocol::Sha1.password_key(b"authpassword"),
            privacy: Some((
                PrivProtocol::Aes128,
                AuthProtocol::Sha1.password_key(b"privpassword"),
            )),
        };
        let settings = SnmpTrap::new(Vec::new(), vec![user.clone()]);
        let first = v3::test_inform(&engine, &user, true, 9, 5);
        let key = key_of(&first, "10.0.0.1", &settings, &engine).unwrap();
        assert!(key.starts_with("snmp/10.0.0.1/v3/5/"), "{key}");
        assert_eq!(
            key_of(&first, "10.0.0.1", &settings, &engine),
            Some(key.clone())
        );
        let new_msg_id = v3::test_inform(&engine, &user, true, 10, 5);
        assert_eq!(
            key_of(&new_msg_id, "10.0.0.1", &settings, &engine),
            Some(key.clone())
        );
        let new_request = v3::test_inform(&engine, &user, true, 10, 6);
        assert_ne!(
            key_of(&new_request, "10.0.0.1", &settings, &engine),
            Some(key)
        );
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
                report: Some(_),
                ..
            }
        ));
    }
}

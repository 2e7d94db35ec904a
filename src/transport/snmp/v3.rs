//! SNMPv3 messages through the User-based Security Model: authentication, timeliness and
//! decryption of what comes in; discovery and time-window Reports and inform Responses going
//! out, authenticated (and encrypted) as the request was.
//!
//! rulehook is the authoritative engine for informs (the request names its engine id) and a
//! non-authoritative receiver for traps (keys localized with the sender's engine id).

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v2 as smi2;
use rasn_snmp::v2;
use rasn_snmp::v3::{self, HeaderData, ScopedPdu, ScopedPduData, USMSecurityParameters};

use super::engine::LocalEngine;
use crate::verify::snmp_trap::{SnmpTrap, UsmUser};
use crate::verify::usm::UsmError;

const FLAG_AUTH: u8 = 1;
const FLAG_PRIV: u8 = 2;
const FLAG_REPORTABLE: u8 = 4;
/// RFC 3414 §3.2 step 7: a message more than 150 s from the engine's time is refused.
const TIME_WINDOW: u32 = 150;
/// usmStats counters named in Reports (RFC 3414 §5).
const UNKNOWN_ENGINE_IDS: [u32; 11] = [1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0];
const NOT_IN_TIME_WINDOWS: [u32; 11] = [1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0];

/// What to do with one v3 message.
#[derive(Debug)]
pub enum Outcome {
    /// A trap or inform from `user`; `reply` builds the inform's Response once it is stored.
    Notification {
        user: String,
        pdu: v2::Pdu,
        reply: Option<Box<Reply>>,
    },
    /// Dropped and counted under `reason`; `report` is sent back when given (discovery, time).
    /// `user`: the user name the message gave ([`shown_user`]), once it could be read, so the
    /// log says which device's settings are wrong.
    Refused {
        reason: &'static str,
        report: Option<Vec<u8>>,
        user: Option<String>,
    },
}

/// The longest user name shown, in bytes: USM names are 1 to 32 octets (RFC 3414).
const SHOWN_USER_MAX: usize = 32;

/// A user name as a message gave it, fit for a log line: the sender chose it, so it is cut at
/// [`SHOWN_USER_MAX`] bytes (`…` marks a cut) and every byte that is not printable ASCII, a
/// quote or a backslash is escaped (`\n`, `\x1b`), inside double quotes.
pub fn shown_user(name: &[u8]) -> String {
    let cut = name.len() > SHOWN_USER_MAX;
    let kept = &name[..name.len().min(SHOWN_USER_MAX)];
    format!("\"{}\"{}", kept.escape_ascii(), if cut { "…" } else { "" })
}

/// What the Response to an authenticated inform needs.
#[derive(Debug)]
pub struct Reply {
    msg_id: Integer,
    user: UsmUser,
    privacy: bool,
    context_engine: OctetString,
    context_name: OctetString,
    pdu: v2::Pdu,
}

fn refused(reason: &'static str) -> Outcome {
    Outcome::Refused {
        reason,
        report: None,
        user: None,
    }
}

fn u32_of(i: &Integer) -> Option<u32> {
    u32::try_from(i).ok()
}

/// Zeroes the authentication parameters inside the raw message (as the HMAC was computed).
/// `None` when they cannot be found where the security parameters say.
fn zeroed(raw: &[u8], sec: &[u8], auth: &[u8]) -> Option<(Vec<u8>, usize)> {
    let sec_at = find(raw, sec)?;
    let mut tlv = vec![0x04, u8::try_from(auth.len()).ok()?];
    tlv.extend_from_slice(auth);
    let in_sec = rfind(sec, &tlv)?;
    let start = sec_at + in_sec + 2;
    let mut copy = raw.to_vec();
    copy[start..start + auth.len()].fill(0);
    Some((copy, start))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// `raw` with its authentication parameters replaced by the right HMAC for `user` (keys
/// localized to the engine id it names). Lets the fuzz target reach what lies behind
/// authentication; `None` when the message has no authentication parameters to replace.
pub fn resign(raw: &[u8], user: &UsmUser) -> Option<Vec<u8>> {
    let msg: v3::Message = rasn::ber::decode(raw).ok()?;
    let usm: USMSecurityParameters = rasn::ber::decode(&msg.security_parameters).ok()?;
    let given = &usm.authentication_parameters;
    if given.len() != user.auth.mac_len() {
        return None;
    }
    let (mut copy, at) = zeroed(raw, &msg.security_parameters, given)?;
    let key = user
        .auth
        .localize(&user.auth_ku, &usm.authoritative_engine_id);
    let mac = user.auth.mac(&key, &copy);
    copy[at..at + mac.len()].copy_from_slice(&mac);
    Some(copy)
}

/// Processes one v3 message (`raw` as received).
pub fn process(
    raw: &[u8],
    msg: &v3::Message,
    settings: &SnmpTrap,
    engine: &LocalEngine,
) -> Outcome {
    let flags = msg.global_data.flags.first().copied().unwrap_or(0);
    if msg.global_data.security_model != 3.into() {
        return refused("unsupported_security_model");
    }
    let Ok(usm) = rasn::ber::decode::<USMSecurityParameters>(&msg.security_parameters) else {
        return refused("malformed");
    };
    match secured(raw, msg, &usm, flags, settings, engine) {
        Outcome::Refused { reason, report, .. } => Outcome::Refused {
            reason,
            report,
            user: (!usm.user_name.is_empty()).then(|| shown_user(&usm.user_name)),
        },
        taken => taken,
    }
}

/// [`process`] once the security parameters are read: the user, its keys, the time window.
fn secured(
    raw: &[u8],
    msg: &v3::Message,
    usm: &USMSecurityParameters,
    flags: u8,
    settings: &SnmpTrap,
    engine: &LocalEngine,
) -> Outcome {
    let ours = usm.authoritative_engine_id[..] == engine.id()[..];
    if !ours && flags & FLAG_REPORTABLE != 0 {
        // Discovery (RFC 3414 §4): a confirmed request for an engine id that is not ours.
        return Outcome::Refused {
            reason: "unknown_engine_id",
            report: report_unknown_engine(msg, usm, engine),
            user: None,
        };
    }
    let Some(user) = settings.user(&usm.user_name) else {
        return refused("unknown_user");
    };
    let wants_priv = user.privacy.is_some();
    if flags & FLAG_AUTH == 0 || (flags & FLAG_PRIV != 0) != wants_priv {
        return refused("unsupported_security_level");
    }
    let auth_key = user
        .auth
        .localize(&user.auth_ku, &usm.authoritative_engine_id);
    let given = &usm.authentication_parameters;
    let verified = zeroed(raw, &msg.security_parameters, given)
        .map(|(m, _)| user.auth.verify(&auth_key, &m, given))
        .unwrap_or(Err(UsmError::BadAuth));
    if verified.is_err() {
        return refused("bad_auth");
    }
    let (Some(boots), Some(time)) = (
        u32_of(&usm.authoritative_engine_boots),
        u32_of(&usm.authoritative_engine_time),
    ) else {
        return refused("malformed");
    };
    if ours {
        let (our_boots, our_time) = engine.boots_time();
        if boots != our_boots || time.abs_diff(our_time) > TIME_WINDOW {
            return Outcome::Refused {
                reason: "not_in_time_window",
                report: report_not_in_time(msg, usm, user, engine),
                user: None,
            };
        }
    } else if !engine.remote_timely(&usm.authoritative_engine_id, boots, time) {
        return refused("not_in_time_window");
    }
    let scoped = match &msg.scoped_data {
        ScopedPduData::CleartextPdu(s) if !wants_priv => s.clone(),
        ScopedPduData::EncryptedPdu(data) if wants_priv => {
            let Some((proto, ku)) = &user.privacy else {
                return refused("undecryptable");
            };
            let key = proto.localize(user.auth, ku, &usm.authoritative_engine_id);
            let plain = proto.decrypt(&key, &usm.privacy_parameters, boots, time, data);
            match plain.ok().and_then(|p| {
                rasn::ber::decode_with_remainder::<ScopedPdu>(&p)
                    .ok()
                    .map(|x| x.0)
            }) {
                Some(s) => s,
                None => return refused("undecryptable"),
            }
        }
        _ => return refused("unsupported_security_level"),
    };
    let (pdu, inform) = match scoped.data {
        v2::Pdus::Trap(t) => (t.0, false),
        v2::Pdus::InformRequest(i) => (i.0, true),
        _ => return refused("unsupported_pdu"),
    };
    if inform && !ours {
        // An inform is sent to its receiver's engine id; this one was sent to another.
        return refused("unknown_engine_id");
    }
    let reply = inform.then(|| {
        Box::new(Reply {
            msg_id: msg.global_data.message_id.clone(),
            user: user.clone(),
            privacy: wants_priv,
            context_engine: scoped.engine_id.clone(),
            context_name: scoped.name.clone(),
            pdu: pdu.clone(),
        })
    });
    Outcome::Notification {
        user: user.name.clone(),
        pdu,
        reply,
    }
}

/// The request id of a plaintext scoped PDU (0 when it cannot be read: encrypted).
fn request_id(msg: &v3::Message) -> i32 {
    match &msg.scoped_data {
        ScopedPduData::CleartextPdu(s) => match &s.data {
            v2::Pdus::GetRequest(p) => p.0.request_id,
            v2::Pdus::GetNextRequest(p) => p.0.request_id,
            v2::Pdus::SetRequest(p) => p.0.request_id,
            v2::Pdus::InformRequest(p) => p.0.request_id,
            v2::Pdus::Trap(p) => p.0.request_id,
            v2::Pdus::Response(p) => p.0.request_id,
            v2::Pdus::Report(p) => p.0.request_id,
            v2::Pdus::GetBulkRequest(p) => p.0.request_id,
        },
        ScopedPduData::EncryptedPdu(_) => 0,
    }
}

fn counter_binding(oid: &'static [u32; 11], n: u32) -> v2::VarBind {
    v2::VarBind {
        name: ObjectIdentifier::new_unchecked(std::borrow::Cow::Borrowed(oid)),
        value: v2::VarBindValue::Value(smi2::ObjectSyntax::ApplicationWide(
            smi2::ApplicationSyntax::Counter(rasn_smi::v1::Counter(n)),
        )),
    }
}

fn report_unknown_engine(
    msg: &v3::Message,
    usm: &USMSecurityParameters,
    engine: &LocalEngine,
) -> Option<Vec<u8>> {
    let pdu = v2::Pdu {
        request_id: request_id(msg),
        error_status: 0,
        error_index: 0,
        variable_bindings: vec![counter_binding(
            &UNKNOWN_ENGINE_IDS,
            engine.count_unknown_engine(),
        )],
    };
    let out = Outgoing {
        msg_id: msg.global_data.message_id.clone(),
        user_name: usm.user_name.clone(),
        user: None,
        privacy: false,
        context_engine: OctetString::from(engine.id().to_vec()),
        context_name: OctetString::from_static(b""),
        pdu: v2::Pdus::Report(v2::Report(pdu)),
    };
    out.encode(engine)
}

fn report_not_in_time(
    msg: &v3::Message,
    usm: &USMSecurityParameters,
    user: &UsmUser,
    engine: &LocalEngine,
) -> Option<Vec<u8>> {
    let pdu = v2::Pdu {
        request_id: request_id(msg),
        error_status: 0,
        error_index: 0,
        variable_bindings: vec![counter_binding(
            &NOT_IN_TIME_WINDOWS,
            engine.count_not_in_time(),
        )],
    };
    let out = Outgoing {
        msg_id: msg.global_data.message_id.clone(),
        user_name: usm.user_name.clone(),
        // Authenticated so the sender trusts the boots and time it carries (RFC 3414 §3.2 7a).
        user: Some(user.clone()),
        privacy: false,
        context_engine: OctetString::from(engine.id().to_vec()),
        context_name: OctetString::from_static(b""),
        pdu: v2::Pdus::Report(v2::Report(pdu)),
    };
    out.encode(engine)
}

impl Reply {
    /// The Response PDU to the inform, secured as the inform was.
    pub fn encode(self, engine: &LocalEngine) -> Option<Vec<u8>> {
        let out = Outgoing {
            msg_id: self.msg_id,
            user_name: OctetString::from(self.user.name.clone().into_bytes()),
            privacy: self.privacy,
            user: Some(self.user),
            context_engine: self.context_engine,
            context_name: self.context_name,
            pdu: v2::Pdus::Response(v2::Response(v2::Pdu {
                request_id: self.pdu.request_id,
                error_status: 0,
                error_index: 0,
                variable_bindings: self.pdu.variable_bindings,
            })),
        };
        out.encode(engine)
    }
}

/// A message rulehook sends as the authoritative engine.
struct Outgoing {
    msg_id: Integer,
    user_name: OctetString,
    user: Option<UsmUser>,
    privacy: bool,
    context_engine: OctetString,
    context_name: OctetString,
    pdu: v2::Pdus,
}

impl Outgoing {
    fn encode(self, engine: &LocalEngine) -> Option<Vec<u8>> {
        let (boots, time) = engine.boots_time();
        let scoped = ScopedPdu {
            engine_id: self.context_engine,
            name: self.context_name,
            data: self.pdu,
        };
        let mut flags = 0u8;
        let mut priv_params = OctetString::from_static(b"");
        let scoped_data = match (&self.user, self.privacy) {
            (Some(u), true) => {
                let (proto, ku) = u.privacy.as_ref()?;
                let key = proto.localize(u.auth, ku, engine.id());
                let plain = rasn::ber::encode(&scoped).ok()?;
                let (cipher, salt) = proto.encrypt(&key, boots, time, &plain).ok()?;
                priv_params = OctetString::from(salt);
                flags |= FLAG_PRIV;
                ScopedPduData::EncryptedPdu(OctetString::from(cipher))
            }
            _ => ScopedPduData::CleartextPdu(scoped),
        };
        let mac_len = self.user.as_ref().map(|u| u.auth.mac_len()).unwrap_or(0);
        if self.user.is_some() {
            flags |= FLAG_AUTH;
        }
        let build = |fill: u8| -> Option<Vec<u8>> {
            let usm = USMSecurityParameters {
                authoritative_engine_id: OctetString::from(engine.id().to_vec()),
                authoritative_engine_boots: boots.into(),
                authoritative_engine_time: time.into(),
                user_name: self.user_name.clone(),
                authentication_parameters: OctetString::from(vec![fill; mac_len]),
                privacy_parameters: priv_params.clone(),
            };
            let m = v3::Message {
                version: 3.into(),
                global_data: HeaderData {
                    message_id: self.msg_id.clone(),
                    max_size: 65507.into(),
                    flags: OctetString::from(vec![flags]),
                    security_model: 3.into(),
                },
                security_parameters: OctetString::from(rasn::ber::encode(&usm).ok()?),
                scoped_data: scoped_data.clone(),
            };
            rasn::ber::encode(&m).ok()
        };
        let mut zeros = build(0)?;
        let Some(user) = &self.user else {
            return Some(zeros);
        };
        // The authentication parameters are where the two encodings differ.
        let ones = build(0xff)?;
        let at = zeros.iter().zip(&ones).position(|(a, b)| a != b)?;
        if zeros.len() != ones.len() || at + mac_len > zeros.len() {
            return None;
        }
        let key = user.auth.localize(&user.auth_ku, engine.id());
        let mac = user.auth.mac(&key, &zeros);
        zeros[at..at + mac_len].copy_from_slice(&mac);
        Some(zeros)
    }
}

/// An inform as a sender would build it, secured for `engine` (the same encoder as rulehook's
/// replies, with an InformRequest inside), from user `u`.
#[cfg(test)]
pub(super) fn test_inform(
    engine: &LocalEngine,
    u: &UsmUser,
    privacy: bool,
    msg_id: u32,
    request_id: i32,
) -> Vec<u8> {
    let sent = Outgoing {
        msg_id: msg_id.into(),
        user_name: OctetString::from(u.name.clone().into_bytes()),
        user: Some(u.clone()),
        privacy,
        context_engine: OctetString::from(engine.id().to_vec()),
        context_name: OctetString::from_static(b""),
        pdu: v2::Pdus::InformRequest(v2::InformRequest(v2::Pdu {
            request_id,
            error_status: 0,
            error_index: 0,
            variable_bindings: vec![counter_binding(&UNKNOWN_ENGINE_IDS, 1)],
        })),
    };
    sent.encode(engine).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::usm::{AuthProtocol, PrivProtocol};

    fn user(privacy: bool) -> UsmUser {
        UsmUser {
            name: "ops".into(),
            auth: AuthProtocol::Sha1,
            auth_ku: AuthProtocol::Sha1.password_key(b"authpassword"),
            privacy: privacy.then(|| {
                (
                    PrivProtocol::Aes128,
                    AuthProtocol::Sha1.password_key(b"privpassword"),
                )
            }),
        }
    }

    fn settings(u: UsmUser) -> SnmpTrap {
        SnmpTrap::for_tests(vec![u])
    }

    fn inform(engine: &LocalEngine, u: &UsmUser, privacy: bool) -> Vec<u8> {
        test_inform(engine, u, privacy, 9, 5)
    }

    fn with_reportable(mut raw: Vec<u8>) -> Vec<u8> {
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        let flags = m.global_data.flags[0];
        // msgFlags is the only 1-byte OCTET STRING with these bits in the header.
        let at = raw
            .windows(3)
            .position(|w| w == [0x04, 0x01, flags])
            .unwrap();
        raw[at + 2] |= FLAG_REPORTABLE;
        raw
    }

    #[test]
    fn authenticated_encrypted_inform_is_accepted_and_answered() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        let u = user(true);
        let raw = inform(&engine, &u, true);
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        let Outcome::Notification { user, pdu, reply } = process(&raw, &m, &settings(u), &engine)
        else {
            panic!("refused");
        };
        assert_eq!(user, "ops");
        assert_eq!(pdu.request_id, 5);
        let rsp = reply.unwrap().encode(&engine).unwrap();
        let back: v3::Message = rasn::ber::decode(&rsp).unwrap();
        assert_eq!(back.global_data.flags[0], FLAG_AUTH | FLAG_PRIV);
        assert!(matches!(back.scoped_data, ScopedPduData::EncryptedPdu(_)));
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_password_is_bad_auth() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        let u = user(false);
        let mut raw = inform(&engine, &u, false);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        assert!(matches!(
            process(&raw, &m, &settings(u.clone()), &engine),
            Outcome::Refused {
                reason: "bad_auth",
                ..
            }
        ));
        let raw = inform(&engine, &u, false);
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        let mut other = u.clone();
        other.auth_ku = AuthProtocol::Sha1.password_key(b"otherpassword");
        assert!(matches!(
            process(&raw, &m, &settings(other), &engine),
            Outcome::Refused {
                reason: "bad_auth",
                ..
            }
        ));
    }

    #[test]
    fn resign_restores_a_tampered_message() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        let u = user(false);
        let mut raw = inform(&engine, &u, false);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let fixed = resign(&raw, &u).unwrap();
        let m: v3::Message = rasn::ber::decode(&fixed).unwrap();
        assert!(matches!(
            process(&fixed, &m, &settings(u), &engine),
            Outcome::Notification { .. }
        ));
    }

    #[test]
    fn unknown_user_and_wrong_level_are_refused() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        let raw = inform(&engine, &user(false), false);
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        let mut stranger = user(false);
        stranger.name = "someone".into();
        assert!(matches!(
            process(&raw, &m, &settings(stranger), &engine),
            Outcome::Refused {
                reason: "unknown_user",
                ..
            }
        ));
        assert!(matches!(
            process(&raw, &m, &settings(user(true)), &engine),
            Outcome::Refused {
                reason: "unsupported_security_level",
                ..
            }
        ));
    }

    /// The user a refusal names: after `process` refused `raw`.
    fn refused_user(
        raw: &[u8],
        settings: &SnmpTrap,
        engine: &LocalEngine,
    ) -> (&'static str, String) {
        let m: v3::Message = rasn::ber::decode(raw).unwrap();
        match process(raw, &m, settings, engine) {
            Outcome::Refused {
                reason,
                user: Some(user),
                ..
            } => (reason, user),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_name_the_user_escaped_and_cut() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        // Wrong auth password, wrong priv password: the configured user the device named.
        let mut wrong = user(true);
        wrong.auth_ku = AuthProtocol::Sha1.password_key(b"otherpassword");
        let raw = inform(&engine, &wrong, true);
        assert_eq!(
            refused_user(&raw, &settings(user(true)), &engine),
            ("bad_auth", "\"ops\"".to_string())
        );
        let mut wrong = user(true);
        wrong.privacy = Some((
            PrivProtocol::Aes128,
            AuthProtocol::Sha1.password_key(b"otherprivacy"),
        ));
        let raw = inform(&engine, &wrong, true);
        assert_eq!(
            refused_user(&raw, &settings(user(true)), &engine),
            ("undecryptable", "\"ops\"".to_string())
        );
        // An unknown user, as the sender chose it: escaped, and cut at 32 bytes.
        let mut stranger = user(false);
        stranger.name = format!("evil\n\x1b[31m\"{}", "a".repeat(40));
        let raw = inform(&engine, &stranger, false);
        let (reason, shown) = refused_user(&raw, &settings(user(false)), &engine);
        assert_eq!(reason, "unknown_user");
        assert_eq!(
            shown,
            format!("\"evil\\n\\x1b[31m\\\"{}\"…", "a".repeat(21))
        );
        assert_eq!(shown_user(b"\xff\\"), "\"\\xff\\\\\"");
    }

    #[test]
    fn discovery_gets_a_report_with_our_engine_id() {
        let engine = LocalEngine::for_tests(b"\x80\0\0\0\x05rulehook".to_vec());
        let other = LocalEngine::for_tests(b"\x80\0\0\0\x05someone".to_vec());
        let raw = with_reportable(inform(&other, &user(false), false));
        let m: v3::Message = rasn::ber::decode(&raw).unwrap();
        let Outcome::Refused {
            reason: "unknown_engine_id",
            report: Some(rep),
            ..
        } = process(&raw, &m, &settings(user(false)), &engine)
        else {
            panic!("no report");
        };
        let back: v3::Message = rasn::ber::decode(&rep).unwrap();
        let usm: USMSecurityParameters = rasn::ber::decode(&back.security_parameters).unwrap();
        assert_eq!(&usm.authoritative_engine_id[..], engine.id());
        let ScopedPduData::CleartextPdu(s) = back.scoped_data else {
            panic!("encrypted report")
        };
        assert!(matches!(s.data, v2::Pdus::Report(_)));
    }
}

//! SNMP BER, every version: arbitrary datagrams read as v1/v2c/v3 messages, v3 ones through
//! USM. Byte 0 bit 0 asks the harness to put the right HMAC into a v3 message first (so
//! decryption, the scoped PDU and the varbinds behind authentication are reached too); bit 1
//! picks a user with privacy. Must never panic; what comes out must be JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehook::transport::snmp::engine::LocalEngine;
use rulehook::transport::snmp::message::{self, CommunityPdu, Parsed};
use rulehook::transport::snmp::{pdu, v3};
use rulehook::secrets::Secret;
use rulehook::verify::snmp_trap::{SnmpTrap, UsmUser};
use rulehook::verify::usm::{AuthProtocol, PrivProtocol};
use std::sync::OnceLock;

struct Fixture {
    engine: LocalEngine,
    plain: UsmUser,
    private: UsmUser,
    settings: SnmpTrap,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let plain = UsmUser {
            name: "ops".into(),
            auth: AuthProtocol::Sha1,
            auth_ku: AuthProtocol::Sha1.password_key(b"authpassword"),
            privacy: None,
        };
        let private = UsmUser {
            name: "sec".into(),
            auth: AuthProtocol::Md5,
            auth_ku: AuthProtocol::Md5.password_key(b"authpassword"),
            privacy: Some((PrivProtocol::Des, AuthProtocol::Md5.password_key(b"privpassword"))),
        };
        Fixture {
            engine: LocalEngine::new(b"\x80\0\0\0\x05fuzz".to_vec(), 1),
            settings: SnmpTrap::new(
                vec![Secret::new("public".into())],
                vec![plain.clone(), private.clone()],
            ),
            plain,
            private,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, raw)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let peer = "127.0.0.1".parse().unwrap();
    let user = if mode & 2 == 0 { &f.plain } else { &f.private };
    let resigned;
    let raw = if mode & 1 == 1 {
        match v3::resign(raw, user) {
            Some(r) => {
                resigned = r;
                &resigned[..]
            }
            None => raw,
        }
    } else {
        raw
    };
    match message::parse(raw) {
        Ok(Parsed::Community { version, community, pdu: p }) => {
            let _ = f.settings.community_ok(&community);
            let vbs = match p {
                CommunityPdu::V1Trap(t) => pdu::v1_translate(&t).0,
                CommunityPdu::Trap(p) => pdu::v2_varbinds(&p),
                CommunityPdu::Inform(p) => {
                    let _ = message::v2c_response(community, &p);
                    pdu::v2_varbinds(&p)
                }
                CommunityPdu::Other => Vec::new(),
            };
            let n = pdu::Notification { version, inform: false, varbinds: vbs, agent: None, user: None };
            assert!(n.into_body(peer).is_object());
        }
        Ok(Parsed::V3(m)) => match v3::process(raw, &m, &f.settings, &f.engine) {
            v3::Outcome::Notification { pdu: p, reply, .. } => {
                let n = pdu::Notification {
                    version: pdu::Version::V3,
                    inform: reply.is_some(),
                    varbinds: pdu::v2_varbinds(&p),
                    agent: None,
                    user: None,
                };
                assert!(n.into_body(peer).is_object());
                if let Some(r) = reply {
                    let _ = r.encode(&f.engine);
                }
            }
            v3::Outcome::Refused { .. } => {}
        },
        Err(_) => {}
    }
});

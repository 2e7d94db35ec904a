//! One datagram read as an SNMP message (BER, by `rasn-snmp`): v1 and v2c with their community,
//! or v3 (left to [`super::v3`]). Also the v2c Response to an inform.

use rasn::types::OctetString;
use rasn_snmp::{v1, v2, v2c, v3};

use super::pdu::Version;

/// A message whose outer layer was read.
#[derive(Debug)]
pub enum Parsed {
    Community {
        version: Version,
        community: OctetString,
        pdu: CommunityPdu,
    },
    V3(Box<v3::Message>),
}

/// The PDUs a trap receiver takes from a community message.
#[derive(Debug)]
pub enum CommunityPdu {
    V1Trap(v1::Trap),
    Trap(v2::Pdu),
    Inform(v2::Pdu),
    /// A get, set, response …: not for a trap receiver.
    Other,
}

/// The version field of `SEQUENCE { INTEGER version, … }`, read without decoding the rest.
fn peek_version(b: &[u8]) -> Option<i64> {
    let (&tag, rest) = b.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&len0, mut rest) = rest.split_first()?;
    if len0 & 0x80 != 0 {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        rest = &rest[n..];
    }
    let (&itag, rest) = rest.split_first()?;
    let (&ilen, rest) = rest.split_first()?;
    if itag != 0x02 || ilen == 0 || ilen > 4 || rest.len() < usize::from(ilen) {
        return None;
    }
    let mut v: i64 = if rest[0] & 0x80 != 0 { -1 } else { 0 };
    for &byte in &rest[..usize::from(ilen)] {
        v = (v << 8) | i64::from(byte);
    }
    Some(v)
}

/// Reads the outer layer; `Err` names the reason it is counted under.
pub fn parse(bytes: &[u8]) -> Result<Parsed, &'static str> {
    match peek_version(bytes) {
        Some(0) => {
            let m: v1::Message<v1::Pdus> = rasn::ber::decode(bytes).map_err(|_| "malformed")?;
            let pdu = match m.data {
                v1::Pdus::Trap(t) => CommunityPdu::V1Trap(t),
                _ => CommunityPdu::Other,
            };
            Ok(Parsed::Community {
                version: Version::V1,
                community: m.community,
                pdu,
            })
        }
        Some(1) => {
            let m: v2c::Message<v2::Pdus> = rasn::ber::decode(bytes).map_err(|_| "malformed")?;
            let pdu = match m.data {
                v2::Pdus::Trap(t) => CommunityPdu::Trap(t.0),
                v2::Pdus::InformRequest(i) => CommunityPdu::Inform(i.0),
                _ => CommunityPdu::Other,
            };
            Ok(Parsed::Community {
                version: Version::V2c,
                community: m.community,
                pdu,
            })
        }
        Some(3) => {
            let m: v3::Message = rasn::ber::decode(bytes).map_err(|_| "malformed")?;
            Ok(Parsed::V3(Box::new(m)))
        }
        Some(_) => Err("unsupported_version"),
        None => Err("malformed"),
    }
}

/// The Response to a v2c inform: same request id and bindings, no error.
pub fn v2c_response(community: OctetString, inform: &v2::Pdu) -> Option<Vec<u8>> {
    let m = v2c::Message {
        version: 1.into(),
        community,
        data: v2::Pdus::Response(v2::Response(v2::Pdu {
            request_id: inform.request_id,
            error_status: 0,
            error_index: 0,
            variable_bindings: inform.variable_bindings.clone(),
        })),
    };
    rasn::ber::encode(&m).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_peeked_from_the_outer_sequence() {
        assert_eq!(peek_version(&[0x30, 0x03, 0x02, 0x01, 0x01]), Some(1));
        assert_eq!(peek_version(&[0x30, 0x81, 0x03, 0x02, 0x01, 0x03]), Some(3));
        assert_eq!(peek_version(&[0x31, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(peek_version(&[0x30]), None);
        assert_eq!(peek_version(&[]), None);
        assert!(matches!(
            parse(b"\x30\x03\x02\x01\x07"),
            Err("unsupported_version")
        ));
        assert!(matches!(parse(b"\x30\x03\x02\x01\x01"), Err("malformed")));
    }

    #[test]
    fn a_v2c_inform_decodes_and_gets_its_response() {
        let pdu = v2::Pdu {
            request_id: 77,
            error_status: 0,
            error_index: 0,
            variable_bindings: vec![],
        };
        let m = v2c::Message {
            version: 1.into(),
            community: OctetString::from_static(b"public"),
            data: v2::Pdus::InformRequest(v2::InformRequest(pdu.clone())),
        };
        let bytes = rasn::ber::encode(&m).unwrap();
        let Ok(Parsed::Community {
            version,
            community,
            pdu: CommunityPdu::Inform(got),
        }) = parse(&bytes)
        else {
            panic!("not an inform");
        };
        assert_eq!(version, Version::V2c);
        assert_eq!(&community[..], b"public");
        let rsp = v2c_response(community, &got).unwrap();
        let back: v2c::Message<v2::Pdus> = rasn::ber::decode(&rsp).unwrap();
        let v2::Pdus::Response(r) = back.data else {
            panic!("not a response")
        };
        assert_eq!(r.0.request_id, 77);
    }
}

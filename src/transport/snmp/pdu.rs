//! A decoded notification as rules see it: `version`, `trap_oid` (and `trap_name` when known),
//! `varbinds` (numeric OID → value) and `varbind_names` (named OID → value, for the common
//! MIBs; an OID bound more than once holds every value, as a list), `agent`, `user` (v3),
//! `uptime`. v1 traps are translated to the v2 form as RFC 3584 §3.1 says. The community is
//! never part of it.

use std::net::{IpAddr, Ipv4Addr};

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::{v1 as smi1, v2 as smi2};
use rasn_snmp::{v1, v2};
use serde_json::{Map, Value, json};

use super::mib;

const SYS_UPTIME_0: &str = "1.3.6.1.2.1.1.3.0";
const SNMP_TRAP_OID_0: &str = "1.3.6.1.6.3.1.1.4.1.0";
const SNMP_TRAP_ENTERPRISE_0: &str = "1.3.6.1.6.3.1.1.4.3.0";
const SNMP_TRAP_ADDRESS_0: &str = "1.3.6.1.6.3.18.1.3.0";
const SNMP_TRAPS: &str = "1.3.6.1.6.3.1.1.5";

/// SNMP version, as rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
    V3,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2c => "v2c",
            Version::V3 => "v3",
        }
    }
}

/// One notification before it becomes the event body.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub version: Version,
    pub inform: bool,
    /// (numeric OID, value), in the order sent.
    pub varbinds: Vec<(String, Value)>,
    /// The v1 agent address; else `snmpTrapAddress.0` when sent.
    pub agent: Option<String>,
    pub user: Option<String>,
}

pub fn oid(o: &ObjectIdentifier) -> String {
    let arcs: &[u32] = o.as_ref();
    let mut s = String::with_capacity(arcs.len() * 3);
    for (i, a) in arcs.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(&a.to_string());
    }
    s
}

fn integer(i: &Integer) -> Value {
    match i64::try_from(i) {
        Ok(n) => json!(n),
        Err(_) => Value::String(i.to_string()),
    }
}

/// Text when it is printable UTF-8 (trailing NULs dropped: a C string's terminator, or the
/// padding of a fixed-size buffer), else lowercase hex.
pub fn octets(b: &OctetString) -> Value {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let trimmed = &b[..end];
    match std::str::from_utf8(trimmed) {
        Ok(t)
            if t.chars()
                .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t') =>
        {
            Value::String(t.to_string())
        }
        _ => Value::String(hex::encode(b)),
    }
}

fn ip(a: &smi1::IpAddress) -> Value {
    let o = &a.0;
    Value::String(Ipv4Addr::new(o[0], o[1], o[2], o[3]).to_string())
}

fn v2_value(v: &v2::VarBindValue) -> Value {
    use smi2::{ApplicationSyntax as A, ObjectSyntax as O, SimpleSyntax as S};
    match v {
        v2::VarBindValue::Value(O::Simple(S::Integer(i))) => integer(i),
        v2::VarBindValue::Value(O::Simple(S::String(s))) => octets(s),
        v2::VarBindValue::Value(O::Simple(S::ObjectId(o))) => Value::String(oid(o)),
        v2::VarBindValue::Value(O::ApplicationWide(a)) => match a {
            A::Address(a) => ip(a),
            A::Counter(c) => json!(c.0),
            A::Ticks(t) => json!(t.0),
            A::Arbitrary(o) => Value::String(hex::encode(o.as_ref())),
            A::BigCounter(c) => json!(c.0),
            A::Unsigned(g) => json!(g.0),
        },
        v2::VarBindValue::Unspecified => Value::Null,
        v2::VarBindValue::NoSuchObject => Value::String("noSuchObject".into()),
        v2::VarBindValue::NoSuchInstance => Value::String("noSuchInstance".into()),
        v2::VarBindValue::EndOfMibView => Value::String("endOfMibView".into()),
    }
}

fn v1_value(v: &smi1::ObjectSyntax) -> Value {
    use smi1::{ApplicationSyntax as A, NetworkAddress as N, ObjectSyntax as O, SimpleSyntax as S};
    match v {
        O::Simple(S::Number(i)) => integer(i),
        O::Simple(S::String(s)) => octets(s),
        O::Simple(S::Object(o)) => Value::String(oid(o)),
        O::Simple(S::Empty) => Value::Null,
        O::ApplicationWide(a) => match a {
            A::Address(N::Internet(a)) => ip(a),
            A::Counter(c) => json!(c.0),
            A::Gauge(g) => json!(g.0),
            A::Ticks(t) => json!(t.0),
            A::Arbitrary(o) => Value::String(hex::encode(o.as_ref())),
        },
    }
}

/// A v2 Trap or InformRequest PDU's variable bindings.
pub fn v2_varbinds(pdu: &v2::Pdu) -> Vec<(String, Value)> {
    pdu.variable_bindings
        .iter()
        .map(|vb| (oid(&vb.name), v2_value(&vb.value)))
        .collect()
}

/// A v1 Trap-PDU in the v2 form (RFC 3584 §3.1): `sysUpTime.0`, `snmpTrapOID.0`, the
/// bindings, then `snmpTrapAddress.0` and `snmpTrapEnterprise.0` (not `snmpTrapCommunity.0`:
/// the community is never shown).
pub fn v1_translate(trap: &v1::Trap) -> (Vec<(String, Value)>, String) {
    let enterprise = oid(&trap.enterprise);
    let generic = i64::try_from(&trap.generic_trap).unwrap_or(-1);
    let specific = i64::try_from(&trap.specific_trap).unwrap_or(0);
    let trap_oid = if (0..6).contains(&generic) {
        format!("{SNMP_TRAPS}.{}", generic + 1)
    } else {
        format!("{enterprise}.0.{specific}")
    };
    let smi1::NetworkAddress::Internet(addr) = &trap.agent_addr;
    let agent = ip(addr);
    let mut vbs = vec![
        (SYS_UPTIME_0.to_string(), json!(trap.time_stamp.0)),
        (SNMP_TRAP_OID_0.to_string(), Value::String(trap_oid)),
    ];
    vbs.extend(
        trap.variable_bindings
            .iter()
            .map(|vb| (oid(&vb.name), v1_value(&vb.value))),
    );
    if !vbs.iter().any(|(o, _)| o == SNMP_TRAP_ADDRESS_0) {
        vbs.push((SNMP_TRAP_ADDRESS_0.to_string(), agent.clone()));
    }
    if !vbs.iter().any(|(o, _)| o == SNMP_TRAP_ENTERPRISE_0) {
        vbs.push((
            SNMP_TRAP_ENTERPRISE_0.to_string(),
            Value::String(enterprise),
        ));
    }
    let agent = agent.as_str().unwrap_or_default().to_string();
    (vbs, agent)
}

/// Puts one binding's value under its key; an OID bound again (BER allows it) makes the key
/// hold every value in the order sent, as a list (a value is never a list of its own).
fn bind(map: &mut Map<String, Value>, key: String, v: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, v);
        }
        Some(Value::Array(values)) => values.push(v),
        Some(first) => {
            let first = first.take();
            map.insert(key, Value::Array(vec![first, v]));
        }
    }
}

impl Notification {
    /// The event body rules see. `peer` is where the datagram came from (the agent when the
    /// notification names none).
    pub fn into_body(self, peer: IpAddr) -> Value {
        let mut varbinds = Map::new();
        let mut names = Map::new();
        let mut trap_oid = None;
        let mut uptime = None;
        let mut agent = self.agent;
        for (o, v) in self.varbinds {
            match o.as_str() {
                SNMP_TRAP_OID_0 => trap_oid = v.as_str().map(str::to_string),
                SYS_UPTIME_0 => uptime = Some(v.clone()),
                SNMP_TRAP_ADDRESS_0 if agent.is_none() => agent = v.as_str().map(str::to_string),
                _ => {}
            }
            if let Some(n) = mib::name(&o) {
                bind(&mut names, n, v.clone());
            }
            bind(&mut varbinds, o, v);
        }
        let mut body = Map::new();
        body.insert("version".into(), json!(self.version.as_str()));
        body.insert("inform".into(), json!(self.inform));
        if let Some(t) = &trap_oid {
            body.insert("trap_oid".into(), json!(t));
            if let Some(n) = mib::name(t) {
                body.insert("trap_name".into(), json!(n));
            }
        }
        if let Some(u) = uptime {
            body.insert("uptime".into(), u);
        }
        body.insert(
            "agent".into(),
            json!(agent.unwrap_or_else(|| peer.to_string())),
        );
        if let Some(u) = self.user {
            body.insert("user".into(), json!(u));
        }
        body.insert("varbinds".into(), Value::Object(varbinds));
        body.insert("varbind_names".into(), Value::Object(names));
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rasn::types::FixedOctetString;

    fn o(arcs: &[u32]) -> ObjectIdentifier {
        ObjectIdentifier::new(arcs.to_vec()).unwrap()
    }

    fn v1_trap(generic: i64, specific: i64) -> v1::Trap {
        v1::Trap {
            enterprise: o(&[1, 3, 6, 1, 4, 1, 9]),
            agent_addr: smi1::NetworkAddress::Internet(smi1::IpAddress(FixedOctetString::from([
                10, 0, 0, 1,
            ]))),
            generic_trap: generic.into(),
            specific_trap: specific.into(),
            time_stamp: smi1::TimeTicks(4242),
            variable_bindings: vec![v1::VarBind {
                name: o(&[1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 2]),
                value: smi1::ObjectSyntax::Simple(smi1::SimpleSyntax::Number(2.into())),
            }],
        }
    }

    #[test]
    fn rfc3584_generic_traps_map_to_snmp_traps() {
        let (vbs, agent) = v1_translate(&v1_trap(2, 0));
        assert_eq!(agent, "10.0.0.1");
        assert_eq!(vbs[0], (SYS_UPTIME_0.into(), json!(4242)));
        assert_eq!(
            vbs[1],
            (SNMP_TRAP_OID_0.into(), json!("1.3.6.1.6.3.1.1.5.3"))
        );
        assert_eq!(vbs[2], ("1.3.6.1.2.1.2.2.1.1.2".into(), json!(2)));
        assert_eq!(vbs[3], (SNMP_TRAP_ADDRESS_0.into(), json!("10.0.0.1")));
        assert_eq!(
            vbs[4],
            (SNMP_TRAP_ENTERPRISE_0.into(), json!("1.3.6.1.4.1.9"))
        );
    }

    #[test]
    fn rfc3584_enterprise_specific_is_enterprise_zero_specific() {
        let (vbs, _) = v1_translate(&v1_trap(6, 17));
        assert_eq!(vbs[1].1, json!("1.3.6.1.4.1.9.0.17"));
    }

    #[test]
    fn body_has_names_and_never_a_community() {
        let (varbinds, agent) = v1_translate(&v1_trap(2, 0));
        let n = Notification {
            version: Version::V1,
            inform: false,
            varbinds,
            agent: Some(agent),
            user: None,
        };
        let body = n.into_body("127.0.0.1".parse().unwrap());
        assert_eq!(body["trap_name"], "linkDown");
        assert_eq!(body["trap_oid"], "1.3.6.1.6.3.1.1.5.3");
        assert_eq!(body["agent"], "10.0.0.1");
        assert_eq!(body["uptime"], 4242);
        assert_eq!(body["varbind_names"]["ifIndex.2"], 2);
        assert_eq!(body["varbinds"]["1.3.6.1.2.1.2.2.1.1.2"], 2);
        assert!(!body.to_string().contains("community"));
    }

    #[test]
    fn octet_strings_are_text_or_hex() {
        assert_eq!(octets(&OctetString::from_static(b"Gi0/1")), json!("Gi0/1"));
        assert_eq!(octets(&OctetString::from_static(b"eth0\0")), json!("eth0"));
        assert_eq!(
            octets(&OctetString::from_static(b"eth0\0\0\0")),
            json!("eth0")
        );
        assert_eq!(octets(&OctetString::from_static(b"\0\0")), json!(""));
        assert_eq!(
            octets(&OctetString::from_static(&[0x00, 0x1b, 0xff])),
            json!("001bff")
        );
    }
}

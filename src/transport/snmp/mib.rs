//! Names for the objects of the common MIBs (SNMPv2-MIB, IF-MIB, SNMP-COMMUNITY-MIB), so rules
//! can say `trap_name == "linkDown"` instead of `1.3.6.1.6.3.1.1.5.3`. A table, not a MIB
//! compiler: anything not here keeps only its number.

/// (OID prefix, name), checked longest first.
const NAMES: &[(&str, &str)] = &[
    ("1.3.6.1.2.1.1.1", "sysDescr"),
    ("1.3.6.1.2.1.1.2", "sysObjectID"),
    ("1.3.6.1.2.1.1.3", "sysUpTime"),
    ("1.3.6.1.2.1.1.4", "sysContact"),
    ("1.3.6.1.2.1.1.5", "sysName"),
    ("1.3.6.1.2.1.1.6", "sysLocation"),
    ("1.3.6.1.2.1.2.2.1.1", "ifIndex"),
    ("1.3.6.1.2.1.2.2.1.2", "ifDescr"),
    ("1.3.6.1.2.1.2.2.1.3", "ifType"),
    ("1.3.6.1.2.1.2.2.1.4", "ifMtu"),
    ("1.3.6.1.2.1.2.2.1.5", "ifSpeed"),
    ("1.3.6.1.2.1.2.2.1.6", "ifPhysAddress"),
    ("1.3.6.1.2.1.2.2.1.7", "ifAdminStatus"),
    ("1.3.6.1.2.1.2.2.1.8", "ifOperStatus"),
    ("1.3.6.1.2.1.2.2.1.9", "ifLastChange"),
    ("1.3.6.1.2.1.31.1.1.1.1", "ifName"),
    ("1.3.6.1.2.1.31.1.1.1.15", "ifHighSpeed"),
    ("1.3.6.1.2.1.31.1.1.1.18", "ifAlias"),
    ("1.3.6.1.6.3.1.1.4.1", "snmpTrapOID"),
    ("1.3.6.1.6.3.1.1.4.3", "snmpTrapEnterprise"),
    ("1.3.6.1.6.3.1.1.5.1", "coldStart"),
    ("1.3.6.1.6.3.1.1.5.2", "warmStart"),
    ("1.3.6.1.6.3.1.1.5.3", "linkDown"),
    ("1.3.6.1.6.3.1.1.5.4", "linkUp"),
    ("1.3.6.1.6.3.1.1.5.5", "authenticationFailure"),
    ("1.3.6.1.6.3.1.1.5.6", "egpNeighborLoss"),
    ("1.3.6.1.6.3.18.1.3", "snmpTrapAddress"),
];

/// `name.suffix` for an OID under a known object (`ifIndex.2`), the bare name for a known
/// notification (`linkDown`), else `None`.
pub fn name(oid: &str) -> Option<String> {
    NAMES
        .iter()
        .filter_map(|(prefix, name)| {
            let rest = oid.strip_prefix(prefix)?;
            match rest {
                "" => Some(name.to_string()),
                r if r.starts_with('.') => Some(format!("{name}{r}")),
                _ => None,
            }
        })
        .max_by_key(String::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_objects_get_names_with_their_index() {
        assert_eq!(name("1.3.6.1.6.3.1.1.5.3").as_deref(), Some("linkDown"));
        assert_eq!(name("1.3.6.1.2.1.2.2.1.1.7").as_deref(), Some("ifIndex.7"));
        assert_eq!(name("1.3.6.1.2.1.1.3.0").as_deref(), Some("sysUpTime.0"));
        assert_eq!(
            name("1.3.6.1.2.1.31.1.1.1.18.3").as_deref(),
            Some("ifAlias.3")
        );
        // A prefix match must end at an arc boundary.
        assert_eq!(name("1.3.6.1.2.1.2.2.1.10.1"), None);
        assert_eq!(name("1.3.6.1.4.1.9.9.41"), None);
    }
}

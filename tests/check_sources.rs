//! `rulehook check` on listening sources (syslog, snmp_trap, mqtt): a setting that would be
//! ignored, an empty `listen:`, two sources on one address, a template reading an envelope
//! field its sources do not set, each error at its own line and all of a source's errors at
//! once.

mod common;

use common::Env;

/// `check`'s exit status and everything it printed.
fn check(env: &Env) -> (bool, String) {
    let out = env.cmd(&["check"]).output().expect("rulehook check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn an_empty_listen_list_is_an_error_not_a_source_that_vanishes_with_its_rules() {
    let env = Env::new();
    env.rulebook(
        "i01.yml",
        r#"sources:
  - {name: rtr, kind: syslog, listen: []}
  - {name: web, kind: none}
  - {name: traps, kind: snmp_trap, listen: [], communities: [public]}
rules:
  - name: r
    sources: [rtr]
    actions:
      - log: { message: x }
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "i01.yml:2:39: source `rtr` of kind `syslog` needs at least one `listen:` address"
        ),
        "{text}"
    );
    assert!(
        text.contains("source `traps` of kind `snmp_trap` needs at least one `listen:` address"),
        "{text}"
    );

    // A file that declares nothing is not "no rulebook".
    env.rulebook("i01.yml", "sources: []\nrules: []\n");
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
    assert!(!text.contains("holds no rulebook"), "{text}");
    assert!(text.contains("declare no source and no rule"), "{text}");
}

#[test]
fn settings_a_listening_kind_would_ignore_are_refused_at_their_line() {
    let env = Env::new();
    env.rulebook(
        "s.yml",
        r#"sources:
  - name: lab
    kind: syslog
    listen: udp://127.0.0.1:25515
    rate_limit: {per_second: 5}
    dedup_window: 10s
  - name: tele
    kind: mqtt
    url: mqtt://127.0.0.1:1883
    topics: [netops/#]
    allow_from: [127.0.0.1]
  - name: gh
    kind: github
    secret: s
    keep: all
rules:
  - name: by-topic
    condition: 'meta("topic") == "netops/x"'
    actions:
      - log: { message: "{{ meta.topic }}" }
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    // `tele` (which would offer the topic) has errors of its own: not repeated as "no source".
    assert!(!text.contains("no declared source"), "{text}");
    for want in [
        "s.yml:5:17: source `lab` of kind `syslog` does not take `rate_limit`",
        "s.yml:6:19: source `lab` of kind `syslog` does not take `dedup_window`",
        "s.yml:11:18: source `tele` of kind `mqtt` does not take `allow_from`",
        "s.yml:15:11: source `gh` of kind `github` does not take `keep`",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

#[test]
fn two_sources_on_one_address_are_refused_naming_both_places() {
    let env = Env::new();
    env.rulebook(
        "a.yml",
        "sources:\n  - {name: one, kind: syslog, listen: [tcp://127.0.0.1:25643]}\nrules: []\n",
    );
    env.rulebook(
        "b.yml",
        "sources:\n  - name: two\n    kind: syslog\n    listen: [udp://127.0.0.1:25643, \"relp://0.0.0.0:25643\"]\nrules: []\n",
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(
        text.contains("b.yml:4:13: source `two`: listen: `relp://0.0.0.0:25643` is taken by source `one`, which listens on `tcp://127.0.0.1:25643` (")
            && text.contains("a.yml:2:39)"),
        "{text}"
    );
    // UDP and TCP on one port do not clash, nor do two sources on port 0.
    env.rulebook(
        "b.yml",
        "sources:\n  - {name: two, kind: syslog, listen: [udp://127.0.0.1:25643, tcp://127.0.0.1:0]}\n  - {name: three, kind: syslog, listen: [tcp://127.0.0.1:0]}\nrules: []\n",
    );
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
}

#[test]
fn templates_reading_envelope_fields_their_sources_lack_fail_check() {
    let env = Env::new();
    env.rulebook(
        "m.yml",
        r#"sources:
  - {name: rtr, kind: syslog, listen: udp://127.0.0.1:0}
  - {name: telemetry, kind: mqtt, url: mqtt://127.0.0.1, topics: [a/#]}
rules:
  - name: syslog-only
    sources: [rtr]
    actions:
      - log: { message: "{{ meta.peer }} {{ meta.topic }} {{ meta.subjct }}" }
  - name: every-source
    condition: 'meta("topic") == "a/b"'
    actions:
      - log: { message: "{{ meta.topic }} {{ meta.id }}" }
  - name: mqtt-only
    sources: [telemetry]
    actions:
      - log: { message: "{{ meta.topc }}" }
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "m.yml:16:29: message: `meta.topc` is not defined; did you mean `meta.topic`?"
        ),
        "{text}"
    );
    assert!(
        text.contains("m.yml:8:45: message: `meta.topic`: the rule's source `rtr` (syslog, which offers peer) does not set it"),
        "{text}"
    );
    // Not "did you mean `meta.subject`": a syslog event has none, so that would be the next
    // error; what the rule's events do have is listed instead.
    assert!(
        text.contains(
            "m.yml:8:62: message: `meta.subjct` is not defined; meta has id, source, kind, received_at, rulebook, rule, headers, peer\n"
        ),
        "{text}"
    );
    assert!(!text.contains("meta.peer"), "{text}");
    // A rule with no `sources:` sees syslog events too: warned, in its condition and template
    // (warnings are printed once the rulebooks load).
    let text = std::fs::read_to_string(env.path("rulebooks/m.yml")).unwrap();
    env.rulebook(
        "m.yml",
        &text
            .replace(" {{ meta.topic }} {{ meta.subjct }}\" }", "\" }")
            .replace("meta.topc", "meta.topic"),
    );
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
    assert!(
        text.contains("m.yml:10: meta(\"topic\") is absent on events of `rtr` (syslog)"),
        "{text}"
    );
    assert!(
        text.contains("m.yml:12: message: `meta.topic` is undefined on events of `rtr` (syslog"),
        "{text}"
    );
}

#[test]
fn every_value_error_of_a_trap_source_is_reported_at_once() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"sources:
  - name: traps
    kind: snmp_trap
    listen: tcp://127.0.0.1:1162
    users:
      - {name: a, auth: sha1, auth_password: "short", priv: aes128, priv_password: "x"}
      - {name: b, auth: bogus, auth_password: "long-enough", priv: rot13, priv_password: "long-enough"}
rules: []
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    for want in [
        "t.yml:4:13: listen: `tcp://127.0.0.1:1162`: scheme `tcp` is not one of: udp",
        "t.yml:6:46: auth_password: at least 8 characters",
        "t.yml:6:84: priv_password: at least 8 characters",
        "t.yml:7:25: auth `bogus`: expected one of",
        "t.yml:7:68: priv `rot13`: expected one of",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    // sha1 and aes128 are names of sha and aes.
    assert!(
        !text.contains("auth `sha1`") && !text.contains("priv `aes128`"),
        "{text}"
    );
}

#[test]
fn a_tls_error_points_at_its_own_key() {
    let env = Env::new();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.display(), key.display());
    env.rulebook(
        "t.yml",
        &format!(
            "sources:\n  - name: lab\n    kind: syslog\n    listen: tls://127.0.0.1:0\n    tls:\n      cert: {cert}\n      key: {key}\n      ca: {cert}\nrules: []\n"
        ),
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(
        text.contains("t.yml:8:11: tls: `ca` is for mqtts://"),
        "{text}"
    );
    // A client_ca that holds a key, not a certificate.
    env.rulebook(
        "t.yml",
        &format!(
            "sources:\n  - name: lab\n    kind: syslog\n    listen: tls://127.0.0.1:0\n    tls:\n      cert: {cert}\n      key: {key}\n      client_ca: {key}\nrules: []\n"
        ),
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(text.contains("t.yml:8:18: tls: "), "{text}");
    assert!(text.contains("no PEM certificate"), "{text}");
}

#[test]
fn every_value_error_of_a_broker_source_is_reported_at_once() {
    let env = Env::new();
    env.rulebook(
        "b.yml",
        r#"sources:
  - {name: tele, kind: mqtt, url: "http://broker", topics: [], share_group: "a/b", keep: some}
  - {name: bus, kind: nats, url: "broker:4222", subjects: ["x.>"], stream: S, format: yaml}
rules: []
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    for want in [
        "url: `http://broker`: expected mqtt://HOST[:PORT]",
        "source `tele` of kind `mqtt` needs `topics:`",
        "share_group `a/b`: a name without `/`",
        "keep `some`: expected `matched` or `all`",
        "url: `broker:4222`: expected nats://HOST:PORT",
        "source `bus`: `stream` and `durable` go together",
        "format `yaml`: expected one of",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

#[test]
fn check_with_the_http_address_refuses_a_source_listening_there() {
    let env = Env::new();
    env.rulebook(
        "s.yml",
        "sources:\n  - {name: lab, kind: syslog, listen: [udp://127.0.0.1:18080, tcp://0.0.0.0:18080]}\nrules: []\n",
    );
    let (ok, text) = check(&env);
    assert!(ok, "without --listen it is not known: {text}");
    let out = env
        .cmd(&["check", "--listen", "127.0.0.1:18080"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("s: source `lab` listens on tcp://0.0.0.0:18080, where serve's HTTP listener will be (--listen 127.0.0.1:18080)"),
        "{text}"
    );
    assert!(
        !text.contains("udp://"),
        "UDP does not clash with HTTP: {text}"
    );
}

/// A misspelt `approval.` field in a `notify` action fails `check`, naming the fields there are
/// (as a misspelt `meta.` field does); it passed, and each notify then failed when approval was
/// asked, with nobody told where to decide. Fields the request has pass.
#[test]
fn a_misspelt_approval_field_in_notify_fails_check() {
    let env = Env::new();
    let book = |field: &str| {
        format!(
            r#"sources:
  - {{name: nms, kind: bearer, secret: abcdef}}
rules:
  - name: shut-port
    approval:
      timeout: 30m
      notify:
        - log: {{ message: "decide at {{{{ approval.{field} }}}} by {{{{ approval.deadline }}}}" }}
    actions:
      - log: {{ message: hi }}
"#
        )
    };
    env.rulebook("a.yml", &book("urll"));
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    assert!(
        text.contains("a.yml:8:41: message: `approval.urll` is not a field of the approval request; did you mean `approval.url`? (its fields: url, job, rule, "),
        "{text}"
    );
    env.rulebook("a.yml", &book("url"));
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
}

#[test]
fn a_connection_cap_or_share_out_of_range_is_refused_at_its_place() {
    let env = Env::new();
    env.rulebook(
        "p.yml",
        r#"sources:
  - name: rtr
    kind: syslog
    listen: tcp://127.0.0.1:0
    max_connections: 4
    max_connections_per_client: 5
  - name: sw
    kind: syslog
    listen: tcp://127.0.0.1:0
    max_connections_per_client: 0
  - name: traps
    kind: snmp_trap
    listen: udp://127.0.0.1:0
    communities: [public]
    max_connections_per_client: 2
  - name: none
    kind: syslog
    listen: tcp://127.0.0.1:0
    max_connections: 0
rules: []
"#,
    );
    let (ok, text) = check(&env);
    assert!(!ok, "{text}");
    for line in [
        "p.yml:6:33: max_connections_per_client: between 1 and the source's max_connections (4); 5 is not",
        "p.yml:10:33: max_connections_per_client: between 1 and the source's max_connections (1024); 0 is not",
        "p.yml:15:33: source `traps` of kind `snmp_trap` does not take `max_connections_per_client`",
        // 0 was raised to 1 without a word.
        "p.yml:19:22: max_connections: at least 1 (connections open at once per listener); 0 would take none",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    env.rulebook(
        "p.yml",
        "sources:\n  - {name: rtr, kind: syslog, listen: tcp://127.0.0.1:0, max_connections: 4, max_connections_per_client: 4}\nrules: []\n",
    );
    let (ok, text) = check(&env);
    assert!(ok, "{text}");
}

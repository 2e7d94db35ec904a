//! Ingest end to end: the real server, real signed requests, every verification kind.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Env, Server, client, post, post_signed};
use rulehook::verify::{Algorithm, mac};

const WHSEC_KEY: &[u8] = b"standard-webhooks-key-32-bytes!!";

fn setup() -> (Env, Server) {
    let env = Env::new();
    let whsec = format!("whsec_{}", B64.encode(WHSEC_KEY));
    env.rulebook(
        "sources.yml",
        &format!(
            r#"
sources:
  - {{ name: ipf, kind: ipfabric, secrets: ["ipf-old", "ipf-new"] }}
  - {{ name: nb, kind: netbox, secret: nb-secret }}
  - {{ name: sw, kind: standard-webhooks, secret: "{whsec}" }}
  - {{ name: ih, kind: infrahub, secret: ih-secret }}
  - {{ name: gh, kind: github, secret: gh-secret }}
  - {{ name: gl, kind: gitlab, secret: gl-secret }}
  - {{ name: dnac, kind: basic, username: admin, password: dnac-pass }}
  - {{ name: eem, kind: bearer, secret: eem-token }}
  - name: generic
    kind: hmac
    header: X-Signature
    algorithm: sha1
    encoding: base64
    prefix: "sha1="
    id_header: X-Request-Id
    secret: gen-secret
  - {{ name: open, kind: none }}
  - {{ name: fenced, kind: none, allow_from: ["10.0.0.0/8"] }}
  - {{ name: tiny, kind: none, max_body: 64 }}
"#
        ),
    );
    env.rulebook(
        "record.yml",
        r#"
rules:
  - name: record
    actions:
      - run_script: { script: record.sh }
"#,
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$RULEHOOK_SOURCE $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = Server::start(&env, &[], &[]);
    (env, server)
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[tokio::test]
async fn every_kind_accepts_the_right_signature_and_refuses_a_wrong_one() {
    let (env, server) = setup();
    let c = client();
    let body = br#"{"type":"snapshot","status":"completed"}"#;
    let cases: &[(&str, &str, &str, &str)] = &[
        ("/hooks/ipf", "ipfabric", "ipf-new", "ipf-wrong"),
        ("/hooks/nb", "netbox", "nb-secret", "nb-wrong"),
        ("/hooks/gh", "github", "gh-secret", "gh-wrong"),
        ("/hooks/gl", "gitlab", "gl-secret", "gl-wrong"),
        ("/hooks/dnac", "basic", "admin:dnac-pass", "admin:wrong"),
        ("/hooks/eem", "bearer", "eem-token", "eem-wrong"),
        ("/hooks/ih", "infrahub", "ih-secret", "ih-wrong"),
    ];
    let mut accepted = 0;
    for (i, (path, kind, good, bad)) in cases.iter().enumerate() {
        let unique = format!(r#"{{"n":{i},"kind":"{kind}"}}"#);
        let (st, resp) = post_signed(&c, &server.url(path), kind, good, unique.as_bytes()).await;
        assert_eq!(st, 202, "{kind}: {resp}");
        assert_eq!(resp["duplicate"], false);
        accepted += 1;
        let (st, resp) = post_signed(&c, &server.url(path), kind, bad, body).await;
        assert_eq!(st, 401, "{kind} wrong secret: {resp}");
        assert_eq!(resp["error"], "invalid_signature");
        let text = resp.to_string();
        assert!(
            !text.contains(good) && !text.contains(bad),
            "{kind}: secret echoed: {text}"
        );
        // No credentials at all.
        let (st, resp) = post(&c, &server.url(path), &[], body).await;
        assert_eq!(st, 401, "{kind} missing header: {resp}");
    }
    // The old secret of a rotation still works.
    let (st, _) = post_signed(
        &c,
        &server.url("/hooks/ipf"),
        "ipfabric",
        "ipf-old",
        br#"{"rotated":true}"#,
    )
    .await;
    assert_eq!(st, 202);
    accepted += 1;

    // Standard Webhooks with a whsec_ key.
    let whsec = format!("whsec_{}", B64.encode(WHSEC_KEY));
    let (st, resp) = post_signed(
        &c,
        &server.url("/hooks/sw"),
        "standard-webhooks",
        &whsec,
        br#"{"sw":1}"#,
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    accepted += 1;
    // ... and refused when signed with another key.
    let wrong = format!("whsec_{}", B64.encode(b"another key of 24 bytes!"));
    let (st, resp) = post_signed(
        &c,
        &server.url("/hooks/sw"),
        "standard-webhooks",
        &wrong,
        br#"{"sw":2}"#,
    )
    .await;
    assert_eq!(st, 401, "standard-webhooks wrong key: {resp}");
    assert_eq!(resp["error"], "invalid_signature");

    // Generic hmac: sha1, base64, prefix, id header.
    let gbody = br#"{"generic":true}"#;
    let sig = B64.encode(mac::sign(Algorithm::Sha1, b"gen-secret", &[gbody]));
    let h = vec![
        ("x-signature".to_string(), format!("sha1={sig}")),
        ("x-request-id".to_string(), "req-1".to_string()),
    ];
    let (st, resp) = post(&c, &server.url("/hooks/generic"), &h, gbody).await;
    assert_eq!(st, 202, "{resp}");
    accepted += 1;
    let bad = vec![
        (
            "x-signature".to_string(),
            format!("sha1={}", B64.encode([0u8; 20])),
        ),
        h[1].clone(),
    ];
    assert_eq!(
        post(&c, &server.url("/hooks/generic"), &bad, gbody).await.0,
        401
    );

    // kind none
    assert_eq!(
        post(&c, &server.url("/hooks/open"), &[], br#"{"open":1}"#)
            .await
            .0,
        202
    );
    accepted += 1;

    let runs = env.wait_lines("runs.txt", accepted, Duration::from_secs(15));
    assert_eq!(runs.len(), accepted, "{runs:?}");
    // Credentials never reach the log.
    let log = server.log_text();
    for secret in [
        "ipf-new",
        "nb-secret",
        "gh-secret",
        "gl-secret",
        "dnac-pass",
        "eem-token",
        "ih-secret",
        "gen-secret",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn tampered_stale_oversize_malformed_unknown_and_wrong_method() {
    let (_env, server) = setup();
    let c = client();

    // Tampered body: signed one body, sent another.
    let headers = rulehook::verify::sign_like("ipfabric", "ipf-new", br#"{"a":1}"#, now()).unwrap();
    assert_eq!(
        post(&c, &server.url("/hooks/ipf"), &headers, br#"{"a":2}"#)
            .await
            .0,
        401
    );

    // Stale Standard Webhooks timestamp.
    let whsec = format!("whsec_{}", B64.encode(WHSEC_KEY));
    let old = now() - Duration::from_secs(3600);
    let headers =
        rulehook::verify::sign_like("standard-webhooks", &whsec, br#"{"a":1}"#, old).unwrap();
    let (st, resp) = post(&c, &server.url("/hooks/sw"), &headers, br#"{"a":1}"#).await;
    assert_eq!((st, resp["error"].as_str()), (401, Some("stale_timestamp")));

    // Too large, declared and streamed.
    let big = vec![b' '; 100];
    let (st, resp) = post(&c, &server.url("/hooks/tiny"), &[], &big).await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Streamed: chunked, no Content-Length to refuse it by (the case above is declared only).
    let answer = tokio::task::spawn_blocking({
        let addr = server.base.trim_start_matches("http://").to_string();
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let chunk = " ".repeat(100);
            write!(
                s,
                "POST /hooks/tiny HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
                chunk.len()
            )
            .unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        }
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
        "{answer}"
    );

    // Malformed JSON, correctly signed.
    let (st, resp) = post_signed(
        &c,
        &server.url("/hooks/nb"),
        "netbox",
        "nb-secret",
        b"{not json",
    )
    .await;
    assert_eq!((st, resp["error"].as_str()), (400, Some("invalid_json")));

    // Unknown path, GET.
    let (st, resp) = post(&c, &server.url("/hooks/nope"), &[], b"{}").await;
    assert_eq!((st, resp["error"].as_str()), (404, Some("not_found")));
    let resp = c.get(server.url("/hooks/ipf")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Outside allow_from (we come from 127.0.0.1).
    let (st, resp) = post(&c, &server.url("/hooks/fenced"), &[], b"{}").await;
    assert_eq!((st, resp["error"].as_str()), (403, Some("forbidden")));
}

#[tokio::test]
async fn infrahub_compact_reencoding_verifies() {
    let (env, server) = setup();
    let c = client();
    // Sent spaced and with raw UTF-8; Infrahub signed the compact, ASCII-escaped form.
    let sent = "{ \"event\": \"infrahub.node.updated\", \"name\": \"Zürich\" }";
    let signed = r#"{"event":"infrahub.node.updated","name":"Z\u00fcrich"}"#;
    let id = "msg_1";
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = B64.encode(mac::sign(
        Algorithm::Sha256,
        b"ih-secret",
        &[format!("{id}.{ts}.").as_bytes(), signed.as_bytes()],
    ));
    let h = vec![
        ("webhook-id".to_string(), id.to_string()),
        ("webhook-timestamp".to_string(), ts),
        ("webhook-signature".to_string(), format!("v1,{sig}")),
    ];
    let (st, resp) = post(&c, &server.url("/hooks/ih"), &h, sent.as_bytes()).await;
    assert_eq!(st, 202, "{resp}");
    // Same webhook-id again: a duplicate.
    let (st, resp) = post(&c, &server.url("/hooks/ih"), &h, sent.as_bytes()).await;
    assert_eq!((st, &resp["duplicate"]), (202, &serde_json::json!(true)));
    assert_eq!(
        env.wait_lines("runs.txt", 1, Duration::from_secs(10)).len(),
        1
    );
}

#[tokio::test]
async fn a_redelivered_event_runs_its_script_once() {
    let (env, server) = setup();
    let c = client();
    let body =
        br#"{"type":"snapshot","action":"discover","status":"completed","snapshot":{"id":"s1"}}"#;
    let (st, first) = post_signed(&c, &server.url("/hooks/ipf"), "ipfabric", "ipf-new", body).await;
    assert_eq!((st, &first["duplicate"]), (202, &serde_json::json!(false)));
    for _ in 0..3 {
        let (st, again) =
            post_signed(&c, &server.url("/hooks/ipf"), "ipfabric", "ipf-new", body).await;
        assert_eq!(st, 202);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], first["id"]);
    }
    // GitHub: same delivery id, any body.
    let mut h = rulehook::verify::sign_like("github", "gh-secret", b"{}", now()).unwrap();
    for (k, v) in h.iter_mut() {
        if k == "x-github-delivery" {
            *v = "fixed-delivery".into();
        }
    }
    assert_eq!(
        post(&c, &server.url("/hooks/gh"), &h, b"{}").await.1["duplicate"],
        false
    );
    assert_eq!(
        post(&c, &server.url("/hooks/gh"), &h, b"{}").await.1["duplicate"],
        true
    );

    // Long enough for a second run to show if the duplicate had made one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = env.lines("runs.txt");
    assert_eq!(
        runs.iter().filter(|l| l.starts_with("ipf ")).count(),
        1,
        "{runs:?}"
    );
    assert_eq!(
        runs.iter().filter(|l| l.starts_with("gh ")).count(),
        1,
        "{runs:?}"
    );

    // The history shows the event, its job and the script's attempt.
    let id = first["id"].as_str().unwrap();
    let detail: serde_json::Value = c
        .get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["duplicates"], 3);
    let job = &detail["matches"][0];
    assert_eq!(job["status"], "done");
    assert_eq!(job["attempts"][0]["run_id"], format!("{id}:record:0"));
    assert_eq!(job["attempts"][0]["status"], "ok");
}

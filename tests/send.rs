//! `rulehook send` behaves like the sender it imitates; `test --event -` reads standard input.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{Env, Server, repo_path};

type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A receiver that records every request's headers and body and answers 202.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |h: axum::http::HeaderMap, body: String| {
        let keep = keep.clone();
        async move {
            keep.lock().unwrap().push((h, body));
            (axum::http::StatusCode::ACCEPTED, "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn send(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .arg("send")
        .args(args)
        .env_remove("RULEHOOK_SEND_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_overrides_what_signing_adds_for_every_kind() {
    let (url, seen) = receiver().await;
    let out = tokio::task::spawn_blocking(move || {
        send(
            &[
                &url,
                "--kind",
                "github",
                "--secret",
                "s3cret",
                "--header",
                "X-GitHub-Event: push",
                "--header",
                "X-Extra: 1",
                "-",
            ],
            b"{\"ref\":\"refs/heads/main\"}",
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (h, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(h["x-github-event"], "push");
    assert_eq!(h.get_all("x-github-event").iter().count(), 1);
    assert_eq!(h["x-extra"], "1");
    assert_eq!(h["content-type"], "application/json");
    assert!(
        h["x-hub-signature-256"]
            .to_str()
            .unwrap()
            .starts_with("sha256=")
    );
    assert_eq!(body, "{\"ref\":\"refs/heads/main\"}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_bodies_go_with_their_content_type() {
    let (url, seen) = receiver().await;
    let out = tokio::task::spawn_blocking(move || {
        send(
            &[
                &url,
                "--kind",
                "bearer",
                "--secret",
                "tok",
                "--content-type",
                "text/plain",
            ],
            b"Interface Gi0/1 is up",
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (h, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["authorization"], "Bearer tok");
    assert_eq!(body, "Interface Gi0/1 is up");
}

#[test]
fn a_missing_secret_or_a_bad_key_is_an_error() {
    let out = send(&["http://127.0.0.1:9/x", "--kind", "github"], b"{}");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret is required for kind `github`"),
        "{err}"
    );

    let out = send(
        &[
            "http://127.0.0.1:9/x",
            "--kind",
            "standard-webhooks",
            "--secret",
            "whsec_not*base64",
        ],
        b"{}",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a valid `standard-webhooks` key: expected `whsec_` followed by base64"),
        "{err}"
    );

    let out = send(
        &[
            "http://127.0.0.1:9/x",
            "--kind",
            "github-app",
            "--secret",
            "x",
        ],
        b"{}",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown kind `github-app` (expected one of: ipfabric"),
        "{err}"
    );
    // A typo of a kind is named, as rulebooks name a misspelt `kind:`.
    let out = send(
        &[
            "http://127.0.0.1:9/x",
            "--kind",
            "ipfabrik",
            "--secret",
            "x",
        ],
        b"{}",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown kind `ipfabrik`; did you mean `ipfabric`? (expected one of: ipfabric"
        ),
        "{err}"
    );
}

/// `--kind basic` takes `user:password`: a secret without the colon is refused before anything
/// is sent (it went out as a user with no password and came back 401, unexplained).
#[test]
fn a_basic_secret_without_a_password_is_an_error() {
    let out = send(
        &[
            "http://127.0.0.1:9/x",
            "--kind",
            "basic",
            "--secret",
            "change-me-catalyst",
        ],
        b"{}",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("for kind `basic`, --secret is `user:password`"),
        "{err}"
    );
    assert!(!err.contains("cannot POST"), "nothing was sent: {err}");
}

/// A URL without its scheme (`127.0.0.1:8080/hooks/x`, as `curl` takes it) is refused with the
/// form to use, not "builder error: relative URL without a base".
#[test]
fn a_url_without_its_scheme_is_an_error() {
    for url in [
        "127.0.0.1:9/hooks/x",
        "localhost/hooks/x",
        "ftp://127.0.0.1/x",
    ] {
        let out = send(&[url, "--kind", "none"], b"{}");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("`{url}` is not an http:// or https:// URL")),
            "{err}"
        );
        assert!(!err.contains("builder error"), "{err}");
    }
}

#[test]
fn a_self_signed_receiver_suggests_insecure() {
    let env = Env::new();
    env.rulebook(
        "s.yml",
        "sources:\n  - { name: b, kind: bearer, secret: tok }\n",
    );
    let server = Server::start(&env, &["--tls-self-signed"], &[]);
    let url = server.url("/hooks/b");
    let out = send(&[&url, "--kind", "bearer", "--secret", "tok"], b"{}");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --insecure"), "{err}");
    let out = send(
        &[&url, "--kind", "bearer", "--secret", "tok", "--insecure"],
        b"{}",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("202"));
}

#[test]
fn test_reads_the_event_from_standard_input() {
    let body = std::fs::read(repo_path(
        "rulebooks/events/ipfabric-discover-completed.json",
    ))
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args([
            "test",
            "--event",
            "-",
            "--source",
            "ipfabric",
            "--rulebooks",
        ])
        .arg(repo_path("rulebooks"))
        .arg("--scripts")
        .arg(repo_path("scripts"))
        .arg("--templates")
        .arg(repo_path("templates"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("MATCH    ipfabric/remediate-after-discovery"),
        "{text}"
    );
}

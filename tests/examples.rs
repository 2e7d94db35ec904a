//! The shipped rulebooks, scripts and sample events, served for real: each example does what
//! its rulebook says.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{client, post_signed, repo_path};

/// `rulehook serve` on the shipped rulebooks, data in `tmp`, log in `tmp/serve.log`.
fn serve_shipped(tmp: &std::path::Path, vars: &[(&str, String)]) -> (std::process::Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rulehook"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.join("data"))
        .current_dir(repo_path(""))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.join("serve.log")).unwrap());
    // Only what the test gives: tokens from the developer's shell would change what runs.
    cmd.env_remove("GITHUB_TOKEN")
        .env_remove("GITLAB_TRIGGER_TOKEN");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (child, base)
}

/// A stand-in for api.github.com and gitlab.com: records what it receives.
async fn fake_api() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::http::Uri;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, body: String| {
        let keep = keep.clone();
        async move {
            keep.lock().unwrap().push((uri.path().to_string(), body));
            let status = if uri.path().ends_with("/issues") || uri.path().ends_with("/pipeline") { 201 } else { 204 };
            let reply = r#"{"number": 12, "html_url": "https://github.example/acme/netops/issues/12", "id": 5}"#;
            (axum::http::StatusCode::from_u16(status).unwrap(), reply)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_examples_work_end_to_end() {
    let (api, seen) = fake_api().await;
    let tmp = tempfile::tempdir().unwrap();
    let logs = |n: &str| tmp.path().join(n).display().to_string();
    let (mut child, base) = serve_shipped(
        tmp.path(),
        &[
            ("REMEDIATION_LOG", logs("remediation.log")),
            ("ONBOARD_LOG", logs("onboard.log")),
            ("CATALYST_LOG", logs("catalyst.log")),
            ("GITHUB_API_URL", api.clone()),
            ("GITLAB_API_URL", api.clone()),
            ("GITHUB_TOKEN", "test-github-token".to_string()),
            ("GITLAB_TRIGGER_TOKEN", "test-gitlab-token".to_string()),
        ],
    );
    let c = client();
    let ev = |n: &str| std::fs::read(repo_path(&format!("rulebooks/events/{n}"))).unwrap();

    let cases = [
        (
            "/hooks/ipfabric",
            "ipfabric",
            "change-me-ipfabric",
            "ipfabric-discover-completed.json",
        ),
        (
            "/hooks/ipfabric",
            "ipfabric",
            "change-me-ipfabric",
            "ipfabric-test.json",
        ),
        (
            "/hooks/netbox",
            "netbox",
            "change-me-netbox",
            "netbox-device-created.json",
        ),
        (
            "/hooks/infrahub",
            "infrahub",
            "change-me-infrahub",
            "infrahub-device-updated.json",
        ),
        (
            "/hooks/catalyst",
            "basic",
            "rulehook:change-me-catalyst",
            "catalyst-p1-issue.json",
        ),
    ];
    for (path, kind, secret, file) in cases {
        let (st, resp) = post_signed(&c, &format!("{base}{path}"), kind, secret, &ev(file)).await;
        assert_eq!(st, 202, "{file}: {resp}");
    }
    let wait = |name: &str| {
        let p = tmp.path().join(name);
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(&p)
                && !s.is_empty()
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        String::new()
    };
    let rem = wait("remediation.log");
    assert!(
        rem.contains("snapshot=a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21"),
        "{rem}"
    );
    assert_eq!(
        rem.lines().count(),
        1,
        "the test event must be ignored: {rem}"
    );
    assert!(wait("onboard.log").contains("device=atl1-edge3 site=atl1"));
    assert!(wait("catalyst.log").contains("device=10.93.141.17"));
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(log.contains("Infrahub device atl1-edge1"), "{log}");
    assert!(!log.contains("change-me-"), "a secret reached the log");
    assert!(
        !log.contains("test-github-token"),
        "a token reached the log"
    );

    // Infrahub -> repository_dispatch with the templated client_payload; NetBox -> GitLab pipeline.
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = seen.lock().unwrap().clone();
    let dispatch = calls
        .iter()
        .find(|(p, _)| p == "/repos/acme/netops/dispatches")
        .expect("dispatch sent");
    let payload: serde_json::Value = serde_json::from_str(&dispatch.1).unwrap();
    assert_eq!(payload["event_type"], "infrahub-device-changed");
    assert_eq!(
        payload["client_payload"]["summary"],
        "InfraDevice atl1-edge1 updated on main: description, status"
    );
    let pipeline = calls
        .iter()
        .find(|(p, _)| p == "/api/v4/projects/netops%2Fonboarding/trigger/pipeline")
        .expect("pipeline triggered");
    assert!(
        pipeline.1.contains("variables%5BDEVICE%5D=atl1-edge3"),
        "{}",
        pipeline.1
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_failed_remediation_opens_one_ticket_per_snapshot() {
    let (api, seen) = fake_api().await;
    let tmp = tempfile::tempdir().unwrap();
    // The script cannot write its log: it fails, as a real remediation might.
    let (mut child, base) = serve_shipped(
        tmp.path(),
        &[
            (
                "REMEDIATION_LOG",
                "/nonexistent/dir/remediation.log".to_string(),
            ),
            ("GITHUB_API_URL", api.clone()),
            ("GITHUB_TOKEN", "test-github-token".to_string()),
        ],
    );
    let c = client();
    let body = std::fs::read(repo_path(
        "rulebooks/events/ipfabric-discover-completed.json",
    ))
    .unwrap();
    let (st, _) = post_signed(
        &c,
        &format!("{base}/hooks/ipfabric"),
        "ipfabric",
        "change-me-ipfabric",
        &body,
    )
    .await;
    assert_eq!(st, 202);
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "/repos/acme/netops/issues");
    let issue: serde_json::Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!(
        issue["title"],
        "Remediation failed for snapshot a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21"
    );
    assert!(
        issue["body"].as_str().unwrap().contains("exit code: 2"),
        "{}",
        issue["body"]
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn without_tokens_the_tour_stays_on_this_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_shipped(
        tmp.path(),
        &[
            // The script fails: the ticket would be the next step, but there is no token.
            (
                "REMEDIATION_LOG",
                "/nonexistent/dir/remediation.log".to_string(),
            ),
            ("GITHUB_API_URL", "http://127.0.0.1:9".to_string()),
        ],
    );
    let c = client();
    let body = std::fs::read(repo_path(
        "rulebooks/events/ipfabric-discover-completed.json",
    ))
    .unwrap();
    let (st, resp) = post_signed(
        &c,
        &format!("{base}/hooks/ipfabric"),
        "ipfabric",
        "change-me-ipfabric",
        &body,
    )
    .await;
    assert_eq!(st, 202);
    let id = resp["id"].as_str().unwrap().to_string();
    let mut detail = serde_json::Value::Null;
    for _ in 0..100 {
        detail = c
            .get(format!("{base}/api/events/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if detail["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(detail["status"], "failed", "{detail}");
    let attempts = detail["matches"][0]["attempts"].as_array().unwrap();
    assert!(
        attempts.iter().all(|a| a["action"] != "open_ticket"),
        "no ticket without a token: {detail}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    for (action, var) in [
        ("open_ticket", "GITHUB_TOKEN"),
        ("github_dispatch", "GITHUB_TOKEN"),
        ("gitlab_pipeline", "GITLAB_TRIGGER_TOKEN"),
    ] {
        let want = format!("`{action}` is skipped because {var} is not set");
        assert_eq!(log.matches(&want).count(), 1, "{want}: {log}");
    }
}

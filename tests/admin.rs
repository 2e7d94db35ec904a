//! The admin API's access rule, in process: loopback clients, or the admin token. Against the
//! real binary: the admin plane's gate (cross-site changes refused, only expected hosts served).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use rulehook::engine::Engine;
use rulehook::rules::{Dirs, load};
use rulehook::server::{AppState, app};
use rulehook::store::Store;
use tower::ServiceExt;

fn state(dir: &std::path::Path) -> AppState {
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let rules = load(&Dirs {
        rulebooks: dir.join("rulebooks"),
        scripts: dir.join("scripts"),
        templates: dir.join("templates"),
    })
    .unwrap();
    let store = Store::embedded(&dir.join("data")).unwrap();
    let settings = rulehook::engine::Settings {
        concurrency: 2,
        ..Default::default()
    };
    AppState {
        engine: Engine::new(store, Arc::new(rules), settings),
        admin_token: Some("admin-secret".into()),
        reloader: None,
        metrics: None,
        body_timeout: Duration::from_secs(5),
        console: Default::default(),
        guard: Default::default(),
    }
}

async fn status(app: &axum::Router, from: &str, token: Option<&str>) -> u16 {
    let mut req = Request::get("/api/events").body(Body::empty()).unwrap();
    let peer: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn loopback_or_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()));
    assert_eq!(status(&app, "127.0.0.1:5000", None).await, 200);
    assert_eq!(status(&app, "[::1]:5000", None).await, 200);
    assert_eq!(status(&app, "10.1.2.3:5000", None).await, 401);
    assert_eq!(status(&app, "10.1.2.3:5000", Some("wrong")).await, 401);
    assert_eq!(
        status(&app, "10.1.2.3:5000", Some("admin-secret")).await,
        200
    );
    assert_eq!(status(&app, "[::ffff:127.0.0.1]:5000", None).await, 200);
}

/// Wrong bearer tokens spend a budget per client address, as console sign-ins do
/// (`--failed-auth-per-second`, burst 50): past it every bearer token from that address is
/// answered 429 unchecked, the right one too, so the admin token cannot be guessed at any
/// speed. Right tokens cost nothing; other addresses are not affected.
#[tokio::test]
async fn wrong_admin_tokens_are_throttled_per_address() {
    use rulehook::server::guard::{FailureLimit, Guard};
    let dir = tempfile::tempdir().unwrap();
    let app = app(AppState {
        guard: Arc::new(Guard {
            token_failures: FailureLimit::new(0.01, 50),
            ..Guard::default()
        }),
        ..state(dir.path())
    });
    let guesser = "10.1.2.3:5000";
    for _ in 0..60 {
        assert_eq!(status(&app, guesser, Some("admin-secret")).await, 200);
    }
    for i in 0..50 {
        assert_eq!(status(&app, guesser, Some("guess")).await, 401, "try {i}");
    }
    assert_eq!(status(&app, guesser, Some("guess")).await, 429);
    assert_eq!(
        status(&app, guesser, Some("admin-secret")).await,
        429,
        "past the budget no token is checked"
    );
    assert_eq!(
        status(&app, "10.9.9.9:5000", Some("admin-secret")).await,
        200
    );
    assert_eq!(status(&app, "10.9.9.9:5000", Some("guess")).await, 401);
}

/// Every route behind the admin rule: (method, path as called, path as routed). Kept complete
/// by `the_route_table_names_every_admin_route`, which reads the routers' source.
const ADMIN_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/events", "/api/events"),
    ("GET", "/api/events/nosuch", "/api/events/{id}"),
    ("GET", "/api/stored-events", "/api/stored-events"),
    (
        "POST",
        "/api/events/nosuch/replay",
        "/api/events/{id}/replay",
    ),
    ("GET", "/api/status", "/api/status"),
    ("GET", "/api/jobs", "/api/jobs"),
    (
        "POST",
        "/api/jobs/nosuch:rule/rerun",
        "/api/jobs/{id}/rerun",
    ),
    (
        "POST",
        "/api/jobs/nosuch:rule/approve",
        "/api/jobs/{id}/approve",
    ),
    (
        "POST",
        "/api/jobs/nosuch:rule/reject",
        "/api/jobs/{id}/reject",
    ),
    ("GET", "/api/approvals", "/api/approvals"),
    ("GET", "/api/audit", "/api/audit"),
    ("GET", "/api/windows", "/api/windows"),
    ("GET", "/metrics", "/metrics"),
    ("GET", "/", "/"),
    ("GET", "/console/events/nosuch", "/console/events/{id}"),
    ("POST", "/console/replay", "/console/replay"),
    ("POST", "/console/rerun", "/console/rerun"),
    ("GET", "/console/dead-letters", "/console/dead-letters"),
    ("GET", "/console/approvals", "/console/approvals"),
    ("POST", "/console/decide", "/console/decide"),
    ("GET", "/console/rules", "/console/rules"),
    ("GET", "/console/try", "/console/try"),
    ("POST", "/console/try", "/console/try"),
    ("GET", "/console/overview", "/console/overview"),
    ("GET", "/console/windows", "/console/windows"),
    ("GET", "/console/audit", "/console/audit"),
    ("GET", "/console/live", "/console/live"),
    ("POST", "/console/logout", "/console/logout"),
];

/// Routes anyone may reach: the health check, the sign-in form and the console's assets.
const OPEN_ROUTES: &[&str] = &["/healthz", "/console/login", "/console/static/{name}"];

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    from: &str,
    token: Option<&str>,
) -> u16 {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(Body::from("job=nosuch%3Arule&id=nosuch")).unwrap();
    let peer: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(req))
        .await
        .expect("an answer")
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn every_admin_route_asks_who_is_calling() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()));
    for &(method, path, _) in ADMIN_ROUTES {
        // Someone else, without a token or with a wrong one: refused, for reads and writes.
        for token in [None, Some("wrong")] {
            let st = call(&app, method, path, "10.1.2.3:5000", token).await;
            let refused = if method == "GET" && (path == "/" || path.starts_with("/console/")) {
                // Pages send a person to the sign-in form.
                st == 303 || st == 401
            } else {
                st == 401
            };
            assert!(
                refused,
                "{method} {path} from 10.1.2.3 with {token:?}: {st}"
            );
        }
        // Loopback, and someone else with the admin token: past the access rule (what follows
        // depends on the route: 404 for the ids that do not exist, 403 for a console form
        // without its form token).
        for (from, token) in [
            ("127.0.0.1:5000", None),
            ("10.1.2.3:5000", Some("admin-secret")),
        ] {
            let st = call(&app, method, path, from, token).await;
            assert!(
                st != 401 && st != 303 && st < 500,
                "{method} {path} from {from} with {token:?}: {st}"
            );
        }
    }
}

#[test]
fn the_route_table_names_every_admin_route() {
    let routers = [
        include_str!("../src/server/mod.rs"),
        include_str!("../src/console/mod.rs"),
    ];
    for src in routers {
        for part in src.split(".route(\"").skip(1) {
            let path = &part[..part.find('"').unwrap()];
            assert!(
                OPEN_ROUTES.contains(&path) || ADMIN_ROUTES.iter().any(|r| r.2 == path),
                "route {path} is in neither ADMIN_ROUTES nor OPEN_ROUTES of tests/admin.rs"
            );
        }
    }
}

/// Sends `method path` to a running server with extra headers; returns the status.
async fn send_with(
    c: &reqwest::Client,
    server: &common::Server,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut req = c.request(method, server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request").status().as_u16()
}

async fn event_count(c: &reqwest::Client, server: &common::Server) -> usize {
    let v: serde_json::Value = c
        .get(server.url("/api/events"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    v["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn cross_site_requests_change_nothing() {
    use common::console::{env, send, wait_dead_letter};
    use reqwest::Method;
    let env = env();
    let server = common::Server::start(&env, &[], &[]);
    let c = common::client();
    let id = send(
        &c,
        &server,
        &serde_json::json!({"kind": "deploy", "service": "web"}),
    )
    .await;
    let job = format!("{id}:deploy");
    wait_dead_letter(&c, &server, &job).await;
    let replay = format!("/api/events/{id}/replay");
    let rerun = format!("/api/jobs/{job}/rerun");
    // What a page elsewhere makes the operator's browser send: an auto-submitting form, a
    // no-cors fetch (Origin, Sec-Fetch-Site or both).
    let forged: [&[(&str, &str)]; 4] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "text/plain"),
        ],
    ];
    for headers in forged {
        for path in [&replay, &rerun] {
            let st = send_with(&c, &server, Method::POST, path, headers).await;
            assert_eq!(st, 403, "{path} {headers:?}");
        }
    }
    assert_eq!(event_count(&c, &server).await, 1, "nothing was replayed");
    let v: serde_json::Value = c
        .get(server.url("/api/jobs?status=failed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["jobs"].as_array().map(Vec::len),
        Some(1),
        "still a dead letter: {v}"
    );
    // Reads are not changes; clients that are not browsers (the CLI) and this origin pass.
    let cross = [("sec-fetch-site", "cross-site")];
    assert_eq!(
        send_with(&c, &server, Method::GET, "/api/events", &cross).await,
        200
    );
    assert_eq!(
        send_with(&c, &server, Method::POST, &replay, &[]).await,
        202
    );
    let same = [
        ("origin", server.base.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    assert_eq!(
        send_with(&c, &server, Method::POST, &rerun, &same).await,
        202
    );
}

#[tokio::test]
async fn only_expected_hosts_reach_the_admin_plane() {
    use reqwest::Method;
    let env = common::console::env();
    let server = common::Server::start(&env, &["--admin-host", "ops.example.test"], &[]);
    let c = common::client();
    let id = common::console::send(&c, &server, &serde_json::json!({"kind": "x"})).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let rebound = format!("rebind.evil.test:{port}");
    let evil = [("host", rebound.as_str())];
    let replay = format!("/api/events/{id}/replay");
    for path in [
        "/api/events",
        "/api/status",
        "/metrics",
        "/",
        "/console/rules",
    ] {
        let st = send_with(&c, &server, Method::GET, path, &evil).await;
        assert_eq!(st, 421, "{path}");
    }
    let rebound_origin = format!("http://{rebound}");
    let same_site = [
        ("host", rebound.as_str()),
        ("origin", rebound_origin.as_str()),
    ];
    assert_eq!(
        send_with(&c, &server, Method::POST, &replay, &same_site).await,
        421
    );
    assert_eq!(event_count(&c, &server).await, 1, "nothing was replayed");
    // Source paths and the health check answer any host.
    let (st, _) = common::post(
        &c,
        &server.url("/hooks/in"),
        &[
            (
                "authorization".into(),
                format!("Bearer {}", common::console::SOURCE_TOKEN),
            ),
            ("host".into(), rebound.clone()),
        ],
        br#"{"kind": "y"}"#,
    )
    .await;
    assert_eq!(st, 202);
    assert_eq!(
        send_with(&c, &server, Method::GET, "/healthz", &evil).await,
        200
    );
    // Expected names: localhost, loopback addresses, the listen address, --admin-host.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        format!("OPS.example.test:{port}"),
    ] {
        let st = send_with(&c, &server, Method::GET, "/api/events", &[("host", &host)]).await;
        assert_eq!(st, 200, "{host}");
    }
}

/// A page of stored events ends past 8 MiB of JSON however many events were asked for, and
/// paging on with `after` reads every event once, in order.
#[tokio::test]
async fn stored_event_pages_are_bounded_by_bytes() {
    let env = common::console::env();
    let server = common::Server::start(&env, &[], &[]);
    let c = common::client();
    let blob = "x".repeat(400 * 1024);
    let mut sent = Vec::new();
    for i in 0..30 {
        let body = serde_json::json!({"i": i, "blob": blob});
        sent.push(common::console::send(&c, &server, &body).await);
    }
    let mut read = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = server.url("/api/stored-events?limit=5000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let text = c.get(url).send().await.unwrap().text().await.unwrap();
        assert!(
            text.len() <= rulehook::server::STORED_PAGE_BYTES + 500 * 1024,
            "a page of {} bytes",
            text.len()
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        let Some(last) = ids.last().cloned() else {
            break;
        };
        after = Some(last);
        read.extend(ids);
        pages += 1;
        assert!(pages <= 30, "paging does not end");
    }
    assert!(pages >= 2, "30 events of 400 KB take more than one page");
    assert_eq!(read, sent);
}

/// A query parameter of the wrong type is answered as every other API mistake is: 400 with a
/// JSON `{"error": "bad_request", "message"}` naming the parameter, not axum's plain text.
#[tokio::test]
async fn a_bad_query_parameter_is_a_json_error() {
    let env = common::console::env();
    let server = common::Server::start(&env, &[], &[]);
    let c = common::client();
    for path in [
        "/api/events?limit=abc",
        "/api/jobs?limit=-1",
        "/api/audit?limit=many",
        "/api/stored-events?limit=x",
    ] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let text = resp.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        assert_eq!(v["error"], "bad_request", "{path}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("limit")),
            "{path}: {v}"
        );
    }
}

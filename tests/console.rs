//! The web console over HTTP against the real binary: every page renders with the security
//! headers, event values render inert, buttons need the form token and this origin, the login
//! form when loopback is not trusted, the live stream. (tests/browser.rs drives Chromium.)

mod common;

use std::time::{Duration, Instant};

use common::console::{
    ADMIN_TOKEN, SOURCE_TOKEN, XSS_ATTR, XSS_LINK, XSS_SCRIPT, env, form, hidden, send,
    wait_dead_letter,
};
use common::{Server, client};
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn page(c: &reqwest::Client, server: &Server, path: &str) -> (u16, String) {
    let resp = c.get(server.url(path)).send().await.expect("GET");
    let status = resp.status().as_u16();
    if status == 200 {
        assert_eq!(
            resp.headers()["content-security-policy"],
            rulehook::console::CSP,
            "{path}"
        );
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
    (status, resp.text().await.unwrap_or_default())
}

/// No markup from an event survives as markup: the only script is the console's own.
fn assert_inert(html: &str, what: &str) {
    assert!(!html.contains("<img"), "{what}: {html}");
    assert!(!html.contains("<script>"), "{what}: {html}");
    assert!(!html.contains("href=\"javascript:"), "{what}: {html}");
    assert_eq!(html.matches("<script").count(), 1, "{what}: {html}");
    assert!(html.contains("<script src=\"/console/static/console.js\" defer></script>"));
}

async fn post_form(
    c: &reqwest::Client,
    server: &Server,
    path: &str,
    body: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = c
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("POST")
}

#[tokio::test]
async fn every_page_renders_event_values_inert() {
    let env = env();
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let body = json!({
        "kind": XSS_SCRIPT, "service": XSS_ATTR, "html_url": XSS_LINK, "severity": "low",
    });
    let mut headers = rulehook::verify::sign_like(
        "bearer",
        SOURCE_TOKEN,
        body.to_string().as_bytes(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    headers.push(("x-note".into(), XSS_ATTR.into()));
    headers.push(("x-deploy-token".into(), "leaky-value".into()));
    let (st, resp) = common::post(
        &c,
        &server.url("/hooks/in"),
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();

    for path in [
        "/",
        "/console/dead-letters",
        "/console/rules",
        "/console/try",
        "/console/overview",
        "/console/windows",
        &format!("/console/events/{id}"),
    ] {
        let (st, html) = page(&c, &server, path).await;
        assert_eq!(st, 200, "{path}: {html}");
        assert_inert(&html, path);
    }
    // The charts take their box's width, not a fixed third of it.
    let (_, html) = page(&c, &server, "/console/overview").await;
    assert!(html.contains("width=\"100%\""), "{html}");
    let (_, html) = page(&c, &server, &format!("/console/events/{id}")).await;
    assert!(
        html.contains("&lt;script&gt;window.pwned = 1&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(html.contains("&quot;&gt;&lt;img src=x"), "{html}");
    // Why the rules did not match: the false clause and the value seen.
    assert!(
        html.contains(
            "`$.severity == &quot;critical&quot;` is false ($.severity is &quot;low&quot;)"
        ),
        "{html}"
    );
    // Credential-like headers are masked; the bearer token was never stored.
    assert!(!html.contains("leaky-value"), "{html}");
    assert!(!html.contains(SOURCE_TOKEN), "{html}");
    assert!(html.contains("x-deploy-token"), "{html}");
    assert!(
        html.contains("<dd id=\"peer\">127.0.0.1</dd>"),
        "the peer: {html}"
    );

    // Try: the same payloads pasted in, nothing stored.
    let (_, try_page) = page(&c, &server, "/console/try").await;
    let token = hidden(&try_page, "token");
    let event = json!({"kind": "deploy", "service": XSS_ATTR}).to_string();
    let resp = post_form(
        &c,
        &server,
        "/console/try",
        &form(&[
            ("token", &token),
            ("source", "in"),
            ("event", &event),
            ("headers", "X-Note: <b>hi</b>"),
        ]),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert_inert(&html, "try");
    assert!(html.contains("Would run action 0"), "{html}");
    assert!(html.contains("fix-me.sh"), "{html}");
    // Its timeout as `rulehook test` prints it (the default, 60 s), not milliseconds.
    assert!(
        html.contains("&quot;timeout&quot;: &quot;1m&quot;"),
        "{html}"
    );
    assert!(
        html.contains("`$.severity == &quot;critical&quot;` is false ($.severity does not exist)"),
        "{html}"
    );
    let (_, list) = page(&c, &server, "/").await;
    assert_eq!(
        list.matches("/console/events/").count(),
        1,
        "try stores nothing"
    );

    // Bad JSON in Try is a clear error, not a crash.
    let resp = post_form(
        &c,
        &server,
        "/console/try",
        &form(&[("token", &token), ("source", "in"), ("event", "{nope")]),
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("the event is not valid JSON")
    );

    // The assets.
    let css = c
        .get(server.url("/console/static/console.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    // Times never wrap, and the 64-hex delivery id does not take the list's width.
    let css = css.text().await.unwrap();
    assert!(
        css.contains(".rows td.when { white-space: nowrap; }"),
        "{css}"
    );
    assert!(css.contains(".rows td.delivery {"), "{css}");
    let missing = c
        .get(server.url("/console/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn buttons_need_the_form_token_and_this_origin() {
    let env = env();
    let server = Server::start(&env, &[], &[]);
    let c = no_redirects();
    let id = send(&c, &server, &json!({"kind": "deploy", "service": "web"})).await;
    let job = format!("{id}:deploy");
    wait_dead_letter(&c, &server, &job).await;
    let (_, html) = page(&c, &server, "/console/dead-letters").await;
    assert!(html.contains(&job), "{html}");
    assert!(html.contains("fix-me.sh exited with status 1"), "{html}");
    // The stderr that explains the error is on the dead letters page too.
    assert!(html.contains("deploy target unreachable"), "{html}");
    let token = hidden(&html, "token");
    let origin = server.base.clone();

    // Forged: no token, a wrong token, another origin.
    for (body, from) in [
        (form(&[("job", &job)]), Some(origin.as_str())),
        (
            form(&[("job", &job), ("token", "0000")]),
            Some(origin.as_str()),
        ),
        (
            form(&[("job", &job), ("token", &token)]),
            Some("http://evil.example"),
        ),
    ] {
        let resp = post_form(&c, &server, "/console/rerun", &body, from).await;
        assert_eq!(resp.status(), 403, "{body} from {from:?}");
    }
    let resp = c
        .post(server.url("/console/rerun"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(form(&[("job", &job), ("token", &token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (_, detail) = page(&c, &server, &format!("/console/events/{id}")).await;
    assert_eq!(
        detail.matches("class=\"attempt failed\"").count(),
        1,
        "nothing re-ran"
    );

    // The real button: fixed, re-run, the new attempt shows.
    std::fs::write(env.path("fixed"), "").unwrap();
    let resp = post_form(
        &c,
        &server,
        "/console/rerun",
        &form(&[("job", &job), ("token", &token)]),
        Some(&origin),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        format!("/console/events/{id}?done=rerun").as_str()
    );
    let start = Instant::now();
    loop {
        let (_, html) = page(&c, &server, &format!("/console/events/{id}?done=rerun")).await;
        if html.contains("class=\"attempt ok\"") {
            assert!(html.contains("Re-run queued"), "{html}");
            assert_eq!(
                html.matches("class=\"attempt failed\"").count(),
                1,
                "{html}"
            );
            assert!(html.contains("deploying web"), "stdout shown: {html}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no new attempt: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-running a job that is not a dead letter says so.
    let resp = post_form(
        &c,
        &server,
        "/console/rerun",
        &form(&[("job", &job), ("token", &token)]),
        None,
    )
    .await;
    assert_eq!(resp.status(), 409);

    // Replay makes a new event and goes to it.
    let resp = post_form(
        &c,
        &server,
        "/console/replay",
        &form(&[("event", &id), ("token", &token)]),
        Some(&origin),
    )
    .await;
    assert_eq!(resp.status(), 303);
    let to = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with("/console/events/") && !to.contains(&id),
        "{to}"
    );
    let (st, html) = page(&c, &server, &to).await;
    assert_eq!(st, 200);
    assert!(html.contains(&id), "the replay names its parent: {html}");
}

#[tokio::test]
async fn the_login_form_when_loopback_is_not_trusted() {
    let env = env();
    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let c = no_redirects();
    let resp = c.get(server.url("/?status=failed")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/console/login?next=/%3Fstatus%3Dfailed"
    );
    for path in ["/console/rules", "/console/events/x"] {
        let resp = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
    }
    let resp = c.get(server.url("/console/live")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c.get(server.url("/api/events")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the admin API follows the same rule");

    let (st, html) = page(&c, &server, "/console/login?next=/console/rules").await;
    assert_eq!(st, 200);
    let token = hidden(&html, "token");
    assert!(!html.contains(ADMIN_TOKEN));
    let login = |admin: &str, token: &str, next: &str| {
        form(&[("token", token), ("admin_token", admin), ("next", next)])
    };
    let resp = post_form(
        &c,
        &server,
        "/console/login",
        &login("wrong", &token, "/"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    let resp = post_form(
        &c,
        &server,
        "/console/login",
        &login(ADMIN_TOKEN, "", "/"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 403, "the login form has its token too");
    let resp = post_form(
        &c,
        &server,
        "/console/login",
        &login(ADMIN_TOKEN, &token, "https://evil.example/"),
        Some(&server.base),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/", "no open redirect");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    let resp = c
        .get(server.url("/console/rules"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Sign out"), "{html}");
    let resp = c
        .get(server.url("/"))
        .header("cookie", "rulehook_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = c
        .get(server.url("/"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the bearer token works too");

    // Sign out: the cookie is cleared.
    let form_token = hidden(&html, "token");
    let resp = c
        .post(server.url("/console/logout"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &form_token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn sign_in_goes_only_to_local_paths() {
    let env = env();
    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let c = no_redirects();
    let (_, html) = page(&c, &server, "/console/login?next=/%09/evil.example/x").await;
    // `/` as minijinja escapes it: nothing of the tab and the other site is kept.
    assert!(html.contains("name=\"next\" value=\"&#x2f;\">"), "{html}");
    let token = hidden(&html, "token");
    // Browsers drop tabs and line breaks from a URL: `/\t/evil.example/x` is `//evil.example/x`.
    for (next, want) in [
        ("/\t/evil.example/x", "/"),
        ("/\n/evil.example", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
        ("/ /evil.example", "/"),
        ("/\u{7f}/evil.example", "/"),
        (
            "/console/rules?status=failed",
            "/console/rules?status=failed",
        ),
        ("/?source=caf\u{e9}", "/?source=caf%C3%A9"),
    ] {
        let body = form(&[
            ("token", &token),
            ("admin_token", ADMIN_TOKEN),
            ("next", next),
        ]);
        let resp = post_form(&c, &server, "/console/login", &body, None).await;
        assert_eq!(resp.status(), 303, "{next:?}");
        assert_eq!(resp.headers()["location"], want, "{next:?}");
    }
}

/// Live streams from many loopback addresses cannot take the connections webhooks and the
/// health check need: they have caps of their own (a quarter of --max-connections in all, an
/// eighth of that per address); past them, 503 at once.
#[tokio::test]
async fn live_streams_cannot_starve_the_webhooks() {
    let env = env();
    let server = Server::start(&env, &["--max-connections", "32"], &[]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut held = Vec::new();
    let mut refused = 0;
    for a in 2..=9u8 {
        for _ in 0..4 {
            let c = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, a]))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            match c.get(server.url("/console/live")).send().await {
                Ok(r) if r.status() == 200 => held.push((c, r)),
                Ok(r) => {
                    assert_eq!(r.status(), 503, "refused at once");
                    refused += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert_eq!(held.len(), 8, "8 streams in all, one per address");
    assert_eq!(refused, 24);
    let c = client();
    let health = c.get(server.url("/healthz")).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    send(&c, &server, &json!({"kind": "x"})).await;
    drop(held);
}

#[tokio::test]
async fn new_events_stream_live_with_the_list_filters() {
    let env = env();
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let mut live = c
        .get(server.url("/console/live?rule=page-oncall"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let skipped = send(&c, &server, &json!({"severity": "low"})).await;
    let wanted = send(&c, &server, &json!({"severity": "critical"})).await;
    let mut seen = String::new();
    let start = Instant::now();
    while !seen.contains(&wanted) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
            .await
            .expect("a live event in time")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    assert!(seen.contains("event: events"), "{seen}");
    assert!(!seen.contains(&skipped), "filtered out: {seen}");
    let data = seen
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let rows: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let row = &rows[0];
    assert_eq!(row["id"], wanted.as_str());
    assert_eq!(row["rules"], json!(["page-oncall"]));
    assert_eq!(row["status"], "pending");
}

/// Signing out ends the session "at once, and any copy of it": a live stream opened with the
/// session stops too, instead of streaming every new event for up to 30 minutes more.
#[tokio::test]
async fn a_live_stream_ends_with_its_session() {
    let env = env();
    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let c = no_redirects();
    let (_, html) = page(&c, &server, "/console/login").await;
    let token = hidden(&html, "token");
    let body = form(&[
        ("token", &token),
        ("admin_token", ADMIN_TOKEN),
        ("next", "/"),
    ]);
    let resp = post_form(&c, &server, "/console/login", &body, None).await;
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let session = cookie.split(';').next().unwrap().to_string();
    let html = c
        .get(server.url("/console/rules"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form_token = hidden(&html, "token");
    let mut live = c
        .get(server.url("/console/live"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // Streaming while signed in.
    let before = send(&c, &server, &json!({"kind": "before"})).await;
    let mut seen = String::new();
    while !seen.contains(&before) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
            .await
            .expect("a live event in time")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let resp = c
        .post(server.url("/console/logout"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &form_token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = c
        .get(server.url("/console/live"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the cookie no longer opens a stream");
    let after = send(&c, &server, &json!({"kind": "after sign-out"})).await;
    let mut later = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), live.chunk()).await {
            Ok(Ok(Some(chunk))) => later.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => panic!("the stream of a signed-out session stayed open: {later}"),
        }
    }
    assert!(!later.contains(&after), "streamed after sign-out: {later}");
}

/// `RULEHOOK_ADMIN_TOKEN=` (an env file's placeholder left empty) is no admin token: the
/// sign-in form took an empty field as the admin token and made anyone who reached it admin.
#[tokio::test]
async fn an_empty_admin_token_signs_nobody_in() {
    let env = env();
    let server = Server::start(&env, &[], &[("RULEHOOK_ADMIN_TOKEN", String::new())]);
    let c = no_redirects();
    let (_, html) = page(&c, &server, "/console/login").await;
    let token = hidden(&html, "token");
    for given in ["", "  "] {
        let body = form(&[("token", &token), ("admin_token", given), ("next", "/")]);
        let resp = post_form(&c, &server, "/console/login", &body, None).await;
        assert!(resp.headers().get("set-cookie").is_none(), "{given:?}");
        assert_eq!(resp.status(), 401, "{given:?}");
    }
}

#[test]
fn sources_cannot_take_the_console_paths() {
    for path in ["/", "/console/x"] {
        let env = env();
        env.rulebook(
            "ops.yml",
            &format!("sources:\n  - {{ name: in, kind: bearer, secret: t, path: \"{path}\" }}\n"),
        );
        let out = env.cmd(&["check"]).output().unwrap();
        assert!(!out.status.success(), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/console/"), "{err}");
    }
}

/// With a shared store, events another process accepted reach this process's live pages
/// through the history (polled), and this process's own events are not sent twice.
#[tokio::test]
async fn live_pages_read_other_processes_events_from_the_history() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    let env = env();
    let rules = rulehook::rules::load(&rulehook::rules::Dirs {
        rulebooks: env.path("rulebooks"),
        scripts: env.path("scripts"),
        templates: env.path("templates"),
    })
    .unwrap();
    let store = rulehook::store::Store::embedded(&env.path("data")).unwrap();
    let engine = rulehook::engine::Engine::new(
        store.clone(),
        std::sync::Arc::new(rules),
        Default::default(),
    );
    let mut console = rulehook::console::Settings::new(None);
    console.poll_history = Some(Duration::from_millis(200));
    let app = rulehook::server::app(rulehook::server::AppState {
        engine: engine.clone(),
        admin_token: None,
        reloader: None,
        metrics: None,
        body_timeout: Duration::from_secs(5),
        guard: Default::default(),
        console: std::sync::Arc::new(console),
    });
    let mut req = Request::get("/console/live").body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnectInfo(
        "127.0.0.1:5000".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();

    // Another process's event: in the shared history, not on this engine's broadcast.
    let other =
        rulehook::verify::VerifiedEvent::replay("in", "bearer", json!({"n": 1}), &[], "x").accept();
    let other_id = other.id.clone();
    store
        .log
        .append(rulehook::domain::Envelope {
            event: std::sync::Arc::new(other),
            matches: vec![],
            dedup_window: None,
        })
        .await
        .unwrap();
    // This process's own event.
    let own = engine
        .ingest(rulehook::verify::VerifiedEvent::replay(
            "in",
            "bearer",
            json!({"n": 2}),
            &[],
            "y",
        ))
        .await
        .unwrap()
        .id;
    let mut seen = String::new();
    let start = Instant::now();
    while !(seen.contains(&other_id) && seen.contains(&own)) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap_or_else(|_| panic!("not both in time: {seen}"))
            .expect("open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(start.elapsed() < Duration::from_secs(10), "{seen}");
    }
    // A few more reads of the history: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(700)).await;
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(100), body.next()).await
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen.matches(&other_id).count(), 1, "{seen}");
    assert_eq!(seen.matches(&own).count(), 1, "{seen}");
    // Both rows say what the event was, also the one read from the history.
    assert!(seen.contains("\"summary\":\"n=1\""), "{seen}");
    assert!(seen.contains("\"summary\":\"n=2\""), "{seen}");
}

/// A dead letter whose rule was fixed since: the event page offers the fix and the version
/// matched, and each button runs what it says.
#[tokio::test]
async fn a_dead_letter_of_a_changed_rule_offers_the_fix_and_the_version_matched() {
    let env = env();
    let server = Server::start(&env, &[], &[]);
    let c = no_redirects();
    let a = send(&c, &server, &json!({"kind": "deploy", "service": "a"})).await;
    let b = send(&c, &server, &json!({"kind": "deploy", "service": "b"})).await;
    for id in [&a, &b] {
        wait_dead_letter(&c, &server, &format!("{id}:deploy")).await;
    }
    // The fix: the rule now passes `--fixed`, which the script accepts.
    env.script(
        "fixed.sh",
        "#!/bin/sh\necho \"fixed run for $1 ($RULEHOOK_RUN_ID)\"\n",
    );
    let yaml = std::fs::read_to_string(env.path("rulebooks/ops.yml")).unwrap();
    env.rulebook(
        "ops.yml",
        &yaml.replace("script: fix-me.sh", "script: fixed.sh"),
    );
    let start = Instant::now();
    loop {
        let s: serde_json::Value = c
            .get(server.url("/api/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["reload"]["reloads"].as_u64() >= Some(1) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no reload: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, html) = page(&c, &server, &format!("/console/events/{a}")).await;
    assert!(html.contains("Re-run with the current rule"), "{html}");
    assert!(html.contains("Re-run as matched"), "{html}");
    let token = hidden(&html, "token");
    let origin = server.base.clone();
    let resp = post_form(
        &c,
        &server,
        "/console/rerun",
        &form(&[("job", &format!("{a}:deploy")), ("token", &token)]),
        Some(&origin),
    )
    .await;
    assert_eq!(
        resp.headers()["location"],
        format!("/console/events/{a}?done=rerun-current").as_str()
    );
    let resp = post_form(
        &c,
        &server,
        "/console/rerun",
        &form(&[
            ("job", &format!("{b}:deploy")),
            ("token", &token),
            ("as_matched", "1"),
        ]),
        Some(&origin),
    )
    .await;
    assert_eq!(
        resp.headers()["location"],
        format!("/console/events/{b}?done=rerun-matched").as_str()
    );
    let start = Instant::now();
    loop {
        let (_, ha) = page(
            &c,
            &server,
            &format!("/console/events/{a}?done=rerun-current"),
        )
        .await;
        let (_, hb) = page(&c, &server, &format!("/console/events/{b}")).await;
        let b_again = hb.matches("class=\"attempt failed\"").count() == 2;
        if ha.contains("fixed run for a") && b_again {
            assert!(ha.contains("current version of its rule"), "{ha}");
            assert!(
                !hb.contains("fixed run for b"),
                "the version matched ran: {hb}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "re-runs did not run: {ha}\n{hb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event page says what a correlation holds and waits for, and an absence that did not
/// fire reads as such: not a green `done`, not "waiting for a worker".
#[tokio::test]
async fn the_event_page_shows_what_a_correlation_holds_and_an_absence_that_did_not_fire() {
    let env = common::Env::new();
    env.rulebook(
        "c.yml",
        &format!(
            r#"sources:
  - {{ name: in, kind: bearer, secret: {SOURCE_TOKEN} }}
rules:
  - name: pair
    correlate:
      within: 10m
      group_by: ['$.device']
      sequence:
        - {{ name: down, condition: '$.state == "down"' }}
        - {{ name: up, condition: '$.state == "up"' }}
    actions: [{{ log: {{ message: back }} }}]
  - name: stays-down
    correlate:
      within: 1s
      group_by: ['$.device']
      absence:
        after: {{ name: down, condition: '$.state == "down"' }}
        missing: {{ name: up, condition: '$.state == "up"' }}
    actions: [{{ log: {{ message: gone }} }}]
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let down = send(&c, &server, &json!({"device": "r1", "state": "down"})).await;
    let (_, html) = page(&c, &server, &format!("/console/events/{down}")).await;
    assert!(
        html.contains("holds down=") && html.contains("waits for up"),
        "{html}"
    );
    let (ok, out) = {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
            .args(["event", &down, "--url", &server.base])
            .env_remove("RULEHOOK_URL")
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert!(ok && out.contains("holds down="), "{out}");
    assert!(out.contains("waits for up"), "{out}");
    send(&c, &server, &json!({"device": "r1", "state": "up"})).await;
    let start = Instant::now();
    loop {
        let (_, html) = page(&c, &server, &format!("/console/events/{down}")).await;
        if html.contains("did not fire") {
            assert!(!html.contains("No attempt yet"), "{html}");
            assert!(
                html.contains("stays-down <span class=\"status not-fired\">"),
                "{html}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{html}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event list says what each event was — the source kind's line (GitHub: the event and
/// repository), a source's own `summary:` template, a generic body's plain fields — with a
/// distinct colour per source, and the delivery id last and cut short; the live row carries
/// the same line.
#[tokio::test]
async fn the_event_list_says_what_each_event_was() {
    let env = common::Env::new();
    env.rulebook(
        "s.yml",
        r#"sources:
  - { name: gh, kind: github, secret: gh-secret }
  - name: am
    kind: bearer
    secret: am-token
    summary: "{{ event.alerts[0].labels.alertname }} on {{ event.alerts[0].labels.device }}"
  - { name: plain, kind: bearer, secret: plain-token }
rules:
  - name: noted
    condition: '$.never == 1'
    actions:
      - log: { message: "never" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let push = json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/net"}});
    let body = push.to_string();
    let mut headers = rulehook::verify::sign_like(
        "github",
        "gh-secret",
        body.as_bytes(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    for (k, v) in headers.iter_mut() {
        if k == "x-github-event" {
            *v = "push".into();
        }
    }
    let (st, resp) = common::post(&c, &server.url("/hooks/gh"), &headers, body.as_bytes()).await;
    assert_eq!(st, 202, "{resp}");
    let alert = json!({"status": "firing", "alerts": [{"labels": {"alertname": "LinkDown", "device": "core-sw1"}}]});
    let (st, resp) = common::post_signed(
        &c,
        &server.url("/hooks/am"),
        "bearer",
        "am-token",
        alert.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");

    // A live page sees the next event with its line.
    let mut live = c.get(server.url("/console/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let (st, resp) = common::post_signed(
        &c,
        &server.url("/hooks/plain"),
        "bearer",
        "plain-token",
        json!({"kind": "deploy", "service": "web"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let start = Instant::now();
    let mut streamed = String::new();
    while !streamed.contains("kind=deploy service=web") {
        assert!(start.elapsed() < Duration::from_secs(10), "{streamed}");
        match tokio::time::timeout(Duration::from_secs(10), live.chunk()).await {
            Ok(Ok(Some(bytes))) => streamed.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the live stream ended: {other:?} {streamed}"),
        }
    }
    assert!(
        streamed.contains("\"summary\":\"kind=deploy service=web\""),
        "{streamed}"
    );

    let (st, html) = page(&c, &server, "/").await;
    assert_eq!(st, 200, "{html}");
    let rows: Vec<&str> = html.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{html}");
    let summary = |row: &str| {
        row.split("<td class=\"summary\"")
            .nth(1)
            .and_then(|r| r.split('>').nth(1))
            .and_then(|r| r.split("</td").next())
            .unwrap_or_default()
            .replace("&#x2f;", "/")
    };
    assert_eq!(summary(rows[0]), "kind=deploy service=web");
    assert_eq!(summary(rows[1]), "LinkDown on core-sw1");
    assert_eq!(summary(rows[2]), "push · acme/net refs/heads/main");
    // Distinct colours, in the order the sources are declared.
    assert!(
        rows[2].contains("<span class=\"source c0\">gh</span>"),
        "{}",
        rows[2]
    );
    assert!(
        rows[1].contains("<span class=\"source c1\">am</span>"),
        "{}",
        rows[1]
    );
    assert!(
        rows[0].contains("<span class=\"source c2\">plain</span>"),
        "{}",
        rows[0]
    );
    // The delivery id is the last column.
    assert!(
        rows[2].find("class=\"delivery\"") > rows[2].find("class=\"status"),
        "{}",
        rows[2]
    );
    // A summary template that does not compile is a load error with its place.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["check", "--rulebooks"])
        .arg(env.path("rulebooks"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.rulebook(
        "s.yml",
        "sources:\n  - { name: am, kind: bearer, secret: t, summary: \"{{ event.x\" }\nrules: []\n",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["check", "--rulebooks"])
        .arg(env.path("rulebooks"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("s.yml:2:") && text.contains("summary: template error"),
        "{text}"
    );
}

/// Try takes the body as the source's sender posts it, decoded by the source's `format` as a
/// request on its path is (and as `rulehook test` does): the shipped EEM example's line of text,
/// a form, `format: auto` by the Content-Type among the headers — not only JSON.
#[tokio::test]
async fn try_decodes_the_body_by_the_sources_format() {
    let env = env();
    env.rulebook(
        "text.yml",
        r#"sources:
  - { name: eem, kind: bearer, secret: eem-token, format: text }
  - { name: tcl, kind: bearer, secret: tcl-token, format: form }
  - { name: any, kind: bearer, secret: any-token, format: auto }
rules:
  - name: link-down
    sources: [eem, any]
    condition: 'search($.text, "changed state to down")'
    actions:
      - log: { message: "down: {{ event.text }}" }
  - name: form-down
    sources: [tcl, any]
    condition: '$.state == "down"'
    actions:
      - log: { message: "{{ event.device }} down" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let (_, try_page) = page(&c, &server, "/console/try").await;
    let token = hidden(&try_page, "token");
    let line = "*Mar  3 09:14:22.117: %LINEPROTO-5-UPDOWN: Line protocol on Interface Gi0/1, changed state to down";
    let cases = [
        ("eem", line, "", "text/link-down", "down: *Mar"),
        (
            "tcl",
            "device=atl1&state=down",
            "",
            "text/form-down",
            "atl1 down",
        ),
        (
            "any",
            "device=atl2&state=down",
            "Content-Type: application/x-www-form-urlencoded",
            "text/form-down",
            "atl2 down",
        ),
        (
            "any",
            line,
            "Content-Type: text/plain",
            "text/link-down",
            "down: *Mar",
        ),
    ];
    for (source, event, headers, rule, rendered) in cases {
        let resp = post_form(
            &c,
            &server,
            "/console/try",
            &form(&[
                ("token", &token),
                ("source", source),
                ("event", event),
                ("headers", headers),
            ]),
            None,
        )
        .await;
        let status = resp.status().as_u16();
        let html = resp.text().await.unwrap();
        assert_eq!(status, 200, "{source} {event}: {html}");
        let rule = rule.replace('/', " / ");
        let verdict = html
            .split("<div class=\"")
            .find(|d| d.contains(&format!("<strong>{rule}</strong>")))
            .unwrap_or_else(|| panic!("no verdict for {rule}: {html}"));
        assert!(verdict.starts_with("match"), "{source} {event}: {verdict}");
        assert!(verdict.contains(rendered), "{source} {event}: {verdict}");
    }
    // A JSON source still says when the body is not JSON.
    let resp = post_form(
        &c,
        &server,
        "/console/try",
        &form(&[("token", &token), ("source", "in"), ("event", line)]),
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("the event is not valid JSON")
    );
}

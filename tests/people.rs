//! People against the real binary: console passwords (`users passwd`), single sign-on through a
//! trusted proxy's header (and the same header from elsewhere, not trusted), the audit page, and
//! every role against every console button (docs/change-control.md).

mod common;

use std::net::IpAddr;

use common::console::{ADMIN_TOKEN, SOURCE_TOKEN, env, form, hidden, send, wait_dead_letter};
use common::{Env, Server};
use serde_json::{Value, json};

fn add_user(env: &Env, name: &str, role: &str) -> String {
    let (ok, text) = env.users(&["add", name, "--role", role], None);
    assert!(ok, "{text}");
    text.lines().last().unwrap().trim().to_string()
}

/// A client that does not follow redirects, its requests coming from `from`.
fn client_from(from: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn text_of(resp: reqwest::Response) -> (u16, String) {
    let st = resp.status().as_u16();
    (st, resp.text().await.unwrap_or_default())
}

/// The login form's token.
async fn login_token(c: &reqwest::Client, server: &Server) -> String {
    let (st, html) = text_of(c.get(server.url("/console/login")).send().await.unwrap()).await;
    assert_eq!(st, 200, "{html}");
    assert!(html.contains("id=\"password\""), "{html}");
    hidden(&html, "token")
}

async fn post_login(
    c: &reqwest::Client,
    server: &Server,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    c.post(server.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap()
}

async fn audit(c: &reqwest::Client, server: &Server) -> Vec<Value> {
    let v: Value = c
        .get(server.url("/api/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["audit"].as_array().unwrap().clone()
}

fn who_what(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap().to_string(),
                r["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `users passwd` reads the password from standard input and stores only an Argon2id hash;
/// the console signs in with name and password; wrong ones are refused (401) and audited; a
/// new password ends the sessions of the old one; the audit page shows all of it.
#[tokio::test]
async fn passwords_sign_in_to_the_console_and_refusals_are_audited() {
    let env = env();
    add_user(&env, "alice", "operator");
    let (ok, text) = env.users(&["passwd", "alice"], Some("short\n"));
    assert!(!ok && text.contains("8 to 1024 characters"), "{text}");
    let (ok, text) = env.users(&["passwd", "nobody"], Some("long enough pw\n"));
    assert!(!ok && text.contains("no user `nobody`"), "{text}");
    let (ok, text) = env.users(&["passwd", "alice"], Some("correct horse battery\n"));
    assert!(ok, "{text}");
    let stored = std::fs::read_to_string(env.path("data/users.json")).unwrap();
    assert!(!stored.contains("correct horse"), "{stored}");
    assert!(
        stored.contains("\"password_argon2\": \"$argon2id$"),
        "{stored}"
    );

    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let c = client_from("127.0.0.1");
    let token = login_token(&c, &server).await;
    for (user, password) in [
        ("alice", "wrong password"),
        ("mallory", "correct horse battery"),
    ] {
        let resp = post_login(
            &c,
            &server,
            &[("token", &token), ("user", user), ("password", password)],
        )
        .await;
        assert!(resp.headers().get("set-cookie").is_none());
        let (st, html) = text_of(resp).await;
        assert_eq!(st, 401, "{html}");
        assert!(html.contains("wrong user name or password"), "{html}");
    }
    // Without the login form's token, even the right password is refused.
    let resp = post_login(
        &c,
        &server,
        &[("user", "alice"), ("password", "correct horse battery")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);

    let resp = post_login(
        &c,
        &server,
        &[
            ("token", &token),
            ("user", "alice"),
            ("password", "correct horse battery"),
            ("next", "/console/audit"),
        ],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/console/audit");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(!cookie.contains("correct"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();

    // The audit page, as alice: her sign-in and both refusals, newest first.
    let (st, html) = text_of(
        c.get(server.url("/console/audit"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{html}");
    assert!(html.contains("Sign out"), "{html}");
    let rows: Vec<&str> = html.split("<tr class=\"audit-row\">").skip(1).collect();
    // Oldest: alice added and given a password by the command line, before the service ran.
    assert_eq!(rows.len(), 5, "{html}");
    assert!(
        rows[3].contains("user.passwd") && rows[4].contains("user.add"),
        "{html}"
    );
    assert!(
        rows[0].contains("<td class=\"who\">alice</td>")
            && rows[0].contains("<td class=\"what\">login</td>")
            && rows[0].contains("console sign-in with a password"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("<td class=\"who\">mallory</td>")
            && rows[1].contains("login.refused")
            && rows[1].contains("from 127.0.0.1"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains("<td class=\"who\">alice</td>") && rows[2].contains("login.refused"),
        "{}",
        rows[2]
    );
    let records = audit(&c, &server).await;
    assert_eq!(records[0]["role"], "operator", "{records:?}");
    assert_eq!(records[1]["role"], "none", "{records:?}");
    // The page filters by kind.
    let (_, html) = text_of(
        c.get(server.url("/console/audit?what=login.refused"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        html.matches("<tr class=\"audit-row\">").count(),
        2,
        "{html}"
    );

    // A new password ends the sessions signed in with the old one.
    let (ok, text) = env.users(&["passwd", "alice"], Some("another long one\r\n"));
    assert!(ok, "{text}");
    let resp = c
        .get(server.url("/console/rules"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "back to the login form");
    let resp = post_login(
        &c,
        &server,
        &[
            ("token", &token),
            ("user", "alice"),
            ("password", "another long one"),
        ],
    )
    .await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "the CR of CRLF is not part of it"
    );
}

/// Past an address's budget of failed tries the sign-in form checks nothing: the right password
/// is answered 429 like a wrong one, so the budget bounds how fast passwords can be guessed
/// (before, every try was still checked and only the wrong ones were told to back off). Other
/// addresses are not affected.
#[tokio::test]
async fn past_the_budget_no_sign_in_is_checked() {
    let env = env();
    add_user(&env, "alice", "operator");
    let (ok, text) = env.users(&["passwd", "alice"], Some("correct horse battery\n"));
    assert!(ok, "{text}");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--failed-auth-per-second", "0.01"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let c = client_from("127.0.0.1");
    let token = login_token(&c, &server).await;
    let wrong = [("token", token.as_str()), ("admin_token", "a wrong guess")];
    let mut statuses = Vec::new();
    for _ in 0..51 {
        statuses.push(post_login(&c, &server, &wrong).await.status().as_u16());
    }
    assert!(statuses[..50].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[50], 429, "past the burst of 50");
    let right = [
        ("token", token.as_str()),
        ("user", "alice"),
        ("password", "correct horse battery"),
    ];
    let resp = post_login(&c, &server, &right).await;
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(
        resp.status().as_u16(),
        429,
        "the right password is not even checked"
    );
    let other = client_from("127.0.0.2");
    let resp = post_login(&other, &server, &right).await;
    assert_eq!(resp.status().as_u16(), 303, "another address signs in");
    // A sign-in that succeeds costs none of its address's budget.
    for _ in 0..60 {
        let resp = post_login(&other, &server, &right).await;
        assert_eq!(resp.status().as_u16(), 303);
    }
}

/// Console sign-ins and the admin API's bearer tokens spend budgets of their own: an address
/// that guessed console passwords past its budget still reaches the admin API with its token,
/// and one that guessed tokens past theirs still signs in to the console.
#[tokio::test]
async fn sign_in_guesses_and_token_guesses_do_not_lock_each_other_out() {
    let env = env();
    add_user(&env, "alice", "operator");
    let (ok, text) = env.users(&["passwd", "alice"], Some("correct horse battery\n"));
    assert!(ok, "{text}");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--failed-auth-per-second", "0.01"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let api = |c: &reqwest::Client, token: &str| {
        let req = c.get(server.url("/api/status")).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let right = |token: &str| {
        form(&[
            ("token", token),
            ("user", "alice"),
            ("password", "correct horse battery"),
        ])
    };
    let sign_in = |c: &reqwest::Client, body: String| {
        let req = c
            .post(server.url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // Passwords guessed from one address: its sign-ins are refused unchecked, its token is not.
    let guesser = client_from("127.0.0.1");
    let token = login_token(&guesser, &server).await;
    let wrong = [
        ("token", token.as_str()),
        ("user", "alice"),
        ("password", "guess"),
    ];
    for _ in 0..51 {
        post_login(&guesser, &server, &wrong).await;
    }
    assert_eq!(
        sign_in(&guesser, right(&token)).await,
        429,
        "past the sign-in budget"
    );
    assert_eq!(
        api(&guesser, ADMIN_TOKEN).await,
        200,
        "the admin token still works"
    );
    // Tokens guessed from another: its API calls are refused unchecked, its sign-in is not.
    let other = client_from("127.0.0.2");
    for _ in 0..51 {
        api(&other, "a wrong guess").await;
    }
    assert_eq!(api(&other, ADMIN_TOKEN).await, 429, "past the token budget");
    let token = login_token(&other, &server).await;
    assert_eq!(
        sign_in(&other, right(&token)).await,
        303,
        "the console sign-in still works"
    );
}

/// Console sign-ins and webhook verifications spend budgets of their own: bad signatures sent
/// from an address (a forger behind the same reverse proxy as the people who approve changes)
/// used to spend the budget sign-ins check too, so a right password from that address was
/// answered 429. The other way round, wrong sign-ins do not make the webhook path answer 429.
/// Each budget still locks out what it should.
#[tokio::test]
async fn webhook_failures_and_sign_in_failures_spend_budgets_of_their_own() {
    let env = env();
    add_user(&env, "alice", "operator");
    let (ok, text) = env.users(&["passwd", "alice"], Some("correct horse battery\n"));
    assert!(ok, "{text}");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--failed-auth-per-second", "0.01"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    let hook = |c: &reqwest::Client, secret: &str| {
        c.post(server.url("/hooks/in"))
            .bearer_auth(secret)
            .body(r#"{"kind":"noise"}"#)
            .send()
    };
    let password = |token: &str| {
        [
            ("token", token.to_string()),
            ("user", "alice".to_string()),
            ("password", "correct horse battery".to_string()),
        ]
    };

    // Bad signatures from one address until the webhook path answers 429...
    let forger = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..51 {
        statuses.push(hook(&forger, "forged").await.unwrap().status().as_u16());
    }
    assert!(statuses[..50].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        statuses[50], 429,
        "the webhook budget still locks forgers out"
    );
    // ... and a right sign-in from that address still works.
    let right = password(&login_token(&forger, &server).await);
    let ok: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = post_login(&forger, &server, &ok).await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "failed webhooks do not lock sign-ins out"
    );

    // The other way round: wrong sign-ins from another address until the form answers 429...
    let guesser = client_from("127.0.0.2");
    let token = login_token(&guesser, &server).await;
    let wrong = [("token", token.as_str()), ("admin_token", "a wrong guess")];
    let mut statuses = Vec::new();
    for _ in 0..51 {
        statuses.push(
            post_login(&guesser, &server, &wrong)
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..50].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        statuses[50], 429,
        "the sign-in budget still locks guessers out"
    );
    let right = password(&token);
    let ok: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        post_login(&guesser, &server, &ok).await.status().as_u16(),
        429
    );
    // ... while that address's webhooks are still checked: a bad one is refused (401, not 429)
    // and a right one accepted.
    assert_eq!(
        hook(&guesser, "forged").await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        hook(&guesser, SOURCE_TOKEN)
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
}

/// A burst of password tries (each an Argon2id hash of 19 MiB) runs a few at a time: 40 tries
/// sent at once used to hash 40 passwords at once, 800 MB of memory for anyone who can reach
/// the sign-in page, with nothing signed in.
#[tokio::test]
async fn a_burst_of_password_tries_does_not_fill_the_memory() {
    let env = env();
    add_user(&env, "alice", "operator");
    let (ok, text) = env.users(&["passwd", "alice"], Some("correct horse battery\n"));
    assert!(ok, "{text}");
    let server = Server::start(&env, &[], &[]);
    let c = client_from("127.0.0.1");
    let token = login_token(&c, &server).await;
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = peak();
    let tries = (0..40).map(|i| {
        let (c, server, token) = (c.clone(), &server, token.clone());
        async move {
            let password = format!("wrong guess {i}");
            let pairs = [
                ("token", token.as_str()),
                ("user", "alice"),
                ("password", password.as_str()),
            ];
            post_login(&c, server, &pairs).await.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let grown_mb = peak().saturating_sub(before) / 1024;
    assert!(
        grown_mb < 250,
        "40 password tries at once grew the peak memory by {grown_mb} MB"
    );
}

/// `--trust-user-header` is believed from `--trusted-proxy` addresses only: there the named
/// person gets the role of users.json or of a mapped group (refused without one), and the
/// sign-in is audited; the same header from another address counts for nothing.
#[tokio::test]
async fn a_trusted_proxy_names_people_and_nobody_else_can() {
    let env = env();
    add_user(&env, "carol", "admin");
    let server = Server::start(
        &env,
        &[
            "--admin-require-token",
            "--trust-user-header",
            "X-Forwarded-User",
            "--trusted-proxy",
            "127.0.0.2",
            "--trust-groups-header",
            "X-Forwarded-Groups",
            "--trust-group-role",
            "netops=operator",
            "--trust-group-role",
            "noc=viewer",
        ],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    // A proxy on this host without --admin-require-token is refused at start: every request
    // it passed without the header would be a loopback admin's.
    let out = env
        .cmd(&["serve"])
        .arg("--data")
        .arg(env.path("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--trust-user-header", "X-Forwarded-User"])
        .args(["--trusted-proxy", "127.0.0.0/8"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("needs --admin-require-token"), "{text}");
    let proxy = client_from("127.0.0.2");
    let elsewhere = client_from("127.0.0.1");
    let id = send(&elsewhere, &server, &json!({"severity": "low"})).await;
    let as_person = |c: &reqwest::Client, path: &str, user: &str, groups: &str| {
        c.get(server.url(path))
            .header("x-forwarded-user", user)
            .header("x-forwarded-groups", groups)
    };

    // Through the proxy: bob is an operator by his group; the console lets him replay.
    let (st, body) = text_of(
        as_person(&proxy, "/api/events", "bob", "staff, netops")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, html) = text_of(
        as_person(&proxy, &format!("/console/events/{id}"), "bob", "netops")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{html}");
    assert!(
        html.contains("id=\"replay\""),
        "an operator's button: {html}"
    );
    let resp = proxy
        .post(server.url("/console/replay"))
        .header("x-forwarded-user", "bob")
        .header("x-forwarded-groups", "netops")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("event", &id), ("token", &hidden(&html, "token"))]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    // A viewer group reads but may not replay.
    let (st, body) = text_of(
        proxy
            .post(server.url(&format!("/api/events/{id}/replay")))
            .header("x-forwarded-user", "nina")
            .header("x-forwarded-groups", "noc")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("forbidden_role"), "{body}");
    // carol is pinned in users.json: admin whatever her groups say.
    let (st, _) = text_of(
        as_person(&proxy, "/console/overview", "carol", "noc")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    // Without a role, or with a name the service uses itself: refused, not sent to sign in.
    for (user, groups) in [("dave", "staff"), ("loopback", "netops")] {
        let (st, body) = text_of(
            as_person(&proxy, "/api/events", user, groups)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, 403, "{user}: {body}");
        assert!(body.contains("proxy_user_refused"), "{body}");
        let (st, _) = text_of(as_person(&proxy, "/", user, groups).send().await.unwrap()).await;
        assert_eq!(st, 403, "{user} on the console");
    }

    // The same header from an address that is not the proxy: not trusted.
    let (st, body) = text_of(
        as_person(&elsewhere, "/api/events", "carol", "netops")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401, "{body}");
    let resp = as_person(&elsewhere, "/", "carol", "netops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "sent to sign in");
    let (st, _) = text_of(
        elsewhere
            .post(server.url(&format!("/api/events/{id}/replay")))
            .header("x-forwarded-user", "carol")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);

    // Audited: each person's first sign-in by header (once, not per request; written beside
    // the request, so polled for), and the replay.
    let start = std::time::Instant::now();
    let (records, pairs) = loop {
        let records = audit(&elsewhere, &server).await;
        let pairs = who_what(&records);
        let mut logins: Vec<&str> = pairs
            .iter()
            .filter(|(_, what)| what == "login")
            .map(|(who, _)| who.as_str())
            .collect();
        logins.sort_unstable();
        if logins == ["bob", "carol", "nina"] {
            break (records, pairs);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{records:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        pairs.contains(&("bob".to_string(), "replay".to_string())),
        "{records:?}"
    );
    let carol = records
        .iter()
        .find(|r| r["who"] == "carol")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(carol["role"], "admin");
    assert_eq!(carol["target"], "header");
    assert!(
        carol["comment"]
            .as_str()
            .unwrap()
            .contains("x-forwarded-user from the trusted proxy 127.0.0.2"),
        "{carol}"
    );
}

/// Every role against every console page and button: all may read every page and use Try;
/// replay and re-run need the operator role (403 naming it, and no button shown below it).
#[tokio::test]
async fn every_role_against_every_console_button() {
    let env = env();
    let people = [
        ("vera", "viewer"),
        ("otto", "operator"),
        ("anna", "approver"),
        ("adam", "admin"),
    ];
    let tokens: Vec<String> = people
        .iter()
        .map(|(name, role)| add_user(&env, name, role))
        .collect();
    let server = Server::start(&env, &[], &[]);
    let c = client_from("127.0.0.1");
    let id = send(&c, &server, &json!({"kind": "deploy", "service": "web"})).await;
    let job = format!("{id}:deploy");
    let pages = [
        "/".to_string(),
        format!("/console/events/{id}"),
        "/console/dead-letters".to_string(),
        "/console/rules".to_string(),
        "/console/try".to_string(),
        "/console/overview".to_string(),
        "/console/audit".to_string(),
        "/console/windows".to_string(),
    ];
    for ((name, role), token) in people.iter().zip(&tokens) {
        wait_dead_letter(&c, &server, &job).await;
        let operator = *role != "viewer";
        let mut form_token = String::new();
        for path in &pages {
            let (st, html) = text_of(
                c.get(server.url(path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(st, 200, "{name} reads {path}: {html}");
            if path.starts_with("/console/events/") {
                assert_eq!(html.contains("id=\"replay\""), operator, "{name}: {html}");
            }
            if path == "/console/try" {
                form_token = hidden(&html, "token");
            }
            if path == "/console/dead-letters" {
                assert_eq!(html.contains("class=\"rerun\""), operator, "{name}: {html}");
                assert_eq!(
                    html.contains("re-run needs the operator role"),
                    !operator,
                    "{name}"
                );
            }
        }
        let post = |path: &str, body: String| {
            c.post(server.url(path))
                .bearer_auth(token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        };
        let (st, html) = text_of(
            post(
                "/console/try",
                form(&[
                    ("token", &form_token),
                    ("source", "in"),
                    ("event", r#"{"kind": "deploy"}"#),
                ]),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(st, 200, "{name} tries: {html}");
        let buttons = [
            (
                "/console/replay",
                form(&[("event", &id), ("token", &form_token)]),
            ),
            (
                "/console/rerun",
                form(&[("job", &job), ("token", &form_token)]),
            ),
        ];
        for (path, body) in buttons {
            let (st, html) = text_of(post(path, body).send().await.unwrap()).await;
            if operator {
                assert_eq!(st, 303, "{name} uses {path}: {html}");
            } else {
                assert_eq!(st, 403, "{name} uses {path}: {html}");
                assert!(html.contains("`operator`"), "names the role: {html}");
            }
        }
        let (st, _) = text_of(
            post("/console/logout", form(&[("token", &form_token)]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, 303, "{name} signs out");
    }
    // Every button press that was let through is in the audit trail.
    let v: Value = c
        .get(server.url("/api/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut pairs = who_what(v["audit"].as_array().unwrap());
    pairs.reverse();
    // The users added before the service started come first, from the command line.
    let added: Vec<_> = pairs.drain(..4).collect();
    assert!(
        added
            .iter()
            .all(|(who, what)| who.starts_with("cli@") && what == "user.add"),
        "{added:?}"
    );
    let want: Vec<(String, String)> = ["otto", "anna", "adam"]
        .iter()
        .flat_map(|who| {
            ["replay", "rerun"]
                .iter()
                .map(move |what| (who.to_string(), what.to_string()))
        })
        .collect();
    assert_eq!(pairs, want, "{v}");
}

/// On this host, without `--admin-require-token`: no token at all is the loopback admin, but a
/// token the service does not know (a typo, a removed user's) is refused with 401, as from
/// anywhere. It used to be let in as `loopback`: `rulehook approve` with a mistyped token was
/// recorded as the break-glass admin's decision, and a removed user's token kept working.
#[tokio::test]
async fn an_unknown_token_from_loopback_is_refused_not_taken_for_the_loopback_admin() {
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    let server = Server::start(&env, &[], &[]);
    let anna = add_user(&env, "anna", "approver");
    let otto = add_user(&env, "otto", "operator");
    let (ok, text) = env.users(&["remove", "otto"], None);
    assert!(ok, "{text}");
    let c = client_from("127.0.0.1");
    let call = |token: Option<String>| {
        let mut req = c.get(server.url("/api/jobs"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { text_of(req.send().await.unwrap()).await }
    };
    assert_eq!(call(None).await.0, 200, "loopback without a token");
    assert_eq!(call(Some(anna)).await.0, 200, "a user's token");
    for token in ["rh_not_a_token".to_string(), otto] {
        let (st, body) = call(Some(token.clone())).await;
        assert_eq!(st, 401, "{token}: {body}");
        assert!(body.contains("not known"), "{body}");
    }
}

/// `--admin-require-token` with users and no `RULEHOOK_ADMIN_TOKEN`: the service starts and the
/// users' tokens work (it refused to start, saying nobody could use the admin API, while the
/// users could). With no admin token, no user and no proxy header, it still refuses, saying
/// what would let someone in.
#[tokio::test]
async fn require_token_with_users_and_no_admin_token_starts() {
    let env = env();
    let refused = env
        .cmd(&["serve", "--admin-require-token", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(env.path("data"))
        .env_remove("RULEHOOK_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{text}");
    assert!(
        text.contains("--admin-require-token needs a way in")
            && text.contains("rulehook users add"),
        "{text}"
    );
    let vera = add_user(&env, "vera", "viewer");
    let server = Server::start(&env, &["--admin-require-token"], &[]);
    let c = client_from("127.0.0.1");
    let (st, body) = text_of(c.get(server.url("/api/status")).send().await.unwrap()).await;
    assert_eq!(st, 401, "a token is required: {body}");
    let (st, body) = text_of(
        c.get(server.url("/api/status"))
            .bearer_auth(&vera)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

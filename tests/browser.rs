//! The web console in a real browser: Debian's Chromium driven over WebDriver (chromedriver)
//! by fantoccini. Loads each page and saves a screenshot of it, watches an event sent during
//! the test appear live, reads the false clause on the event page, re-runs a dead letter and
//! sees the new attempt, signs in with the admin token when loopback is not trusted, and checks
//! that script payloads in events stay inert; approves a waiting job on the approvals page.
//!
//! Without `chromium` and `chromedriver` on PATH the test says loudly that it skipped; with
//! `RULEHOOK_BROWSER_TESTS=required` (set by `.ci/run`) their absence fails it. Screenshots go
//! to `target/console-screenshots/`, or to `$RULEHOOK_SCREENSHOTS` (the README's come from
//! `RULEHOOK_SCREENSHOTS=docs/img cargo test --test browser`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console::{ADMIN_TOKEN, XSS_ATTR, XSS_LINK, XSS_SCRIPT, env, send, wait_dead_letter};
use common::{Server, client};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// chromedriver, started by this test on a free loopback port; stopped on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, or `None` (after saying so loudly) when the packages are
/// missing and the browser tests are not required.
async fn browser() -> Option<(Driver, Client)> {
    let driver = which(&["chromedriver"]);
    let chrome = which(&["chromium", "chromium-browser", "google-chrome"]);
    let (Some(driver), Some(chrome)) = (driver, chrome) else {
        let why = "the browser tests need `chromium` and `chromedriver` on PATH \
                   (Debian: apt-get install -y chromium chromium-driver)";
        if std::env::var("RULEHOOK_BROWSER_TESTS").as_deref() == Ok("required") {
            panic!("{why}; RULEHOOK_BROWSER_TESTS=required");
        }
        eprintln!("\n{}\nSKIPPED: {why}\n{}\n", "*".repeat(78), "*".repeat(78));
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let http = client();
    let start = Instant::now();
    loop {
        let ready = http.get(format!("{}/status", driver.url)).send().await;
        if let Ok(r) = ready
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only loopback traffic: any other host goes to a closed local port.
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--no-pings",
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        &format!("--user-data-dir={}", driver._profile.path().display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chrome, "args": args}),
    );
    let session = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    Some((driver, session))
}

fn shots() -> PathBuf {
    let dir = std::env::var_os("RULEHOOK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_path("target/console-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("console-{name}.png")), png).expect("save screenshot");
}

async fn text(b: &Client, css: &str) -> String {
    match b.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e.text().await.expect("text"),
        Err(e) => {
            let url = b
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let html = b.source().await.unwrap_or_default();
            panic!("{css} not on {url} ({e}):\n{html}");
        }
    }
}

/// No payload ran: the flags the payloads would set are unset.
async fn assert_inert(b: &Client, page: &str) {
    let pwned = b
        .execute("return typeof window.pwned;", vec![])
        .await
        .expect("script");
    assert_eq!(pwned, json!("undefined"), "a payload ran on {page}");
    let imgs = b
        .execute("return document.querySelectorAll('img').length;", vec![])
        .await
        .expect("script");
    assert_eq!(imgs, json!(0), "markup from an event on {page}");
}

async fn path_of(b: &Client) -> String {
    let u = b.current_url().await.expect("url");
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

/// Reloads `url` until `css` is on it.
async fn reload_until(b: &Client, url: &str, css: &str) {
    let start = Instant::now();
    loop {
        b.goto(url).await.expect("goto");
        if b.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        let html = b.source().await.unwrap_or_default();
        assert!(
            start.elapsed() < WAIT,
            "{css} never appeared on {url}: {html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_console_in_chromium() {
    let Some((_driver, b)) = browser().await else {
        return;
    };
    let env = env();
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let hostile = send(
        &c,
        &server,
        &json!({"kind": XSS_SCRIPT, "service": XSS_ATTR, "html_url": XSS_LINK, "severity": "low"}),
    )
    .await;
    let failing = send(&c, &server, &json!({"kind": "deploy", "service": "web"})).await;
    let job = format!("{failing}:deploy");
    wait_dead_letter(&c, &server, &job).await;

    // Events: live. A new event appears without a reload.
    b.goto(&server.url("/")).await.expect("goto /");
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#live.on"))
        .await
        .expect("the live stream connects");
    b.execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    let live = send(
        &c,
        &server,
        &json!({"severity": "critical", "service": "db"}),
    )
    .await;
    let row = format!("#events a[href=\"/console/events/{live}\"]");
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&row))
        .await
        .expect("the new event appears live");
    let still = b
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(true), "the page was not reloaded");
    let first = text(&b, "#events tbody tr:first-child").await;
    assert!(
        first.contains("page-oncall") && first.contains("pending"),
        "{first}"
    );
    // The live row says what the event was, and its source has its colour.
    let what = text(&b, "#events tbody tr:first-child td.summary").await;
    assert_eq!(what, "severity=critical service=db");
    let colour = b
        .execute(
            "return getComputedStyle(document.querySelector('#events tbody tr:first-child .source')).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        colour,
        json!("rgb(36, 87, 197)"),
        "the first source's colour"
    );
    assert_inert(&b, "events").await;
    screenshot(&b, "events").await;

    // Event: open the hostile one from the list; the false clause and the value seen.
    b.goto(&server.url("/")).await.unwrap();
    b.find(Locator::Css(&format!(
        "a[href=\"/console/events/{hostile}\"]"
    )))
    .await
    .expect("listed")
    .click()
    .await
    .unwrap();
    let why = text(&b, ".why-not").await;
    let all_why = b.find_all(Locator::Css(".why-not")).await.unwrap();
    let mut whys = Vec::new();
    for w in all_why {
        whys.push(w.text().await.unwrap());
    }
    assert!(!why.is_empty());
    assert!(
        whys.iter().any(|w| w.contains("deploy")
            && w.contains(&format!(
                "`$.kind == \"deploy\"` is false ($.kind is \"{}\")",
                XSS_SCRIPT.replace('"', "\\\"")
            ))),
        "{whys:?}"
    );
    assert!(
        whys.iter()
            .any(|w| w.contains("`$.severity == \"critical\"` is false ($.severity is \"low\")")),
        "{whys:?}"
    );
    let body = text(&b, "#body").await;
    assert!(body.contains(XSS_SCRIPT), "shown as text: {body}");
    assert_inert(&b, "event").await;

    // Dead letters: listed with the error; re-run from the event page; the new attempt shows.
    b.goto(&server.url("/console/dead-letters")).await.unwrap();
    let listed = text(&b, "#dead-letters tbody").await;
    assert!(
        listed.contains("fix-me.sh exited with status 1"),
        "{listed}"
    );
    screenshot(&b, "dead-letters").await;
    let event_url = server.url(&format!("/console/events/{failing}"));
    b.goto(&event_url).await.unwrap();
    assert!(
        text(&b, ".attempt.failed")
            .await
            .contains("deploy target unreachable")
    );
    std::fs::write(env.path("fixed"), "").unwrap();
    b.find(Locator::Css("button.rerun"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&b, ".notice").await.contains("Re-run queued"));
    assert_eq!(
        path_of(&b).await,
        format!("/console/events/{failing}?done=rerun")
    );
    reload_until(&b, &event_url, ".attempt.ok").await;
    let ok = text(&b, ".attempt.ok").await;
    assert!(ok.contains("deploying web"), "{ok}");
    assert_eq!(b.find_all(Locator::Css(".attempt")).await.unwrap().len(), 2);
    screenshot(&b, "event").await;

    // Rules, Try, Overview.
    b.goto(&server.url("/console/rules")).await.unwrap();
    assert!(text(&b, "#rules").await.contains("page-oncall"));
    assert!(text(&b, "#sources").await.contains("/hooks/in"));
    assert_inert(&b, "rules").await;
    screenshot(&b, "rules").await;

    b.goto(&server.url("/console/try")).await.unwrap();
    b.find(Locator::Css("#try-source"))
        .await
        .unwrap()
        .select_by_value("in")
        .await
        .unwrap();
    b.find(Locator::Css("#try-event"))
        .await
        .unwrap()
        .send_keys(&json!({"kind": "deploy", "service": XSS_ATTR}).to_string())
        .await
        .unwrap();
    b.find(Locator::Css("#try-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let report = text(&b, "#try-report").await;
    assert!(report.contains("match ops / deploy"), "{report}");
    assert!(report.contains("fix-me.sh"), "{report}");
    assert!(report.contains("$.severity does not exist"), "{report}");
    assert_inert(&b, "try").await;
    screenshot(&b, "try").await;

    b.goto(&server.url("/console/overview")).await.unwrap();
    let count = text(&b, "#events-hour").await;
    assert!(count.starts_with('3') || count.starts_with('4'), "{count}");
    b.find(Locator::Css("#by-source svg rect"))
        .await
        .expect("a bar");
    screenshot(&b, "overview").await;

    // Sign-in when loopback is not trusted.
    let env2 = common::console::env();
    let guarded = Server::start(
        &env2,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN_TOKEN.to_string())],
    );
    b.goto(&guarded.url("/console/rules")).await.unwrap();
    assert_eq!(path_of(&b).await, "/console/login?next=/console/rules");
    b.find(Locator::Css("#admin-token"))
        .await
        .unwrap()
        .send_keys("not-it")
        .await
        .unwrap();
    b.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        text(&b, "#login-error")
            .await
            .contains("neither the admin token nor a user's token")
    );
    screenshot(&b, "login").await;
    b.find(Locator::Css("#admin-token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    b.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&b, "#rules").await.contains("deploy"));
    assert_eq!(path_of(&b).await, "/console/rules");
    let cookies = b.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(cookies, json!(""), "the session cookie is HttpOnly");
    b.find(Locator::Css(".signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text(&b, "#sign-in").await; // the login page has loaded
    assert!(path_of(&b).await.starts_with("/console/login"));
    b.goto(&guarded.url("/")).await.unwrap();
    assert!(
        path_of(&b).await.starts_with("/console/login"),
        "signed out"
    );

    b.close().await.expect("close the browser");
}

/// The approvals page in Chromium: the waiting job is listed with the action that would run;
/// a comment and the Approve button (its form token included by the page) decide; the job runs
/// and the page shows who approved, when and why.
#[tokio::test]
async fn the_approvals_page_in_chromium() {
    let Some((_driver, b)) = browser().await else {
        return;
    };
    let env = common::Env::new();
    env.script("ran.sh", "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/ran.log\"\n");
    env.rulebook(
        "r.yml",
        r#"sources:
  - { name: in, kind: bearer, secret: in-token }
rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval: { timeout: 10m }
    actions:
      - run_script: { script: ran.sh, args: ["{{ event.port }}"] }
"#,
    );
    let server = Server::start(&env, &["--approval-check", "200ms"], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "eth7"})).await;
    reload_until(&b, &server.url("/console/approvals"), "form.decide").await;
    let section = text(&b, "section.approval").await;
    assert!(
        section.contains("shut-port") && section.contains(&event),
        "{section}"
    );
    assert!(
        section.contains("eth7"),
        "the action that would run: {section}"
    );
    screenshot(&b, "approvals").await;
    b.find(Locator::Css("form.decide input[name=comment]"))
        .await
        .expect("comment field")
        .send_keys("CHG-7 ok")
        .await
        .expect("type");
    b.find(Locator::Css("form.decide button.approve"))
        .await
        .expect("approve button")
        .click()
        .await
        .expect("click");
    let notice = text(&b, "p.notice").await;
    assert!(notice.starts_with("Approved"), "{notice}");
    let decision = text(&b, "p.decision").await;
    assert!(
        decision.starts_with("approved by loopback at ") && decision.ends_with(": CHG-7 ok"),
        "{decision}"
    );
    assert!(path_of(&b).await.contains("done=approved"));
    let start = Instant::now();
    while env.lines("ran.log").is_empty() {
        assert!(start.elapsed() < WAIT, "the approved job never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.lines("ran.log"), vec!["eth7"]);
}

//! At-least-once under a crash, and no lost work under overload.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Env, Server, client, post_signed};

fn env_with(script: &str) -> Env {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        r#"
sources:
  - { name: ipf, kind: ipfabric, secret: s3cret }
rules:
  - name: work
    condition: '$.status == "completed"'
    actions:
      - run_script: { script: work.sh, args: ["{{ event.n }}"], timeout: 30s }
"#,
    );
    env.script("work.sh", script);
    env
}

#[tokio::test]
async fn kill_9_loses_no_accepted_event() {
    // Slow scripts: most are queued or running when the server dies.
    let env = env_with(
        "#!/bin/sh\necho \"start $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/starts.txt\"\nsleep 0.3\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/done.txt\"\n",
    );
    let mut server = Server::start(&env, &["--concurrency", "2"], &[]);
    let c = client();
    let mut accepted = Vec::new();
    for n in 0..20 {
        let body = format!(r#"{{"status":"completed","n":{n}}}"#);
        let (st, resp) = post_signed(
            &c,
            &server.url("/hooks/ipf"),
            "ipfabric",
            "s3cret",
            body.as_bytes(),
        )
        .await;
        assert_eq!(st, 202);
        accepted.push(resp["id"].as_str().unwrap().to_string());
    }
    env.wait_lines("done.txt", 1, Duration::from_secs(10));
    server.kill9();
    let done_before = env.lines("done.txt").len();
    assert!(
        done_before < accepted.len(),
        "the crash came too late to test anything"
    );

    let _server = Server::start(&env, &["--concurrency", "4"], &[]);
    // At least once: a script running at the crash may have completed and then run again, so
    // wait for every event to be covered rather than for a line count.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let finished: HashSet<String> = env
            .lines("done.txt")
            .iter()
            .filter_map(|l| l.split(' ').next())
            .filter_map(|run| run.split(':').next())
            .map(str::to_string)
            .collect();
        if finished.len() >= accepted.len() || std::time::Instant::now() > deadline {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in &accepted {
        assert!(
            finished.contains(id),
            "event {id} was accepted but its script never completed"
        );
    }
    // Runs restarted after the crash kept their run id (at least once, same key).
    let starts = env.lines("starts.txt");
    let ids: HashSet<&str> = starts
        .iter()
        .map(|l| l.trim_start_matches("start "))
        .collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "every run id is <event>:<rule>:<index>, stable across restarts"
    );
}

#[tokio::test]
async fn a_burst_is_fully_processed_within_the_concurrency_limit() {
    const EVENTS: usize = 2000;
    const LIMIT: usize = 4;
    // Each script records its start and end (ns); overlap is computed afterwards.
    let env = env_with(
        "#!/bin/sh\necho \"b $(date +%s%N)\" >> \"$OUT_DIR/spans.txt\"\nsleep 0.005\necho \"e $(date +%s%N)\" >> \"$OUT_DIR/spans.txt\"\necho \"$1\" >> \"$OUT_DIR/done.txt\"\n",
    );
    let server = Server::start(&env, &["--concurrency", &LIMIT.to_string()], &[]);
    let c = client();
    let url = server.url("/hooks/ipf");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move {
            let mut ok = 0;
            for i in (worker..EVENTS).step_by(32) {
                let body = format!(r#"{{"status":"completed","n":{i}}}"#);
                let (st, _) = post_signed(&c, &url, "ipfabric", "s3cret", body.as_bytes()).await;
                assert_eq!(st, 202);
                ok += 1;
            }
            ok
        });
    }
    let mut sent = 0;
    while let Some(r) = tasks.join_next().await {
        sent += r.unwrap();
    }
    assert_eq!(sent, EVENTS);
    let done = env.wait_lines("done.txt", EVENTS, Duration::from_secs(180));
    let distinct: HashSet<&String> = done.iter().collect();
    assert_eq!(distinct.len(), EVENTS, "every accepted event's script ran");
    assert_eq!(done.len(), EVENTS, "and ran once");

    let mut spans: Vec<(u128, i32)> = env
        .lines("spans.txt")
        .iter()
        .filter_map(|l| {
            let (k, t) = l.split_once(' ')?;
            Some((t.parse().ok()?, if k == "b" { 1 } else { -1 }))
        })
        .collect();
    // Ends sort before begins at the same instant.
    spans.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in spans {
        now += d;
        max = max.max(now);
    }
    assert!(
        max as usize <= LIMIT,
        "{max} scripts ran at once; the limit is {LIMIT}"
    );
    assert!(max >= 2, "the burst should have used the pool in parallel");
}

//! The shipped rulebooks, scripts and sample events, served for real: each example does what
//! its rulebook says.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{client, post_signed, repo_path};

#[tokio::test]
async fn shipped_examples_work_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = |n: &str| tmp.path().join(n).display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .current_dir(repo_path(""))
        .env("REMEDIATION_LOG", logs("remediation.log"))
        .env("ONBOARD_LOG", logs("onboard.log"))
        .env("CATALYST_LOG", logs("catalyst.log"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
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
    let _ = child.kill();
    let _ = child.wait();
}

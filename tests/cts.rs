//! The JSONPath Compliance Test Suite (RFC 9535), run against the engine rulehook's conditions
//! compile with, so a dependency upgrade that breaks conformance fails the build.
//! Data: tests/data/jsonpath-cts.json (see tests/data/jsonpath-cts.NOTICE).

use jsonpath_rfc9535::JsonPath;
use serde_json::Value;

#[test]
fn jsonpath_compliance_test_suite() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/jsonpath-cts.json"
    ))
    .expect("CTS file");
    let cts: Value = serde_json::from_str(&text).expect("CTS is JSON");
    let cases = cts["tests"].as_array().expect("tests array");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let selector = case["selector"].as_str().unwrap_or("");
        let parsed = JsonPath::parse(selector);
        if case["invalid_selector"] == true {
            if parsed.is_ok() {
                failures.push(format!("{name}: `{selector}` must be rejected"));
            }
            continue;
        }
        let Ok(path) = parsed else {
            failures.push(format!("{name}: `{selector}` rejected: {:?}", parsed.err()));
            continue;
        };
        let got: Vec<Value> = path
            .query_values(&case["document"])
            .into_iter()
            .cloned()
            .collect();
        let got = Value::Array(got);
        let ok = match (case.get("result"), case.get("results")) {
            (Some(r), _) => &got == r,
            (None, Some(Value::Array(alts))) => alts.iter().any(|r| &got == r),
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: `{selector}` gave {got}"));
        }
    }
    assert!(cases.len() >= 700, "the suite has {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} CTS cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

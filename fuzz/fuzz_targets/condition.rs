//! Condition compile and evaluation: an arbitrary condition text and an arbitrary JSON body
//! (split at the first NUL byte). Must never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehook::domain::EventDoc;
use rulehook::rules::condition::{Expr, Query};

fuzz_target!(|data: &[u8]| {
    let (text, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    if let Ok(expr) = Expr::compile(text) {
        let doc = EventDoc::new(body.clone());
        let _ = expr.eval(&doc);
        let _ = expr.required_equalities().count();
    }
    if let Ok(q) = Query::compile(text) {
        let _ = q.select(&body);
    }
});

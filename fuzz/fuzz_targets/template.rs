//! Template compile and render: an arbitrary template (inline, plain and as a JSON body) rendered
//! against an arbitrary JSON event (split at the first NUL byte). Must never panic or hang
//! (rendering is fuel-limited).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulehook::templates::{JsonRoot, Templates, json_value};

fuzz_target!(|data: &[u8]| {
    let (src, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let mut t = Templates::default();
    let ctx = minijinja::context! {
        event => json_value(JsonRoot::Value(std::sync::Arc::new(body.clone()))),
        meta => minijinja::Value::from_serialize(&body),
    };
    if let Ok(text) = t.inline("t".into(), src) {
        let _ = t.render(&text, &ctx);
    }
    if let Ok(text) = t.inline_json("j".into(), src) {
        if let Ok(out) = t.render(&text, &ctx) {
            let _ = serde_json::from_str::<serde_json::Value>(&out);
        }
    }
});

//! House rules that a reader would otherwise check by hand: no function in `src/` longer than
//! 120 lines (long functions mix concerns and hide their state machines).

use std::path::Path;

const MAX_LINES: usize = 120;

/// Every function (with a body) of `text` longer than `MAX_LINES`: (first line, name, length).
/// `rustfmt`'s layout is assumed: a function ends at the first `}` at its own indentation.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("const ").unwrap_or(rest);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(sig) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends with `{` (a body) or `;` (a declaration in a trait).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            let len = end - i + 1;
            if len > MAX_LINES {
                out.push((i + 1, name, len));
            }
        }
    }
    out
}

fn walk(dir: &Path, found: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, found);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).expect("a source file is readable");
            for (line, name, len) in long_functions(&text) {
                found.push(format!("{}:{line}: fn {name} is {len} lines", p.display()));
            }
        }
    }
}

#[test]
fn no_function_is_longer_than_120_lines() {
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "split these functions (at most {MAX_LINES} lines each):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_a_long_function_and_skips_declarations() {
    let mut text = String::from("trait T {\n    fn declared(&self);\n}\n\npub async fn long() {\n");
    for _ in 0..MAX_LINES {
        text.push_str("    step();\n");
    }
    text.push_str("}\n\nfn short() {\n    one();\n}\n");
    assert_eq!(
        long_functions(&text),
        vec![(5, "long".to_string(), MAX_LINES + 2)]
    );
}

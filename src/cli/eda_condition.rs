//! ansible-rulebook's condition language translated to rulehook's JSONPath conditions, for
//! `rulehook import ansible-rulebook`. A condition is parsed whole (or refused whole, with the
//! reason): `and`/`or`/`not`, comparisons, `is defined`, `in`, `contains`,
//! `is search/match/regex(…)`, `is select(…)`/`is selectattr(…)`.
//!
//! `base` says where the event's fields are: `event.payload.x` is `$.x` for a webhook source
//! (EDA nests the body under `payload`); for Alertmanager, `event.alert.x` is each element of
//! `$.alerts`, and the whole condition becomes a filter over them.

use std::fmt::Write as _;

/// How EDA's `event` maps onto the rulehook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `event.payload` is `$` (ansible.eda.webhook).
    Payload,
    /// `event.alert` is one element of `$.alerts` (ansible.eda.alertmanager).
    Alert,
    /// `event` is `$`.
    Plain,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(&'static str),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    Assign,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        if ch == '"' || ch == '\'' {
            let mut text = String::new();
            i += 1;
            while i < c.len() && c[i] != ch {
                if c[i] == '\\' && i + 1 < c.len() {
                    i += 1;
                    match c[i] {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        other if other == ch || other == '\\' => text.push(other),
                        // A regular expression's escape (`\d`): kept as written.
                        other => {
                            text.push('\\');
                            text.push(other);
                        }
                    }
                } else {
                    text.push(c[i]);
                }
                i += 1;
            }
            if i >= c.len() {
                return Err("a string is not closed".into());
            }
            i += 1;
            out.push(Tok::Str(text));
            continue;
        }
        if ch.is_ascii_digit() {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(c[start..i].iter().collect()));
            continue;
        }
        if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
            continue;
        }
        let two: String = c[i..(i + 2).min(c.len())].iter().collect();
        let op = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = op {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        out.push(match ch {
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBrack,
            ']' => Tok::RBrack,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '=' => Tok::Assign,
            '-' => {
                // A negative number.
                let start = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1;
                }
                if i == start + 1 {
                    return Err("arithmetic (`-`) has no JSONPath equivalent".into());
                }
                out.push(Tok::Num(c[start..i].iter().collect()));
                continue;
            }
            '+' | '*' | '/' | '%' => {
                return Err(format!("arithmetic (`{ch}`) has no JSONPath equivalent"));
            }
            other => return Err(format!("unexpected `{other}`")),
        });
        i += 1;
    }
    Ok(out)
}

/// One operand: a path into the event, or a literal (JSON text).
#[derive(Debug, Clone)]
enum Operand {
    Path(String),
    Lit(String),
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
    base: Base,
    /// `@` instead of `$` (inside an Alertmanager filter).
    root: &'static str,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<String, String> {
        let mut parts = vec![self.and()?];
        while self.eat_word("or") {
            parts.push(self.and()?);
        }
        Ok(join(parts, " || "))
    }
    fn and(&mut self) -> Result<String, String> {
        let mut parts = vec![self.not()?];
        while self.eat_word("and") {
            parts.push(self.not()?);
        }
        Ok(join(parts, " && "))
    }
    fn not(&mut self) -> Result<String, String> {
        if self.eat_word("not") {
            let inner = self.not()?;
            return Ok(format!("!({inner})"));
        }
        self.test()
    }

    /// A comparison or test, or a parenthesized expression.
    fn test(&mut self) -> Result<String, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let inner = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(format!("({inner})"));
        }
        let left = self.operand()?;
        match self.peek().cloned() {
            Some(Tok::Op(op)) => {
                self.i += 1;
                let right = self.operand()?;
                Ok(format!("{} {op} {}", text(&left), text(&right)))
            }
            Some(Tok::Ident(w)) if w == "is" => {
                self.i += 1;
                let negated = self.eat_word("not");
                let t = self.is_test(&left)?;
                Ok(if negated { format!("!({t})") } else { t })
            }
            Some(Tok::Ident(w)) if w == "in" => {
                self.i += 1;
                self.membership(&left)
            }
            Some(Tok::Ident(w)) if w == "not" => {
                self.i += 1;
                if self.eat_word("in") {
                    Ok(format!("!({})", self.membership(&left)?))
                } else if self.eat_word("contains") {
                    Ok(format!("!{}", self.contains(&left)?))
                } else {
                    Err("expected `not in` or `not contains`".into())
                }
            }
            Some(Tok::Ident(w)) if w == "contains" => {
                self.i += 1;
                self.contains(&left)
            }
            _ => match left {
                // A bare path: truthy. EDA treats it as a boolean; existence is the nearest.
                Operand::Path(p) => Err(format!(
                    "a bare `{p}` (truthiness) has no exact JSONPath form; write `{p} == true` or `is defined`"
                )),
                Operand::Lit(l) => Ok(l),
            },
        }
    }

    fn membership(&mut self, left: &Operand) -> Result<String, String> {
        let items = self.list()?;
        let l = text(left);
        let parts: Vec<String> = items.iter().map(|i| format!("{l} == {i}")).collect();
        Ok(format!("({})", parts.join(" || ")))
    }

    fn contains(&mut self, left: &Operand) -> Result<String, String> {
        let Operand::Path(p) = left else {
            return Err("`contains` needs a path on its left".into());
        };
        let item = text(&self.operand()?);
        Ok(format!("{p}[?@ == {item}]"))
    }

    /// `is defined`, `is search(…)`, `is match(…)`, `is regex(…)`, `is select(…)`,
    /// `is selectattr(…)`.
    fn is_test(&mut self, left: &Operand) -> Result<String, String> {
        let Some(Tok::Ident(name)) = self.next() else {
            return Err("expected a test after `is`".into());
        };
        let Operand::Path(p) = left else {
            return Err(format!("`is {name}` needs a path on its left"));
        };
        match name.as_str() {
            "defined" => Ok(p.clone()),
            "search" | "regex" | "match" => {
                let (pattern, ignorecase) = self.pattern_args()?;
                let pattern = if ignorecase {
                    case_insensitive(&pattern)
                } else {
                    pattern
                };
                Ok(if name == "match" {
                    // Python's re.match anchors at the start only.
                    format!("match({p}, {})", json_str(&format!("({pattern}).*")))
                } else {
                    format!("search({p}, {})", json_str(&pattern))
                })
            }
            "select" => {
                self.expect(Tok::LParen)?;
                let Some(Tok::Str(op)) = self.next() else {
                    return Err("select takes an operator string first".into());
                };
                self.expect(Tok::Comma)?;
                let v = self.operand()?;
                self.expect(Tok::RParen)?;
                Ok(format!("{p}[?{}]", self.compare("@", &op, &v)?))
            }
            "selectattr" => {
                self.expect(Tok::LParen)?;
                let Some(Tok::Str(attr)) = self.next() else {
                    return Err("selectattr takes an attribute name first".into());
                };
                self.expect(Tok::Comma)?;
                let Some(Tok::Str(op)) = self.next() else {
                    return Err("selectattr takes an operator string second".into());
                };
                self.expect(Tok::Comma)?;
                let v = self.operand()?;
                self.expect(Tok::RParen)?;
                let at = format!(
                    "@{}",
                    path_segments(&attr.split('.').map(String::from).collect::<Vec<_>>())
                );
                Ok(format!("{p}[?{}]", self.compare(&at, &op, &v)?))
            }
            other => Err(format!("the test `is {other}` has no JSONPath equivalent")),
        }
    }

    /// A `select`/`selectattr` operator applied to `at`.
    fn compare(&self, at: &str, op: &str, v: &Operand) -> Result<String, String> {
        let v = text(v);
        Ok(match op {
            "==" | "!=" | "<" | "<=" | ">" | ">=" => format!("{at} {op} {v}"),
            "search" | "regex" => format!("search({at}, {v})"),
            "match" => format!("match({at}, {v})"),
            other => {
                return Err(format!(
                    "the operator `{other}` of select/selectattr is not carried over"
                ));
            }
        })
    }

    /// `("pattern")` or `("pattern", ignorecase=true)`.
    fn pattern_args(&mut self) -> Result<(String, bool), String> {
        self.expect(Tok::LParen)?;
        let Some(Tok::Str(pattern)) = self.next() else {
            return Err("a regular expression string is expected".into());
        };
        let mut ignorecase = false;
        while self.peek() == Some(&Tok::Comma) {
            self.i += 1;
            let Some(Tok::Ident(k)) = self.next() else {
                return Err("expected a named argument".into());
            };
            self.expect(Tok::Assign)?;
            let v = self.next();
            match (k.as_str(), v) {
                ("ignorecase", Some(Tok::Ident(b))) => ignorecase = b.eq_ignore_ascii_case("true"),
                (other, _) => return Err(format!("the option `{other}=` is not carried over")),
            }
        }
        self.expect(Tok::RParen)?;
        Ok((pattern, ignorecase))
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        self.expect(Tok::LBrack)?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(&Tok::RBrack) {
                self.i += 1;
                return Ok(items);
            }
            match self.operand()? {
                Operand::Lit(l) => items.push(l),
                Operand::Path(_) => return Err("a list of literals is expected after `in`".into()),
            }
            if self.peek() == Some(&Tok::Comma) {
                self.i += 1;
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Operand::Lit(json_str(&s))),
            Some(Tok::Num(n)) => Ok(Operand::Lit(n)),
            Some(Tok::Ident(w)) => match w.as_str() {
                "true" | "True" => Ok(Operand::Lit("true".into())),
                "false" | "False" => Ok(Operand::Lit("false".into())),
                "null" | "None" => Ok(Operand::Lit("null".into())),
                "event" => self.path(),
                "events" | "facts" | "fact" | "vars" => Err(format!(
                    "`{w}.…` (other events, facts or variables) is not carried over"
                )),
                other => Err(format!("`{other}` is not an event field")),
            },
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// The rest of `event.a.b[0]["c"]`, as a JSONPath query.
    fn path(&mut self) -> Result<Operand, String> {
        let mut segs = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.i += 1;
                    match self.next() {
                        Some(Tok::Ident(n)) => segs.push(n),
                        other => return Err(format!("expected a field name, found {other:?}")),
                    }
                }
                Some(Tok::LBrack) => {
                    self.i += 1;
                    match self.next() {
                        Some(Tok::Str(s)) => segs.push(s),
                        Some(Tok::Num(n)) => segs.push(format!("\u{0}{n}")),
                        other => return Err(format!("unexpected {other:?} in brackets")),
                    }
                    self.expect(Tok::RBrack)?;
                }
                _ => break,
            }
        }
        let rest: &[String] = match (self.base, segs.first().map(String::as_str)) {
            (Base::Payload, Some("payload")) => &segs[1..],
            (Base::Alert, Some("alert")) => &segs[1..],
            (Base::Payload | Base::Alert, Some("meta")) => {
                return Err(
                    "`event.meta…` (headers, endpoint) is not part of the event in rulehook".into(),
                );
            }
            (Base::Alert, _) => {
                return Err("an Alertmanager event's fields are under `event.alert`".into());
            }
            // Events posted by `post_event` are not nested under `payload`.
            (Base::Payload | Base::Plain, _) => &segs,
        };
        Ok(Operand::Path(format!(
            "{}{}",
            self.root,
            path_segments(rest)
        )))
    }
}

/// `.a['b c'][0]` for the segments (an index is marked with a leading NUL).
fn path_segments(segs: &[String]) -> String {
    let mut out = String::new();
    for s in segs {
        if let Some(n) = s.strip_prefix('\u{0}') {
            let _ = write!(out, "[{n}]");
        } else if !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
        {
            let _ = write!(out, ".{s}");
        } else {
            let _ = write!(out, "[{}]", json_str(s));
        }
    }
    out
}

fn text(o: &Operand) -> String {
    match o {
        Operand::Path(p) | Operand::Lit(p) => p.clone(),
    }
}

fn join(parts: Vec<String>, sep: &str) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        parts.join(sep)
    }
}

/// A pattern matching the same text whatever its case: each ASCII letter outside a bracket
/// class or an escape becomes `[xX]` (I-Regexp has no flags).
fn case_insensitive(p: &str) -> String {
    let mut out = String::new();
    let mut chars = p.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '[' => {
                in_class = true;
                out.push(c);
            }
            ']' => {
                in_class = false;
                out.push(c);
            }
            c if c.is_ascii_alphabetic() && !in_class => {
                let _ = write!(
                    out,
                    "[{}{}]",
                    c.to_ascii_lowercase(),
                    c.to_ascii_uppercase()
                );
            }
            c => out.push(c),
        }
    }
    out
}

/// Translates one EDA condition; `Err` says why it cannot be.
pub fn translate(condition: &str, base: Base) -> Result<String, String> {
    let tokens = lex(condition)?;
    let mut p = Parser {
        t: &tokens,
        i: 0,
        base,
        root: if base == Base::Alert { "@" } else { "$" },
    };
    let out = p.or()?;
    if p.i < tokens.len() {
        return Err(format!("unexpected {:?}", tokens[p.i]));
    }
    Ok(if base == Base::Alert {
        format!("$.alerts[?{out}]")
    } else {
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        translate(s, Base::Payload).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn translates_the_documented_forms() {
        assert_eq!(
            t(r#"event.payload.message == "Ansible is super cool""#),
            r#"$.message == "Ansible is super cool""#
        );
        assert_eq!(
            t("event.payload.i > 5 and event.payload.j <= -2.5"),
            "$.i > 5 && $.j <= -2.5"
        );
        assert_eq!(
            t("event.payload.a == 1 or not (event.payload.b == 'x')"),
            r#"$.a == 1 || !(($.b == "x"))"#
        );
        assert_eq!(t("event.payload.x is defined"), "$.x");
        assert_eq!(t("event.payload.x is not defined"), "!($.x)");
        assert_eq!(
            t("event.payload.i in [1, 'two']"),
            r#"($.i == 1 || $.i == "two")"#
        );
        assert_eq!(t("event.payload.i not in [1]"), "!(($.i == 1))");
        assert_eq!(
            t("event.payload.tags contains 'core'"),
            r#"$.tags[?@ == "core"]"#
        );
        assert_eq!(
            t("event.payload.tags not contains 'core'"),
            r#"!$.tags[?@ == "core"]"#
        );
        assert_eq!(
            t(r#"event.payload.url is search("example.com")"#),
            r#"search($.url, "example.com")"#
        );
        assert_eq!(
            t(r#"event.payload.url is match("https")"#),
            r#"match($.url, "(https).*")"#
        );
        assert_eq!(
            t(r#"event.payload.m is search("up", ignorecase=true)"#),
            r#"search($.m, "[uU][pP]")"#
        );
        assert_eq!(
            t("event.payload.levels is select('>=', 10)"),
            "$.levels[?@ >= 10]"
        );
        assert_eq!(
            t("event.payload.people is selectattr('person.age', '>', 30)"),
            "$.people[?@.person.age > 30]"
        );
        assert_eq!(
            t(r#"event.payload["a-b"][0] == true"#),
            r#"$["a-b"][0] == true"#
        );
        assert_eq!(t("event.payload.a == event.payload.b"), "$.a == $.b");
    }

    #[test]
    fn alertmanager_conditions_filter_the_alerts() {
        assert_eq!(
            translate(
                r#"event.alert.labels.job == "node" and event.alert.status == "firing""#,
                Base::Alert
            )
            .unwrap(),
            r#"$.alerts[?@.labels.job == "node" && @.status == "firing"]"#
        );
    }

    #[test]
    fn says_why_it_cannot() {
        for (c, why) in [
            ("event.payload.i + 1 == 2", "arithmetic"),
            ("event.payload.x == vars.y", "not carried over"),
            ("event.meta.headers.x == 'y'", "event.meta"),
            ("event.payload.flag", "truthiness"),
            ("event.payload.x is even", "is even"),
        ] {
            let e = translate(c, Base::Payload).unwrap_err();
            assert!(e.contains(why), "{c}: {e}");
        }
    }
}

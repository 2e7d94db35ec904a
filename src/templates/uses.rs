//! What a template calls by name — filters (`| default(…)`), tests (`is defined`) and the
//! templates it includes — found by scanning its tags. minijinja looks filters, tests and
//! included files up only when it renders, so a misspelt filter (`| defualt('-')`) or a missing
//! include compiled fine and failed every event at run time; `rulehook check` asks here instead.

/// How a template uses a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Filter,
    Test,
    /// `include`, `import`, `from … import`, `extends` of a template file named by a string.
    Template,
}

/// A token inside a `{{ … }}` or `{% … %}` tag.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Name(&'a str),
    Str(&'a str),
    Punct(char),
}

/// The names `source` uses, in order, each once per kind.
pub fn uses(source: &str) -> Vec<(Use, String)> {
    let mut out: Vec<(Use, String)> = Vec::new();
    let mut rest = source;
    let mut raw = false;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open..];
        let close = match after.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                rest = &rest[open + 1..];
                continue;
            }
        };
        let body_start = open + 2;
        let Some(len) = tag_end(&rest[body_start..], close) else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        rest = &rest[body_start + len + close.len()..];
        if close == "#}" {
            continue;
        }
        let tokens = tokenize(body.trim_matches(|c| c == '-' || c == '+'));
        if close == "%}" {
            match tokens.first() {
                Some(Token::Name("raw")) => raw = true,
                Some(Token::Name("endraw")) => raw = false,
                _ => {}
            }
        }
        if raw {
            continue;
        }
        for u in tag_uses(&tokens, close == "%}") {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// Where `close` ends a tag body, skipping quoted strings.
fn tag_end(body: &str, close: &str) -> Option<usize> {
    crate::text::outside_quotes(body)
        .find(|&(i, _)| body[i..].starts_with(close))
        .map(|(i, _)| i)
}

fn tokenize(body: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '"' || c == '\'' {
            let mut end = body.len();
            let mut escaped = false;
            for (j, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    end = j;
                    break;
                }
            }
            out.push(Token::Str(&body[i + 1..end.max(i + 1)]));
        } else if c.is_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Name(&body[i..end]));
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|&(_, d)| d.is_alphanumeric() || d == '.')
            {
                chars.next();
            }
        } else {
            out.push(Token::Punct(c));
        }
    }
    out
}

/// The uses in one tag's tokens (`statement`: a `{% … %}` tag).
fn tag_uses(tokens: &[Token<'_>], statement: bool) -> Vec<(Use, String)> {
    let mut out = Vec::new();
    if statement {
        match tokens {
            [
                Token::Name("include" | "import" | "extends" | "from"),
                Token::Str(file),
                ..,
            ] => {
                out.push((Use::Template, file.to_string()));
            }
            [Token::Name("filter"), Token::Name(f), ..] => out.push((Use::Filter, f.to_string())),
            _ => {}
        }
    }
    for (k, t) in tokens.iter().enumerate() {
        // `.` before a name makes it an attribute (`x.is`), not an operator.
        let attribute = k > 0 && tokens[k - 1] == Token::Punct('.');
        match t {
            Token::Punct('|') => {
                if let Some(Token::Name(f)) = tokens.get(k + 1) {
                    out.push((Use::Filter, f.to_string()));
                }
            }
            Token::Name("is") if !attribute => {
                let next = match tokens.get(k + 1) {
                    Some(Token::Name("not")) => tokens.get(k + 2),
                    other => other,
                };
                if let Some(Token::Name(test)) = next {
                    out.push((Use::Test, test.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(source: &str) -> Vec<(Use, String)> {
        uses(source)
    }

    #[test]
    fn filters_tests_and_includes_are_found_outside_strings_and_comments() {
        let found = names(
            "{{ event.a | default('x | nope') | upper }} {% if event.b is not defined %}{% include 'part.j2' %}{% endif %}\
             {# {{ x | commented }} #}{%- for i in xs | sort -%}{{ i is odd }}{% endfor %}\
             {% raw %}{{ x | raw_inside }}{% endraw %}{{ x.is }}{% filter title %}t{% endfilter %}",
        );
        assert_eq!(
            found,
            vec![
                (Use::Filter, "default".to_string()),
                (Use::Filter, "upper".to_string()),
                (Use::Test, "defined".to_string()),
                (Use::Template, "part.j2".to_string()),
                (Use::Filter, "sort".to_string()),
                (Use::Test, "odd".to_string()),
                (Use::Filter, "title".to_string()),
            ]
        );
    }

    #[test]
    fn an_unclosed_tag_ends_the_scan() {
        assert!(names("{{ x | upper").is_empty());
        assert_eq!(
            names("a { b } {{ x|trim }}"),
            vec![(Use::Filter, "trim".to_string())]
        );
    }
}

//! The one minijinja environment every action string and `templates/` file renders in.
//!
//! Strict undefined: a missing variable is an error, not an empty string. Every template is
//! compiled when the rulebooks load, so a syntax error fails `rulehook check`, not an event.

mod url;
mod uses;

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// minijinja's filters and tests, the candidates for "did you mean" (each offered only when
/// the environment has it).
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
];
const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// CPU budget of one render, so a template loop cannot stall a worker.
const FUEL: u64 = 200_000;

/// The escaping of a body meant as JSON that is not a `.json` file (an inline `body`, or a
/// `body_template` of another name sent as JSON): each string value is written as the inside of
/// a JSON string (`"` → `\"`, `\` → `\\`, control characters escaped), so event data can never
/// close the string it is written in and add keys. Lists and maps are written as JSON.
const JSON_BODY: &str = "json-body";
/// Suffix of the names of templates compiled with [`JSON_BODY`] escaping.
const JSON_BODY_SUFFIX: &str = "#json-body";

/// A template context from any serializable value (usually `{event, meta, previous}`).
pub fn context<T: serde::Serialize>(value: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// A string from an action: plain text, or the name of a compiled template.
#[derive(Clone)]
pub enum Text {
    Literal(String),
    /// A file under `templates/`, or an inline template whose place is not known.
    Template(String),
    /// An inline template and where this use of it was written ([`Templates::place`]): rules
    /// with the same text share one compiled template, but an error names its own rule's place.
    Inline(String, Origin),
}

/// Shown as `Literal("…")` or `Template("name")`: where an inline template was written is not
/// part of what it does, and rule fingerprints hash this form (with each template name
/// replaced by its source), so a rule keeps its fingerprint wherever its text moves.
impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Text::Literal(s) => f.debug_tuple("Literal").field(s).finish(),
            Text::Template(n) | Text::Inline(n, _) => f.debug_tuple("Template").field(n).finish(),
        }
    }
}

/// Where an inline template was written: an index into [`Templates`]' table of places, so a
/// rule set of 10,000 rules holds 10,000 small numbers rather than 10,000 path strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(u32);

/// All compiled templates of one rule set.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Inline sources already compiled, so 10,000 rules with the same message share one.
    inline: std::collections::HashMap<String, String>,
    /// Where inline templates were written (file index, line, column), for render errors.
    places: Vec<(u32, u32, u32)>,
    /// The files of `places`.
    files: Vec<std::sync::Arc<str>>,
    /// Inline templates that only insert event fields into text ([`Simple`]), by name.
    simple: std::collections::HashMap<String, Simple>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        configure(&mut env);
        Templates {
            env,
            inline: Default::default(),
            places: Vec::new(),
            files: Vec::new(),
            simple: Default::default(),
        }
    }
}

/// How every template renders: strict undefined, the fuel budget, JSON escaping of bodies,
/// and minijinja's debug mode, which alone makes an undefined value's error name the
/// expression (`` `event.snapshot.idd` is undefined ``). minijinja turns it on only in builds
/// with debug assertions, so without this the tests saw that message and the release binary
/// people run said "undefined value" and nothing more.
fn configure(env: &mut Environment<'static>) {
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|name| {
        if name.ends_with(JSON_BODY_SUFFIX) {
            AutoEscape::Custom(JSON_BODY.into())
        } else if name.ends_with(url::SUFFIX) {
            AutoEscape::Custom(url::MARK.into())
        } else if name.ends_with(".json") || name.ends_with(".json.j2") {
            AutoEscape::Json
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Custom(n) if n == JSON_BODY) {
            return write_json_body(out, value);
        }
        if matches!(state.auto_escape(), AutoEscape::Custom(n) if n == url::MARK) {
            return url::write_value(out, value);
        }
        minijinja::escape_formatter(out, state, value)
    });
}

/// An inline template of the commonest form, text with `{{ event.a.b }}` fields in it (no
/// statements, filters or comments, a plain-text name), kept beside its compiled form so it is
/// rendered without minijinja's machine when every field is a string in the event (~5k
/// instructions a render, docs/decisions.md): the result is the text minijinja writes then (a
/// string as it is, the template's one trailing newline dropped). Anything else — a field
/// missing, not a string, an event that is not an object — renders through minijinja as
/// before, with its values and errors.
#[derive(Debug)]
struct Simple {
    pieces: Vec<Piece>,
    /// The length of its text, to size the result once.
    text_len: usize,
}

/// A part of a [`Simple`] template.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// The keys below `event` (at least one).
    Field(Vec<String>),
}

impl Simple {
    /// `source` as a [`Simple`] template, when it is one.
    fn parse(source: &str) -> Option<Simple> {
        // As minijinja reads it (`keep_trailing_newline` off): one `\n`, then one `\r`, dropped.
        let source = source.strip_suffix('\n').unwrap_or(source);
        let mut rest = source.strip_suffix('\r').unwrap_or(source);
        if rest.contains("{%") || rest.contains("{#") {
            return None;
        }
        let mut pieces = Vec::new();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}")?;
            pieces.push(Piece::Field(Simple::field(&after[..end])?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let text_len = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Field(_) => 0,
            })
            .sum();
        Some(Simple { pieces, text_len })
    }

    /// The keys of `event.a.b` (spaces around it only), when the expression is that.
    fn field(expr: &str) -> Option<Vec<String>> {
        let mut segs = expr.trim_matches([' ', '\t']).split('.');
        if segs.next() != Some("event") {
            return None;
        }
        let keys: Vec<String> = segs
            .map(|k| Simple::plain_name(k).then(|| k.to_string()))
            .collect::<Option<_>>()?;
        (!keys.is_empty()).then_some(keys)
    }

    /// An ASCII identifier that is no word of the template language.
    fn plain_name(k: &str) -> bool {
        const WORDS: &[&str] = &[
            "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
            "else",
        ];
        let mut chars = k.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !WORDS.contains(&k)
    }

    /// The text, when every field is a string in `body`.
    fn render(&self, body: &serde_json::Value) -> Option<String> {
        // Room for the text and fields of a usual length: one allocation, mostly.
        let mut out = String::with_capacity(self.text_len + 64);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(keys) => {
                    let mut v = body;
                    for k in keys {
                        v = v.as_object()?.get(k.as_str())?;
                    }
                    out.push_str(v.as_str()?);
                }
            }
        }
        Some(out)
    }
}

/// Writes one value of a [`JSON_BODY`] template.
fn write_json_body(
    out: &mut minijinja::Output,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let fmt_err = |_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed");
    let json_err = |e: serde_json::Error| {
        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
    };
    if value.is_safe() {
        // `| tojson`, `| safe`: the author vouches for it.
        return out
            .write_str(value.as_str().unwrap_or_default())
            .map_err(fmt_err);
    }
    match value.kind() {
        ValueKind::String => {
            let quoted =
                serde_json::to_string(value.as_str().unwrap_or_default()).map_err(json_err)?;
            out.write_str(&quoted[1..quoted.len() - 1]).map_err(fmt_err)
        }
        ValueKind::Seq | ValueKind::Map => {
            let text = serde_json::to_string(value).map_err(json_err)?;
            out.write_str(&text).map_err(fmt_err)
        }
        ValueKind::None => out.write_str("null").map_err(fmt_err),
        _ => write!(out, "{value}").map_err(fmt_err),
    }
}

/// `(name, text)` pairs: template sources, or files with an error message.
pub type Named = Vec<(String, String)>;

impl Templates {
    /// Reads every file under `dir`, each named by its path relative to `dir`: the sources,
    /// and the files that could not be read (file, message). A missing directory is empty.
    /// Hidden files and directories (an editor's swap file `.x.j2.swp`, `.git/`) and backups
    /// (`x.j2~`) are not templates and are left alone: one that is not UTF-8 would otherwise
    /// refuse every reload while a template is open in an editor.
    pub fn read_dir(dir: &Path) -> (Named, Named) {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        let walk = crate::walk::walk(dir);
        for path in walk.loops {
            errors.push((
                path.display().to_string(),
                "this directory is a symlink back to a directory above it (a loop): remove it"
                    .to_string(),
            ));
        }
        for path in walk.files {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if not_a_template(&name) {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(src) => files.push((name, src)),
                Err(e) => errors.push((path.display().to_string(), e.to_string())),
            }
        }
        (files, errors)
    }

    /// Compiles templates given as `(name, source)` (from [`Templates::read_dir`], or a rule
    /// set loaded again from the archive). Errors name the file as `root` joined with `name`.
    pub fn from_sources<'a>(
        root: &Path,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Templates, Vec<(String, String)>> {
        let mut t = Templates::default();
        let mut errors = Vec::new();
        for (name, src) in files {
            if let Err(e) = t.env.add_template_owned(name.to_string(), src.to_string()) {
                errors.push((root.join(name).display().to_string(), e.to_string()));
            }
        }
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    /// Compiles an inline string under `name`. Text without template syntax stays literal.
    pub fn inline(&mut self, name: String, source: &str) -> Result<Text, String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Text::Literal(source.to_string()));
        }
        if let Some(existing) = self.inline.get(source) {
            return Ok(Text::Template(existing.clone()));
        }
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| describe_inline(&e))?;
        if !escaped(&name)
            && let Some(simple) = Simple::parse(source)
        {
            self.simple.insert(name.clone(), simple);
        }
        self.inline.insert(source.to_string(), name.clone());
        Ok(Text::Template(name))
    }

    /// `text` as written at `file:line:column`: a template's render errors then name that place.
    pub fn place(&mut self, text: Text, file: &str, line: u64, col: u64) -> Text {
        let Text::Template(name) = text else {
            return text;
        };
        let f = match self.files.iter().position(|f| &**f == file) {
            Some(i) => i,
            None => {
                self.files.push(file.into());
                self.files.len() - 1
            }
        };
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let id = Origin(clamp(self.places.len() as u64));
        self.places.push((clamp(f as u64), clamp(line), clamp(col)));
        Text::Inline(name, id)
    }

    /// The place `origin` stands for.
    fn origin(&self, origin: Origin) -> Option<(&str, usize, usize)> {
        let (f, l, c) = *self.places.get(origin.0 as usize)?;
        Some((self.files.get(f as usize)?, l as usize, c as usize))
    }

    /// The top-level names `name` reads that neither it nor the environment defines (the
    /// variables its context must provide), sorted.
    pub fn free_names(&self, name: &str) -> Vec<String> {
        let Ok(tmpl) = self.env.get_template(name) else {
            return Vec::new();
        };
        let globals: std::collections::HashSet<&str> = self.env.globals().map(|(k, _)| k).collect();
        let mut names: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|n| !globals.contains(n.as_str()))
            .collect();
        names.sort();
        names
    }

    /// The filters, tests and included template files template `name` uses that do not exist,
    /// each as the name written and what is wrong (with the closest one that exists, for a
    /// typo). minijinja looks them up only when it renders: without this, `| defualt('-')` or
    /// an include of a missing file passes `check` and fails every event.
    pub fn unknown_uses(&self, name: &str) -> Vec<(String, String)> {
        let Some(source) = self.source(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (kind, word) in uses::uses(&source) {
            let (what, candidates) = match kind {
                uses::Use::Template if self.has(&word) => continue,
                uses::Use::Template => {
                    let problem = format!("`{word}` is not a file in the templates directory");
                    out.push((word, problem));
                    continue;
                }
                uses::Use::Filter => ("filter", FILTERS),
                uses::Use::Test => ("test", TESTS),
            };
            if self.callable_exists(kind, &word) {
                continue;
            }
            let known: Vec<&str> = candidates
                .iter()
                .copied()
                .filter(|c| self.callable_exists(kind, c))
                .collect();
            let problem = match crate::text::closest(&word, &known) {
                Some(best) => format!("`{word}` is not a {what}; did you mean `{best}`?"),
                None => format!(
                    "`{word}` is not a {what} (the {what}s: {})",
                    known.join(", ")
                ),
            };
            out.push((word, problem));
        }
        out
    }

    /// Whether the environment has filter or test `word`: a one-off template that applies it
    /// fails with "unknown filter/test" only when it has not (any other failure, such as a
    /// missing argument, means it exists).
    fn callable_exists(&self, kind: uses::Use, word: &str) -> bool {
        // The usual names are asked once a process (the environment is always set up alike).
        static KNOWN: std::sync::OnceLock<std::collections::HashMap<(bool, &str), bool>> =
            std::sync::OnceLock::new();
        let filter = kind == uses::Use::Filter;
        if kind != uses::Use::Template
            && let Some(known) = KNOWN
                .get_or_init(|| {
                    let t = Templates::default();
                    let ask = |kind, w: &'static str| t.probe(kind, w);
                    FILTERS
                        .iter()
                        .map(|w| ((true, *w), ask(uses::Use::Filter, w)))
                        .chain(TESTS.iter().map(|w| ((false, *w), ask(uses::Use::Test, w))))
                        .collect()
                })
                .get(&(filter, word))
        {
            return *known;
        }
        self.probe(kind, word)
    }

    /// [`Templates::callable_exists`], asked of the environment.
    fn probe(&self, kind: uses::Use, word: &str) -> bool {
        let probe = match kind {
            uses::Use::Filter => format!("{{{{ none | {word} }}}}"),
            uses::Use::Test => format!("{{{{ none is {word} }}}}"),
            uses::Use::Template => return self.has(word),
        };
        match self.env.render_str(&probe, ()) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
            ),
        }
    }

    /// The attributes template `name` reads of variable `var` by name (`var.x`, `var.x.y`:
    /// `x`), sorted and without repeats.
    pub fn attributes_of(&self, name: &str, var: &str) -> Vec<String> {
        let Ok(tmpl) = self.env.get_template(name) else {
            return Vec::new();
        };
        let prefix = format!("{var}.");
        let mut out: Vec<String> = tmpl
            .undeclared_variables(true)
            .into_iter()
            .filter_map(|p| {
                let rest = p.strip_prefix(&prefix)?;
                Some(rest.split('.').next().unwrap_or(rest).to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Compiles an inline body meant as JSON: values are escaped as JSON (see [`JSON_BODY`]).
    pub fn inline_json(&mut self, name: String, source: &str) -> Result<Text, String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Text::Literal(source.to_string()));
        }
        let key = format!("{JSON_BODY_SUFFIX}{source}");
        if let Some(existing) = self.inline.get(&key) {
            return Ok(Text::Template(existing.clone()));
        }
        let name = format!("{name}{JSON_BODY_SUFFIX}");
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| describe_inline(&e))?;
        self.inline.insert(key, name.clone());
        Ok(Text::Template(name))
    }

    /// Compiles an inline request URL: a value written into it cannot change the host it names
    /// (see `templates/url.rs`); render it with [`Templates::render_url`].
    pub fn inline_url(&mut self, name: String, source: &str) -> Result<Text, String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Text::Literal(source.to_string()));
        }
        let key = format!("{}{source}", url::SUFFIX);
        if let Some(existing) = self.inline.get(&key) {
            return Ok(Text::Template(existing.clone()));
        }
        let name = format!("{name}{}", url::SUFFIX);
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| describe_inline(&e))?;
        self.inline.insert(key, name.clone());
        Ok(Text::Template(name))
    }

    /// A request URL compiled by [`Templates::inline_url`], rendered and checked: `Err` when a
    /// value would move it to another host than the one its template names.
    pub fn render_url(&self, text: &Text, ctx: &minijinja::Value) -> Result<String, String> {
        let rendered = self.render(text, ctx)?;
        match text {
            Text::Template(name) | Text::Inline(name, _) if name.ends_with(url::SUFFIX) => {
                url::finish(&rendered)
            }
            _ => Ok(rendered),
        }
    }

    /// The file template `file` for a body meant as JSON: itself when it is a `.json` file
    /// (escaped as JSON already), else a copy compiled with [`JSON_BODY`] escaping.
    pub fn file_json(&mut self, file: &str) -> Result<Text, String> {
        if file.ends_with(".json") || file.ends_with(".json.j2") {
            return Ok(Text::Template(file.to_string()));
        }
        let name = format!("{file}{JSON_BODY_SUFFIX}");
        if !self.has(&name) {
            let source = self
                .source(file)
                .ok_or_else(|| format!("no template `{file}`"))?;
            self.env
                .add_template_owned(name.clone(), source)
                .map_err(|e| describe(&e))?;
        }
        Ok(Text::Template(name))
    }

    /// The source of a compiled template.
    pub fn source(&self, name: &str) -> Option<String> {
        self.env
            .get_template(name)
            .ok()
            .map(|t| t.source().to_string())
    }

    /// Whether a template file of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    pub fn render(&self, text: &Text, ctx: &minijinja::Value) -> Result<String, String> {
        if let Text::Template(name) | Text::Inline(name, _) = text
            && let Some(simple) = self.simple.get(name)
            && let Some(out) = render_simple(simple, ctx)
        {
            return Ok(out);
        }
        match text {
            Text::Literal(s) => Ok(s.clone()),
            Text::Template(name) => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(|e| self.locate(describe(&e), &e, None)),
            Text::Inline(name, origin) => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(|e| self.locate(describe(&e), &e, Some(*origin))),
        }
    }
}

impl Templates {
    /// Replaces minijinja's `(in <internal name>:<line>)` by where the template was written:
    /// the rulebook's file, line and column for inline templates, `templates/<file>:<line>`
    /// for files.
    fn locate(&self, msg: String, e: &minijinja::Error, origin: Option<Origin>) -> String {
        let (Some(name), Some(line)) = (e.name(), e.line()) else {
            return msg;
        };
        let internal = format!("(in {name}:{line})");
        // Where in the template the failing expression starts (line and column, from 1).
        let at = e.range().and_then(|r| {
            let src = self.source(name)?;
            let before = src.get(..r.start)?;
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            Some((line, col))
        });
        let place = match (origin.and_then(|o| self.origin(o)), at) {
            // The template's first line starts at the origin's column; later lines are the
            // rulebook's next lines (a block scalar, indented like its first line).
            (Some((file, ol, oc)), Some((1, c))) => {
                format!("(in the template at {file}:{ol}:{})", oc + c - 1)
            }
            (Some((file, ol, oc)), Some((l, c))) => {
                format!("(in the template at {file}:{}:{})", ol + l - 1, oc + c - 1)
            }
            (Some((file, ol, oc)), None) if line == 1 => {
                format!("(in the template at {file}:{ol}:{oc})")
            }
            (Some((file, ol, oc)), None) => {
                format!("(in the template at {file}:{ol}:{oc}, its line {line})")
            }
            (None, Some((l, c))) => format!("(in templates/{name}:{l}:{c})"),
            (None, None) => format!("(in templates/{name}:{line})"),
        };
        msg.replace(&internal, &place)
    }
}

/// A hidden file, one under a hidden directory, or an editor's backup (`name`: relative to
/// the templates directory, `/`-separated).
fn not_a_template(name: &str) -> bool {
    name.split('/').any(|part| part.starts_with('.')) || name.ends_with('~')
}

/// Whether templates of this name have their values escaped (the auto-escape callback above).
fn escaped(name: &str) -> bool {
    name.ends_with(JSON_BODY_SUFFIX)
        || name.ends_with(url::SUFFIX)
        || name.ends_with(".json")
        || name.ends_with(".json.j2")
}

/// `simple` rendered on the event a context's `event` shows, when that is a view of the event
/// (as jobs render) and every field is a string in it.
fn render_simple(simple: &Simple, ctx: &minijinja::Value) -> Option<String> {
    let event = ctx.get_attr("event").ok()?;
    let view = event.downcast_object_ref::<JsonView>()?;
    if !view.path.is_empty() {
        return None;
    }
    simple.render(view.root.value())
}

/// [`describe`] for a template written in a rulebook, whose error the caller reports at the
/// template's own file, line and column: minijinja's `(in <internal name>:<line>)` is dropped,
/// or, past the template's first line, says which line of it.
fn describe_inline(e: &minijinja::Error) -> String {
    let msg = describe(e);
    let (Some(name), Some(line)) = (e.name(), e.line()) else {
        return msg;
    };
    let internal = format!(" (in {name}:{line})");
    let place = if line > 1 {
        format!(" (on line {line} of the template)")
    } else {
        String::new()
    };
    msg.replace(&internal, &place)
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_in_an_inline_template_does_not_name_it_internally() {
        let mut t = Templates::default();
        let e = t
            .inline("a/r14/0/message".into(), "{{ event.status }")
            .expect_err("a syntax error");
        assert!(!e.contains("a/r14") && e.contains("unexpected `}`"), "{e}");
        let e = t
            .inline_json("a/r1/0/body".into(), "{\"a\": 1,\n \"b\": {{ event.x | }}}")
            .expect_err("a syntax error on line 2");
        assert!(
            !e.contains("a/r1/0") && e.ends_with("(on line 2 of the template)"),
            "{e}"
        );
    }

    #[test]
    fn a_lazy_document_is_built_only_when_a_template_reads_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let built = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = built.clone();
        let meta = std::sync::Arc::new(Lazy::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            serde_json::json!({"rule": "r0", "headers": {"a": "1"}})
        }));
        let ctx = minijinja::context! {
            event => json_value(JsonRoot::Value(std::sync::Arc::new(serde_json::json!({"n": 1})))),
            meta => json_value(JsonRoot::Lazy(meta.clone())),
        };
        let mut t = Templates::default();
        let plain = t.inline("a".into(), "n={{ event.n }}").unwrap();
        assert_eq!(t.render(&plain, &ctx).unwrap(), "n=1");
        assert_eq!(built.load(Ordering::SeqCst), 0, "not read, not built");
        let reads = t
            .inline(
                "b".into(),
                "{{ meta.rule }} {{ meta.headers.a }} {{ meta | length }}",
            )
            .unwrap();
        assert_eq!(t.render(&reads, &ctx).unwrap(), "r0 1 2");
        let missing = t.inline("c".into(), "{{ meta.nope }}").unwrap();
        assert!(t.render(&missing, &ctx).is_err(), "strict as before");
        assert_eq!(built.load(Ordering::SeqCst), 1, "built once");
    }

    #[test]
    fn one_text_in_two_rulebooks_names_each_place() {
        let mut t = Templates::default();
        let ctx = super::context(serde_json::json!({"event": {}}));
        let a = t.inline("a".into(), "{{ event.host }}").unwrap();
        let a = t.place(a, "rulebooks/a.yml", 10, 20);
        let b = t.inline("b".into(), "{{ event.host }}").unwrap();
        let b = t.place(b, "rulebooks/b.yml", 4, 7);
        let ea = t.render(&a, &ctx).unwrap_err();
        let eb = t.render(&b, &ctx).unwrap_err();
        assert!(ea.contains("rulebooks/a.yml:10:23"), "{ea}");
        assert!(eb.contains("rulebooks/b.yml:4:10"), "{eb}");
    }

    #[test]
    fn strict_undefined_and_literals() {
        let mut t = Templates::default();
        let lit = t.inline("a".into(), "plain").unwrap();
        assert!(matches!(lit, Text::Literal(_)));
        let tpl = t.inline("b".into(), "id={{ event.snapshot.id }}").unwrap();
        let ctx = super::context(serde_json::json!({"event": {"snapshot": {"id": "s1"}}}));
        assert_eq!(t.render(&tpl, &ctx).unwrap(), "id=s1");
        let missing = t.inline("c".into(), "{{ event.nope.deeper }}").unwrap();
        let e = t.render(&missing, &ctx).unwrap_err();
        assert!(e.contains("`event.nope` is undefined"), "{e}");
        let e = t.inline("d".into(), "{{ unclosed").unwrap_err().to_string();
        assert!(e.contains("unexpected end of input"), "{e}");
    }

    /// A release build starts minijinja without debug mode, where an undefined value's error
    /// does not name the expression: the environment turns it on whatever the build.
    #[test]
    fn an_undefined_value_is_named_in_a_release_build_too() {
        let mut env = Environment::new();
        env.set_debug(false); // as `Environment::new()` is in a build without debug assertions
        configure(&mut env);
        let body = serde_json::json!({"snapshot": {"id": "s1"}});
        let ctx = minijinja::context! {
            event => json_value(JsonRoot::Value(std::sync::Arc::new(body))),
        };
        let e = env
            .render_str("{{ event.snapshot.idd }}", ctx)
            .map(|_| String::new())
            .unwrap_or_else(|e| describe(&e));
        assert!(e.contains("`event.snapshot.idd` is undefined"), "{e}");
    }

    #[test]
    fn a_runtime_undefined_names_the_expression_and_points_at_it() {
        let mut t = Templates::default();
        // As actions render: the event as a view of its JSON.
        let body = serde_json::json!({"snapshot": {"id": "s1"}});
        let ctx = minijinja::context! {
            event => json_value(JsonRoot::Value(std::sync::Arc::new(body))),
        };
        let one = t
            .inline("a".into(), "snapshot {{ event.snapshot.idd }} failed")
            .unwrap();
        let one = t.place(one, "rulebooks/x.yml", 12, 20);
        let e = t.render(&one, &ctx).unwrap_err();
        assert!(e.contains("`event.snapshot.idd` is undefined"), "{e}");
        // The expression starts 12 characters into the template.
        assert!(
            e.contains("(in the template at rulebooks/x.yml:12:32)"),
            "{e}"
        );
        let two = t
            .inline("b".into(), "first line\n  id {{ event.nope }}")
            .unwrap();
        let two = t.place(two, "rulebooks/x.yml", 3, 9);
        let e = t.render(&two, &ctx).unwrap_err();
        assert!(e.contains("`event.nope` is undefined"), "{e}");
        assert!(
            e.contains("(in the template at rulebooks/x.yml:4:17)"),
            "{e}"
        );
        let file = t.inline("c".into(), "{{ event.snapshot.id.x.y }}").unwrap();
        let e = t.render(&file, &ctx).unwrap_err();
        assert!(
            e.contains("`event.snapshot.id.x` is undefined")
                || e.contains("`event.snapshot.id.x.y`"),
            "{e}"
        );
    }

    #[test]
    fn simple_templates_render_as_minijinja_does() {
        use std::sync::Arc;
        let simple = [
            "snapshot {{ event.snapshot.id }} completed",
            "{{event.a}}",
            "a {{ event.a }} b {{ event.b.c }}\n",
            "x {{ event.a }}\r\n",
            "x {{ event.a }}\n\n",
            "{{ event.a }}}} }}{",
            "}} {{\tevent.a\t}} {",
            "é {{ event.uni }} ü {{ event.a }}{{ event.a }}",
            "{{ event._x1 }}",
        ];
        let other = [
            "{{ event.a | upper }}",
            "{{ event['a'] }}",
            "{{ event.l.0 }}",
            "{% if true %}{{ event.a }}{% endif %}",
            "{# c #}{{ event.a }}",
            "{{- event.a }}",
            "{{ event.a -}}",
            "{{ event.true }}",
            "{{ event }}",
            "{{ meta.rule }}",
            "{{ event . a }}",
            "{{ event.a ~ event.a }}",
        ];
        // Not a template at all (minijinja refuses it): not a simple one either.
        assert!(Simple::parse("{{ event.a }").is_none());
        let bodies = [
            serde_json::json!({"a": "x", "b": {"c": "y"}, "snapshot": {"id": "s1"},
                "uni": "ß\n\t\"<>&{{ }}", "_x1": "", "l": ["z"], "true": "t"}),
            serde_json::json!({"a": 1, "b": {"c": 2.5}, "snapshot": {"id": null}, "uni": true}),
            serde_json::json!({"a": {"k": "v"}, "b": ["c"], "snapshot": "s"}),
            serde_json::json!({}),
            serde_json::json!(["a"]),
            serde_json::json!("a"),
        ];
        let mut t = Templates::default();
        let mut fast = 0;
        for (i, src) in simple.iter().chain(&other).enumerate() {
            assert_eq!(Simple::parse(src).is_some(), i < simple.len(), "{src:?}");
            let text = t.inline(format!("t{i}"), src).unwrap();
            let name = match &text {
                Text::Template(n) => n.clone(),
                _ => panic!("{src:?} is a template"),
            };
            for body in &bodies {
                let ctx = minijinja::context! {
                    event => json_value(JsonRoot::Value(Arc::new(body.clone()))),
                };
                let want = t.env.get_template(&name).unwrap().render(&ctx);
                let got = t.render(&text, &ctx);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => assert_eq!(w, g, "{src:?} on {body}"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("{src:?} on {body}: {want:?} vs {got:?}"),
                }
                if let Some(s) = t.simple.get(&name)
                    && s.render(body).is_some()
                {
                    fast += 1;
                }
            }
        }
        assert!(fast >= simple.len(), "the simple ones took the short way");
        // Names whose values are escaped keep minijinja.
        let json = t.inline("j.json".into(), "{{ event.q }}").unwrap();
        assert!(t.simple.is_empty() || !t.simple.contains_key("j.json"));
        let ctx = minijinja::context! {
            event => json_value(JsonRoot::Value(Arc::new(serde_json::json!({"q": "a\"b"})))),
        };
        assert_eq!(t.render(&json, &ctx).unwrap(), "\"a\\\"b\"");
    }

    #[test]
    fn json_bodies_escape_event_data() {
        let mut t = Templates::default();
        let evil = r#"x", "admin": true, "y": "z\"#;
        let ctx = super::context(serde_json::json!({
            "event": {"t": evil, "n": 3, "obj": {"a": [1, "b\""]}, "none": null}
        }));
        let body = t
            .inline_json("b".into(), r#"{"v": "{{ event.t }}", "n": {{ event.n }}, "o": {{ event.obj }}, "z": {{ event.none }}, "j": {{ event.t | tojson }}}"#)
            .unwrap();
        let out = t.render(&body, &ctx).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["v"], evil, "{out}");
        assert_eq!(v["j"], evil);
        assert_eq!(v["n"], 3);
        assert_eq!(v["o"], serde_json::json!({"a": [1, "b\""]}));
        assert!(v.get("admin").is_none());
        // Outside quotes, data cannot add keys either: the body is no longer JSON.
        let bare = t
            .inline_json("c".into(), r#"{"v": {{ event.t }}}"#)
            .unwrap();
        let out = t.render(&bare, &ctx).unwrap();
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_err(),
            "{out}"
        );
        // The same source as plain text is not escaped.
        let plain = t.inline("d".into(), r#""{{ event.t }}""#).unwrap();
        assert_eq!(t.render(&plain, &ctx).unwrap(), format!("\"{evil}\""));
    }
}

/// A JSON value whose strings are templates (e.g. `client_payload`), compiled at load.
#[derive(Debug, Clone)]
pub enum TValue {
    Literal(serde_json::Value),
    Text(Text),
    List(Vec<TValue>),
    Map(Vec<(String, TValue)>),
}

impl TValue {
    /// Compiles every string of `v` under names derived from `name`.
    pub fn compile(t: &mut Templates, name: &str, v: &serde_json::Value) -> Result<TValue, String> {
        Ok(match v {
            serde_json::Value::String(s) => TValue::Text(t.inline(name.to_string(), s)?),
            serde_json::Value::Array(items) => TValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| TValue::compile(t, &format!("{name}/{i}"), x))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => TValue::Map(
                map.iter()
                    .map(|(k, x)| Ok((k.clone(), TValue::compile(t, &format!("{name}/{k}"), x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => TValue::Literal(other.clone()),
        })
    }

    pub fn render(
        &self,
        t: &Templates,
        ctx: &minijinja::Value,
    ) -> Result<serde_json::Value, String> {
        Ok(match self {
            TValue::Literal(v) => v.clone(),
            TValue::Text(x) => serde_json::Value::String(t.render(x, ctx)?),
            TValue::List(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|x| x.render(t, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            TValue::Map(pairs) => serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, x)| Ok((k.clone(), x.render(t, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// A JSON document shown to templates without copying it: `{{ event.snapshot.id }}` walks the
/// document on each access and copies only the scalar it reaches. (Converting the whole event
/// to template values for every action cost more than rendering.)
#[derive(Debug)]
pub struct JsonView {
    root: JsonRoot,
    path: Vec<Seg>,
}

/// Where a [`JsonView`]'s document lives.
#[derive(Debug, Clone)]
pub enum JsonRoot {
    Event(std::sync::Arc<crate::domain::Event>),
    Value(std::sync::Arc<serde_json::Value>),
    Lazy(std::sync::Arc<Lazy>),
}

/// A JSON document built the first time a template (or anything else) reads it: a job's
/// `meta` costs more to build than most actions' templates cost to render, and most never
/// read it.
pub struct Lazy {
    value: std::sync::OnceLock<serde_json::Value>,
    make: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl Lazy {
    pub fn new(make: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Lazy {
        Lazy {
            value: std::sync::OnceLock::new(),
            make: Box::new(make),
        }
    }

    /// The document (built now if it was not yet).
    pub fn get(&self) -> &serde_json::Value {
        self.value.get_or_init(|| (self.make)())
    }
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lazy").field(&self.value.get()).finish()
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl JsonRoot {
    fn value(&self) -> &serde_json::Value {
        match self {
            JsonRoot::Event(e) => e.body(),
            JsonRoot::Value(v) => v,
            JsonRoot::Lazy(l) => l.get(),
        }
    }
}

/// A template value for a JSON document: scalars directly, containers as a [`JsonView`].
pub fn json_value(root: JsonRoot) -> minijinja::Value {
    match root {
        // An object, not built until a template looks into it.
        JsonRoot::Lazy(_) => minijinja::Value::from_object(JsonView {
            root,
            path: Vec::new(),
        }),
        root => JsonView::child(root, Vec::new()),
    }
}

impl JsonView {
    fn resolve(&self) -> Option<&serde_json::Value> {
        let mut v = self.root.value();
        for s in &self.path {
            v = match (s, v) {
                (Seg::Key(k), serde_json::Value::Object(m)) => m.get(k)?,
                (Seg::Index(i), serde_json::Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    fn child(root: JsonRoot, path: Vec<Seg>) -> minijinja::Value {
        let view = JsonView { root, path };
        match view.resolve().map(scalar) {
            None => minijinja::Value::UNDEFINED,
            Some(Some(v)) => v,
            Some(None) => minijinja::Value::from_object(view),
        }
    }

    /// The value at `seg` below this view, `found` there: a scalar directly, a container as a
    /// view one segment deeper (the document is not walked again to find it).
    fn with(&self, seg: impl FnOnce() -> Seg, found: &serde_json::Value) -> minijinja::Value {
        if let Some(v) = scalar(found) {
            return v;
        }
        let mut path = Vec::with_capacity(self.path.len() + 1);
        path.extend_from_slice(&self.path);
        path.push(seg());
        minijinja::Value::from_object(JsonView {
            root: self.root.clone(),
            path,
        })
    }
}

/// A JSON scalar as a template value; `None` for an object or array.
fn scalar(v: &serde_json::Value) -> Option<minijinja::Value> {
    Some(match v {
        serde_json::Value::Null => minijinja::Value::from(()),
        serde_json::Value::Bool(b) => minijinja::Value::from(*b),
        serde_json::Value::String(s) => minijinja::Value::from(s.as_str()),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
    })
}

impl minijinja::value::Object for JsonView {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        match self.resolve() {
            Some(serde_json::Value::Array(_)) => minijinja::value::ObjectRepr::Seq,
            _ => minijinja::value::ObjectRepr::Map,
        }
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        match self.resolve()? {
            serde_json::Value::Object(m) => {
                let k = key.as_str()?;
                let found = m.get(k)?;
                Some(self.with(|| Seg::Key(k.to_string()), found))
            }
            serde_json::Value::Array(a) => {
                let i = usize::try_from(key.as_i64()?).ok()?;
                let found = a.get(i)?;
                Some(self.with(|| Seg::Index(i), found))
            }
            _ => None,
        }
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        match self.resolve() {
            Some(serde_json::Value::Object(m)) => minijinja::value::Enumerator::Values(
                m.keys()
                    .map(|k| minijinja::Value::from(k.as_str()))
                    .collect(),
            ),
            Some(serde_json::Value::Array(a)) => minijinja::value::Enumerator::Seq(a.len()),
            _ => minijinja::value::Enumerator::Empty,
        }
    }
}

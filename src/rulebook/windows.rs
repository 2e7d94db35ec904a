//! `windows:` as written: maintenance windows at the top level of a rulebook (a change freeze,
//! a weekly maintenance slot). Compiled and decided in `rules::windows`.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::model::S;

/// One entry of `windows:`: either `start`/`end` (absolute, RFC 3339) or `weekly`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub name: S<String>,
    pub start: Option<S<String>>,
    pub end: Option<S<String>>,
    pub weekly: Option<S<WeeklySpec>>,
    /// Rule names, or `all`.
    pub rules: Option<S<WindowRulesSpec>>,
    /// `hold`, `skip` or `approve`.
    pub during: Option<S<String>>,
}

/// `weekly: {days: [sat, sun], from: "22:00", to: "06:00", timezone: Europe/Berlin}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklySpec {
    pub days: Vec<S<String>>,
    pub from: S<String>,
    pub to: S<String>,
    pub timezone: S<String>,
}

/// `rules: all` or `rules: [a, b]` (each name located, for an error that points at it).
#[derive(Debug)]
pub enum WindowRulesSpec {
    All,
    Names(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for WindowRulesSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WindowRulesSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a list of rule names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "all" => Ok(WindowRulesSpec::All),
                    other => Err(E::custom(format!(
                        "`rules: {other}`: expected `all` or a list of rule names (`rules: [{other}]`)"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<S<String>>()? {
                    names.push(n);
                }
                Ok(WindowRulesSpec::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

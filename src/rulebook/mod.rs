//! The rulebook as written ([`model`]) and the context a spec is compiled in ([`compile`]).
//! `rules` compiles whole rulebooks with it and each action kind compiles its own spec with it;
//! it imports neither.

pub mod ansible;
pub mod compile;
pub mod model;
pub mod recover;
pub mod windows;
pub mod yaml_error;

use std::fmt;

/// One problem in a rulebook, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

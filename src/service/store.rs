//! `--store`: parsed once into a [`StoreSpec`] (where), completed by the command line into a
//! [`StoreConfig`] (where and how), opened here.

use std::path::Path;

use super::ServeError;
use crate::engine::Role;
use crate::store::Store;
use crate::store::nats::NatsConfig;

/// What `--store` names: `embedded` or NATS server addresses. Exists so the flag is read once
/// and every later decision matches on a type instead of comparing strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded,
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, several comma-separated for a cluster.
    Nats(String),
}

impl StoreSpec {
    /// Parses `--store` (a clap value parser).
    pub fn parse(s: &str) -> Result<StoreSpec, String> {
        let s = s.trim();
        if s == "embedded" {
            return Ok(StoreSpec::Embedded);
        }
        let every_nats = s.split(',').all(|a| {
            let a = a.trim();
            let host = a
                .strip_prefix("nats://")
                .or_else(|| a.strip_prefix("tls://"));
            host.is_some_and(|h| !h.is_empty())
        });
        if !every_nats {
            return Err(format!(
                "`{s}`: use `embedded` or a NATS address such as nats://127.0.0.1:4222"
            ));
        }
        Ok(StoreSpec::Nats(s.to_string()))
    }

    /// Shared by several nodes (NATS), as opposed to one process's own (embedded).
    pub fn shared(&self) -> bool {
        matches!(self, StoreSpec::Nats(_))
    }
}

/// The store to open, with everything needed to open it.
pub enum StoreConfig {
    /// SQLite in the data directory.
    Embedded,
    Nats(Box<NatsConfig>),
}

impl StoreConfig {
    /// Shared by several nodes: the engine coordinates with them, the console polls the history.
    pub fn shared(&self) -> bool {
        matches!(self, StoreConfig::Nats(_))
    }
}

/// Opens the store; the embedded one only for `--role all` (it serves one node).
pub(super) async fn open(
    config: &StoreConfig,
    role: Role,
    data: &Path,
) -> Result<Store, ServeError> {
    match config {
        StoreConfig::Embedded => {
            if role != Role::All {
                return Err(ServeError::RoleNeedsSharedStore(
                    format!("{role:?}").to_lowercase(),
                ));
            }
            let store = Store::embedded(data).map_err(|error| ServeError::Store {
                what: format!("cannot open the store in {}", data.display()),
                error,
            })?;
            tracing::info!(data = %data.display(), "embedded store");
            Ok(store)
        }
        StoreConfig::Nats(nats) => {
            // The data directory still records this node's running scripts: one node owns it.
            std::fs::create_dir_all(data).map_err(|error| ServeError::Io {
                what: format!("cannot create {}", data.display()),
                error,
            })?;
            let lock = crate::store::sqlite::lock_dir(data).map_err(|error| ServeError::Store {
                what: format!("cannot lock {}", data.display()),
                error,
            })?;
            std::mem::forget(lock); // held until the process exits
            let (url, prefix) = (nats.url.clone(), nats.prefix.clone());
            let store = Store::nats((**nats).clone())
                .await
                .map_err(|error| ServeError::Store {
                    what: format!("cannot open the JetStream store at {url}"),
                    error,
                })?;
            tracing::info!(nats = %url, prefix = %prefix, role = %format!("{role:?}").to_lowercase(), "JetStream store");
            Ok(store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_flag_is_parsed_once_into_a_type() {
        assert_eq!(StoreSpec::parse("embedded"), Ok(StoreSpec::Embedded));
        assert_eq!(
            StoreSpec::parse("nats://127.0.0.1:4222,tls://n2:4222"),
            Ok(StoreSpec::Nats(
                "nats://127.0.0.1:4222,tls://n2:4222".into()
            ))
        );
        assert!(StoreSpec::parse("nats://127.0.0.1:4222").unwrap().shared());
        for bad in ["sqlite", "http://x", "nats://", "nats://a,redis://b", ""] {
            let e = StoreSpec::parse(bad).unwrap_err();
            assert!(e.contains("use `embedded`"), "{bad}: {e}");
        }
    }
}

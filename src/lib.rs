//! rulehook: verified events in, a durable store, JSONPath rules, actions out.
//!
//! The pipeline, one way: [`service`] starts the transports ([`server`] for HTTP, [`transport`]
//! for syslog, MQTT, NATS) → [`verify`] (per sender kind, on raw bytes) →
//! [`engine`] ([`rules`] match, then the [`store`]'s event log commits) → [`actions`] on a
//! worker pool.
//! See `docs/architecture.md`.

pub mod access;
pub mod actions;
pub mod app;
pub mod body;
pub mod cli;
pub mod connections;
pub mod console;
pub mod domain;
pub mod engine;
pub mod reload;
pub mod rulebook;
pub mod rules;
pub mod secrets;
pub mod server;
pub mod service;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod text;
pub mod tls;
pub mod transport;
pub mod units;
pub mod unmatched;
pub mod verify;
pub mod walk;
pub mod whatif;

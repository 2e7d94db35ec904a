//! The Ansible actions as written: `run_playbook`, and `run_job_template` /
//! `run_workflow_template` (AWX and Ansible Automation Platform). Kept apart from `model` so the
//! Ansible fields live in one place; `model::ActionSpec` names them.

use serde::Deserialize;

use super::model::S;

/// `inventory:` — a file in the scripts directory, or a list of hosts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InventorySpec {
    File(String),
    Hosts(Vec<String>),
}

/// `run_playbook: {playbook, inventory, limit, extra_vars, check, timeout, lock, …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPlaybookSpec {
    /// A file in the scripts directory, or a collection's playbook (`ns.coll.name`).
    pub playbook: S<String>,
    pub inventory: Option<S<InventorySpec>>,
    pub limit: Option<S<String>>,
    /// Extra variables; their strings are templates.
    pub extra_vars: Option<S<serde_json::Value>>,
    /// `--check --diff`: report what would change, change nothing.
    #[serde(default)]
    pub check: bool,
    /// Given to ansible-playbook through `--vault-password-file` only.
    pub vault_password: Option<S<String>>,
    /// Runs holding the same lock (a template, e.g. the device) never overlap.
    pub lock: Option<S<String>>,
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub retries: u32,
}

/// `run_job_template:` and `run_workflow_template:` (the controller's documented API).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplateSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    /// The controller's base URL (`https://aap.example.com`).
    pub url: S<String>,
    pub token: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    /// The template's name (looked up, with `organization`), or its `id`.
    pub name: Option<S<String>>,
    pub id: Option<S<u64>>,
    pub organization: Option<S<String>>,
    pub limit: Option<S<String>>,
    pub extra_vars: Option<S<serde_json::Value>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

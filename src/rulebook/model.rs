//! The rulebook file as written: a serde mirror of the YAML, with source locations kept for
//! every value a later check may need to point at. Nothing here is validated beyond its shape.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulebookFile {
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Boxed: a parsed rule is ~1.6 KB inline (every value carries its span), so a list of
    /// 10,000 grown by doubling held up to 27 MB (plus the copy it grew from) while loading;
    /// boxed, the list is pointers and each rule's memory is freed as soon as it is compiled.
    #[serde(default)]
    pub rules: Vec<Box<RuleSpec>>,
    /// `shadow` or `live` (the default): the mode of this rulebook's rules that name none.
    #[serde(default, deserialize_with = "present")]
    pub mode: Option<S<String>>,
    /// Maintenance windows (`rulebook::windows`; docs/change-control.md).
    #[serde(default)]
    pub windows: Vec<super::windows::WindowSpec>,
}

/// A number of bytes, or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub per_second: f64,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: S<String>,
    pub kind: S<String>,
    pub path: Option<S<String>>,
    /// `json` (default), `text`, `form` or `auto`.
    pub format: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub secrets: Option<Vec<S<String>>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub header: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub encoding: Option<S<String>>,
    pub prefix: Option<S<String>>,
    pub id_header: Option<S<String>>,
    pub tolerance: Option<S<String>>,
    pub dedup_window: Option<S<String>>,
    pub max_body: Option<S<SizeSpec>>,
    pub allow_from: Option<Vec<S<String>>>,
    pub rate_limit: Option<S<RateLimitSpec>>,
    /// Transports other than HTTP (`syslog`, …): where they listen and what they keep.
    pub listen: Option<S<ListenSpec>>,
    pub keep: Option<S<String>>,
    pub max_message: Option<S<SizeSpec>>,
    pub max_connections: Option<S<usize>>,
    /// One sender address's share of `max_connections` (stream transports).
    pub max_connections_per_client: Option<S<usize>>,
    pub idle_timeout: Option<S<String>>,
    /// Broker sources (`mqtt`): the broker, what to subscribe to, the session's client id.
    pub url: Option<S<String>>,
    pub topics: Option<Vec<S<String>>>,
    pub client_id: Option<S<String>>,
    /// `nats`: core subjects, or with `stream`/`durable` a JetStream consumer.
    pub subjects: Option<Vec<S<String>>>,
    pub stream: Option<S<String>>,
    pub durable: Option<S<String>>,
    /// The console's one-line summary of this source's events (a template over `event` and
    /// `headers`); a default per kind when absent.
    pub summary: Option<S<String>>,
    /// `syslog` with `tls://`: the listener's certificate and key, and the CA that client
    /// certificates must come from; `mqtt` with `mqtts://`: the CA to verify the broker with.
    pub tls: Option<S<TlsSpec>>,
    /// `mqtt`: the shared-subscription group (`$share/<group>/<topic>`).
    pub share_group: Option<S<String>>,
    /// `snmp_trap`: v1/v2c communities (without them v1/v2c are refused), v3 users, and the
    /// engine id rulehook answers informs as.
    pub communities: Option<Vec<S<String>>>,
    pub users: Option<Vec<S<SnmpUserSpec>>>,
    pub engine_id: Option<S<String>>,
}

/// One SNMPv3 USM user of a `snmp_trap` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpUserSpec {
    pub name: S<String>,
    pub auth: S<String>,
    pub auth_password: S<String>,
    #[serde(rename = "priv")]
    pub privacy: Option<S<String>>,
    pub priv_password: Option<S<String>>,
}

/// A source's `tls:` block (file paths; `${env:…}` allowed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    pub client_ca: Option<S<String>>,
    pub ca: Option<S<String>>,
}

/// `listen:` one address (`udp://0.0.0.0:514`) or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListenSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: S<String>,
    /// Environment variables that must be set (non-empty) for the rule to be loaded; otherwise
    /// it is skipped with a warning (rules that call GitHub or GitLab need their tokens).
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    #[serde(default, deserialize_with = "present")]
    pub sources: Option<Vec<S<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub condition: Option<S<ConditionSpec>>,
    #[serde(default = "yes")]
    pub enabled: bool,
    // Boxed, like the actions: inline, the three optional blocks below made every rule 1.9 KB
    // while its rulebook is compiled (1.2 KB of it `correlate`), 19 MB for 10,000 rules that
    // rarely use any of them; boxed, a rule is ~0.4 KB.
    #[serde(default, deserialize_with = "present")]
    pub throttle: Option<Box<S<ThrottleSpec>>>,
    /// A correlation over several events (docs/correlation.md).
    #[serde(default, deserialize_with = "present")]
    pub correlate: Option<Box<S<CorrelateSpec>>>,
    pub actions: Vec<S<ActionSpec>>,
    /// Runs when an action has failed for good (with `failure` in the context).
    #[serde(default)]
    pub on_failure: Vec<S<ActionSpec>>,
    /// `shadow` (match and render, run nothing) or `live`; unset: the rulebook's `mode`.
    #[serde(default, deserialize_with = "present")]
    pub mode: Option<S<String>>,
    /// The job waits for a person's decision before its first action (docs/change-control.md).
    #[serde(default, deserialize_with = "present")]
    pub approval: Option<Box<S<ApprovalSpec>>>,
}

/// An optional key that, once written, must have a value: unset is `None`, but `approval:`
/// (or `condition:`, `throttle:` …) with nothing after it is an error ("has no value"), never
/// read as if the key were not there, which would run the rule without its approval, on every
/// event, or unthrottled.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `approval: {timeout: 30m, on_timeout: reject, approvers: [ann], notify: [actions]}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    pub timeout: S<String>,
    /// `reject` (the default) or `approve`.
    pub on_timeout: Option<S<String>>,
    /// Who may decide (user names); unset: every approver and admin.
    #[serde(default)]
    pub approvers: Vec<S<String>>,
    /// Actions run when approval is requested, with `approval` in their templates.
    #[serde(default)]
    pub notify: Vec<S<ActionSpec>>,
}

/// `throttle: { once_within: 10m, group_by: ['$.snapshot.id'] }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    pub once_within: S<String>,
    #[serde(default)]
    pub group_by: Vec<S<String>>,
}

/// `correlate:` — exactly one of `all_of`, `sequence`, `absence`, `count`, with a window and
/// the groups it is kept per.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateSpec {
    pub within: S<String>,
    #[serde(default)]
    pub group_by: Vec<S<String>>,
    pub all_of: Option<Vec<S<NamedConditionSpec>>>,
    pub sequence: Option<Vec<S<NamedConditionSpec>>>,
    pub absence: Option<S<AbsenceSpec>>,
    pub count: Option<S<CountSpec>>,
    /// Open partial matches kept per rule (oldest evicted).
    pub max_open: Option<S<u64>>,
}

/// `{ name: down, condition: '$.state == "down"' }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedConditionSpec {
    pub name: S<String>,
    pub condition: S<ConditionSpec>,
}

/// `absence: { after: {name, condition}, missing: {name, condition} }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceSpec {
    pub after: S<NamedConditionSpec>,
    pub missing: S<NamedConditionSpec>,
    /// `per_event` (default: every `after` event opens its own window) or `per_group` (one
    /// open window per group; repeats are held by it).
    #[serde(default)]
    pub windows: Option<S<String>>,
}

/// `count: { at_least: 5, name: flap, condition: ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountSpec {
    pub at_least: S<u64>,
    pub name: S<String>,
    pub condition: S<ConditionSpec>,
}

impl ActionSpec {
    /// The action's `requires_env` (only actions that call other systems have one).
    pub fn requires_env(&self) -> &[S<String>] {
        match self {
            ActionSpec::PostWebhook(a) => &a.requires_env,
            ActionSpec::GithubDispatch(a) => &a.requires_env,
            ActionSpec::GithubWorkflow(a) => &a.requires_env,
            ActionSpec::GitlabPipeline(a) => &a.requires_env,
            ActionSpec::OpenTicket(a) => &a.requires_env,
            ActionSpec::RunJobTemplate(a) | ActionSpec::RunWorkflowTemplate(a) => &a.requires_env,
            ActionSpec::Notify(a) => &a.requires_env,
            _ => &[],
        }
    }

    /// The action's key as written (`run_script`, `open_ticket`, …).
    pub fn key(&self) -> &'static str {
        match self {
            ActionSpec::RunScript(_) => "run_script",
            ActionSpec::Log(_) => "log",
            ActionSpec::PostWebhook(_) => "post_webhook",
            ActionSpec::GithubDispatch(_) => "github_dispatch",
            ActionSpec::GithubWorkflow(_) => "github_workflow",
            ActionSpec::GitlabPipeline(_) => "gitlab_pipeline",
            ActionSpec::OpenTicket(_) => "open_ticket",
            ActionSpec::PostEvent(_) => "post_event",
            ActionSpec::RunPlaybook(_) => "run_playbook",
            ActionSpec::RunJobTemplate(_) => "run_job_template",
            ActionSpec::RunWorkflowTemplate(_) => "run_workflow_template",
            ActionSpec::Notify(_) => "notify",
        }
    }
}

/// The names in `list` whose environment variable is unset or empty.
pub fn missing_env(list: &[S<String>]) -> Vec<&str> {
    list.iter()
        .map(|v| v.value.as_str())
        .filter(|n| std::env::var(n).map_or(true, |v| v.is_empty()))
        .collect()
}

fn yes() -> bool {
    true
}

/// One entry of `actions:`, written as a one-key mapping (`- run_script: {...}`).
///
/// Variants are boxed: with every optional field spanned, the largest one (`open_ticket`) is
/// about a kilobyte, and unboxed every `log` action of a 10,000-rule rulebook would take that
/// much while the file is compiled (and leave it behind as heap fragments afterwards).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    RunScript(Box<RunScriptSpec>),
    Log(Box<LogSpec>),
    PostWebhook(Box<PostWebhookSpec>),
    GithubDispatch(Box<GithubDispatchSpec>),
    GithubWorkflow(Box<GithubWorkflowSpec>),
    GitlabPipeline(Box<GitlabPipelineSpec>),
    OpenTicket(Box<OpenTicketSpec>),
    PostEvent(Box<PostEventSpec>),
    RunPlaybook(Box<super::ansible::RunPlaybookSpec>),
    RunJobTemplate(Box<super::ansible::JobTemplateSpec>),
    RunWorkflowTemplate(Box<super::ansible::JobTemplateSpec>),
    Notify(Box<NotifySpec>),
}

/// `notify:` — a message where operators look: a Slack, Microsoft Teams or Webex incoming
/// webhook, or a PagerDuty Events API v2 event (trigger, acknowledge, resolve by `dedup_key`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    /// `slack`, `teams`, `webex` or `pagerduty`.
    pub to: S<String>,
    /// The incoming webhook's URL (Slack, Teams, Webex); PagerDuty's events endpoint (default
    /// `https://events.pagerduty.com/v2/enqueue`).
    pub url: Option<S<String>>,
    /// The message (PagerDuty: the alert's summary).
    pub text: Option<S<String>>,
    /// PagerDuty: the integration's routing key.
    pub routing_key: Option<S<String>>,
    /// PagerDuty: `trigger` (default), `acknowledge` or `resolve` (may be a template).
    pub event_action: Option<S<String>>,
    /// PagerDuty: the alert's key; acknowledge and resolve name the alert a trigger opened.
    pub dedup_key: Option<S<String>>,
    /// PagerDuty: `critical`, `error` (default), `warning` or `info`.
    pub severity: Option<S<String>>,
    /// PagerDuty: where the problem is (default `rulehook`).
    pub source: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostWebhookSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded;
    /// otherwise the rule runs without it and a warning says so.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    pub url: S<String>,
    pub method: Option<S<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, S<String>>,
    pub body: Option<S<String>>,
    pub body_template: Option<S<String>>,
    pub content_type: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubDispatchSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded;
    /// otherwise the rule runs without it and a warning says so.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    pub repo: S<String>,
    pub event_type: S<String>,
    #[serde(default)]
    pub client_payload: Option<serde_json::Value>,
    pub token: S<String>,
    pub api_url: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubWorkflowSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded;
    /// otherwise the rule runs without it and a warning says so.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    pub repo: S<String>,
    pub workflow: S<String>,
    #[serde(rename = "ref")]
    pub git_ref: S<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, S<String>>,
    pub token: S<String>,
    pub api_url: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabPipelineSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded;
    /// otherwise the rule runs without it and a warning says so.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    pub project: S<String>,
    #[serde(rename = "ref")]
    pub git_ref: S<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, S<String>>,
    pub token: S<String>,
    pub api_url: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTicketSpec {
    /// Environment variables that must be set (non-empty) for this action to be loaded;
    /// otherwise the rule runs without it and a warning says so.
    #[serde(default)]
    pub requires_env: Vec<S<String>>,
    pub system: S<String>,
    pub token: Option<S<String>>,
    pub email: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub api_url: Option<S<String>>,
    pub project: Option<S<String>>,
    pub title: S<String>,
    pub body: Option<S<String>>,
    pub body_template: Option<S<String>>,
    #[serde(default)]
    pub labels: Vec<S<String>>,
    pub dedup_key: Option<S<String>>,
    /// Jira only: the issue type (default `Task`).
    pub issue_type: Option<S<String>>,
    /// ServiceNow only: the incident's assignment group.
    pub assignment_group: Option<S<String>>,
    /// What to do with the ticket of `dedup_key`: `open` (default: open one, or comment on the
    /// open one), `comment`, `resolve` or `close` (a template may choose from the event).
    #[serde(rename = "do")]
    pub step: Option<S<String>>,
    /// ServiceNow: the `close_code` set when resolving or closing.
    pub close_code: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEventSpec {
    pub source: S<String>,
    pub body: Option<S<String>>,
    pub body_template: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunScriptSpec {
    pub script: S<String>,
    #[serde(default)]
    pub args: Vec<S<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, S<String>>,
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    pub message: S<String>,
    pub level: Option<S<String>>,
}

/// A condition as written: a JSONPath expression, or `all:` / `any:` / `not:`.
#[derive(Debug)]
pub enum ConditionSpec {
    Expr(String),
    All(Vec<S<ConditionSpec>>),
    Any(Vec<S<ConditionSpec>>),
    Not(Box<S<ConditionSpec>>),
}

impl<'de> Deserialize<'de> for ConditionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConditionSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSONPath expression, or a mapping with one key: all, any or not")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConditionSpec, E> {
                Ok(ConditionSpec::Expr(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConditionSpec, E> {
                Err(E::custom(format!(
                    "a condition must be a JSONPath expression, not `{v}` (quote it, e.g. '$.test == {v}')"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConditionSpec, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom("empty condition mapping: use all, any or not")
                })?;
                let spec = match key.as_str() {
                    "all" => ConditionSpec::All(map.next_value()?),
                    "any" => ConditionSpec::Any(map.next_value()?),
                    "not" => ConditionSpec::Not(Box::new(map.next_value()?)),
                    other => {
                        return Err(de::Error::unknown_field(other, &["all", "any", "not"]));
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a condition mapping takes exactly one key; `{extra}` is extra (nest it under `all:`)"
                    )));
                }
                Ok(spec)
            }
        }
        d.deserialize_any(V)
    }
}

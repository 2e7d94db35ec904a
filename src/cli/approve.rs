//! `rulehook approve JOB` and `rulehook reject JOB` (`--comment`): a decision about a job
//! awaiting approval, through the running service's admin API (`RULEHOOK_ADMIN_TOKEN` is the
//! token of the person deciding).

use clap::Args;
use serde_json::json;

use super::history::{AdminArgs, Api, print_json, refused_with, seg};

#[derive(Debug, Clone, Args)]
pub struct DecideArgs {
    /// The job id (`rulehook jobs --status awaiting_approval` lists them).
    pub id: String,
    /// Why: kept with the decision in the history and the audit trail.
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Approves (`approved`) or rejects the job.
pub async fn decide(a: DecideArgs, approved: bool) -> anyhow::Result<()> {
    let api = Api::new(&a.admin)?;
    let verb = if approved { "approve" } else { "reject" };
    let path = format!("/api/jobs/{}/{verb}", seg(&a.id));
    let v = api
        .call_with(
            reqwest::Method::POST,
            &path,
            Some(json!({"comment": a.comment})),
        )
        .await
        .map_err(|e| {
            if refused_with(&e) == Some(404) {
                anyhow::anyhow!(
                    "job {} is not awaiting approval (list those that are with `rulehook jobs --status awaiting_approval`)",
                    a.id
                )
            } else {
                e
            }
        })?;
    if a.admin.json {
        return print_json(&v);
    }
    println!(
        "job {}: {}",
        a.id,
        v["decision"]["summary"].as_str().unwrap_or(verb)
    );
    Ok(())
}

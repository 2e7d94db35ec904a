//! The audit trail: who changed what, when, and why — every write through the admin API and
//! the console (re-run, replay, approve, reject, user change, sign-in).
//!
//! It is one entry in the store's state (`rulehook/audit`), replaced by compare-and-set, so it
//! is kept with the history in both backends and every node of a JetStream deployment sees the
//! same trail. The newest [`KEEP`] records are kept.
//!
//! Refused sign-ins are kept apart, in an entry of their own (`rulehook/audit-refused`, the
//! newest [`KEEP_REFUSED`]), folded into one record per name, reason, client address and minute
//! with a `count`: anyone who can reach the login page can refuse themselves, and that must not
//! push a real write out of the trail. [`recent`] shows both, newest first.

use serde::{Deserialize, Serialize};

use super::Principal;
use crate::domain::StoreError;
use crate::store::StateStore;

const KEY: &str = "rulehook/audit";
const REFUSED_KEY: &str = "rulehook/audit-refused";
const LOGINS_KEY: &str = "rulehook/audit-logins";

/// Records kept (the oldest go first); a few hundred kilobytes at most.
pub const KEEP: usize = 2000;

/// Refused sign-in records kept, apart from [`KEEP`] (each may count many tries).
pub const KEEP_REFUSED: usize = 500;

/// Sign-in records (`login`) kept, apart from [`KEEP`]: anyone with any role can sign in as
/// often as they like, and that must not push an approval or a user change out of the trail.
pub const KEEP_LOGINS: usize = 500;

/// One write by one person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339, UTC.
    pub at: String,
    pub who: String,
    pub role: String,
    /// `rerun`, `replay`, `approve`, `reject`, `user.add`, `login`…
    pub what: String,
    /// The job, event or user it was about.
    pub target: String,
    pub comment: Option<String>,
    /// How many tries one `login.refused` record stands for (the same name, reason and address
    /// within one minute); absent on every other record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl Record {
    pub fn new(who: &Principal, what: &str, target: &str, comment: Option<String>) -> Record {
        Record {
            at: crate::domain::rfc3339(crate::domain::now_ms()),
            who: who.name.clone(),
            role: who.role.as_str().to_string(),
            what: what.to_string(),
            target: target.to_string(),
            comment: comment.filter(|c| !c.trim().is_empty()),
            count: None,
        }
    }

    /// Whether `self` and `other` are tries of one kind within the same minute.
    fn same_minute_as(&self, other: &Record) -> bool {
        let minute = |r: &Record| r.at.get(..16).map(str::to_string);
        minute(self) == minute(other)
            && self.who == other.who
            && self.what == other.what
            && self.target == other.target
            && self.comment == other.comment
    }
}

/// Appends `record` (trying again when another writer came first); a sign-in goes to the
/// sign-ins' own list ([`KEEP_LOGINS`]).
pub async fn append(state: &dyn StateStore, record: Record) -> Result<(), StoreError> {
    let (key, keep) = if record.what == "login" {
        (LOGINS_KEY, KEEP_LOGINS)
    } else {
        (KEY, KEEP)
    };
    change(state, key, |list| {
        list.push(record.clone());
        if list.len() > keep {
            list.drain(..list.len() - keep);
        }
    })
    .await
}

/// Records a refused sign-in in its own bounded list: folded into the last record of the same
/// name, reason and address within the same minute (its `count` goes up), else a new one.
pub async fn append_refused(state: &dyn StateStore, record: Record) -> Result<(), StoreError> {
    change(state, REFUSED_KEY, |list| {
        let recent = list
            .iter_mut()
            .rev()
            .take(32)
            .find(|r| r.same_minute_as(&record));
        match recent {
            Some(r) => r.count = Some(r.count.unwrap_or(1).saturating_add(1)),
            None => {
                let mut record = record.clone();
                record.count = Some(1);
                list.push(record);
            }
        }
        if list.len() > KEEP_REFUSED {
            list.drain(..list.len() - KEEP_REFUSED);
        }
    })
    .await
}

/// Replaces the list at `key` by `edit`'s change of it, by compare-and-set.
async fn change(
    state: &dyn StateStore,
    key: &str,
    edit: impl Fn(&mut Vec<Record>),
) -> Result<(), StoreError> {
    for _ in 0..20 {
        let (mut list, rev) = match state.get(key).await? {
            Some((text, rev)) => (parse(&text)?, Some(rev)),
            None => (Vec::new(), None),
        };
        edit(&mut list);
        let text = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
        let done = match rev {
            Some(rev) => state.update(key, &text, rev, None).await,
            None => state.create(key, &text, None).await,
        };
        match done {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the audit trail is being written by too many at once; try again".into(),
    ))
}

async fn load(state: &dyn StateStore, key: &str) -> Result<Vec<Record>, StoreError> {
    match state.get(key).await? {
        Some((text, _)) => parse(&text),
        None => Ok(Vec::new()),
    }
}

/// Where the last user change copied from the users file is remembered: (`at`, `seq`).
const USERS_SEEN_KEY: &str = "rulehook/audit-users-seen";

/// Copies the user changes `rulehook users` noted in the users file (`user.add`, `user.remove`,
/// `user.passwd`, `user.role`) into the audit trail, each once; returns how many were new.
pub async fn copy_user_changes(
    state: &dyn StateStore,
    users: &super::Users,
) -> Result<usize, StoreError> {
    let changes = users
        .changes()
        .map_err(|e| StoreError::Permanent(e.to_string()))?;
    let Some(last) = changes.last() else {
        return Ok(0);
    };
    let (seen, rev) = match state.get(USERS_SEEN_KEY).await? {
        Some((text, rev)) => (serde_json::from_str::<(String, u64)>(&text).ok(), Some(rev)),
        None => (None, None),
    };
    let order = |at: &str, seq: u64| (sortable(at), seq);
    let seen = seen.map(|(at, seq)| order(&at, seq));
    let new: Vec<_> = changes
        .iter()
        .filter(|c| seen.as_ref().is_none_or(|s| order(&c.at, c.seq) > *s))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    // The mark first: should two processes copy at once, one of them wins and copies.
    let mark = serde_json::json!([last.at, last.seq]).to_string();
    let marked = match rev {
        Some(rev) => state.update(USERS_SEEN_KEY, &mark, rev, None).await,
        None => state.create(USERS_SEEN_KEY, &mark, None).await,
    };
    match marked {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Ok(0),
        Err(e) => return Err(e),
    }
    let count = new.len();
    let records: Vec<Record> = new
        .into_iter()
        .map(|c| Record {
            at: c.at.clone(),
            who: c.who.clone(),
            role: "admin".into(),
            what: c.what.clone(),
            target: c.user.clone(),
            comment: Some(c.comment.clone()),
            count: None,
        })
        .collect();
    change(state, KEY, |list| {
        list.extend(records.iter().cloned());
        if list.len() > KEEP {
            list.drain(..list.len() - KEEP);
        }
    })
    .await?;
    Ok(count)
}

/// The newest `limit` records of all lists (writes, refused sign-ins, sign-ins), newest first,
/// their times shown as [`crate::domain::rfc3339`] shows times.
pub async fn recent(state: &dyn StateStore, limit: usize) -> Result<Vec<Record>, StoreError> {
    let mut list = load(state, KEY).await?;
    list.extend(load(state, REFUSED_KEY).await?);
    list.extend(load(state, LOGINS_KEY).await?);
    // RFC 3339 in UTC with `Z` sorts by time as text once the fractions are made even.
    list.sort_by_cached_key(|r| sortable(&r.at));
    // Shown in one form, whatever form a record was stored in (older releases wrote 0 to 3
    // digits of fractions).
    Ok(list
        .into_iter()
        .rev()
        .take(limit)
        .map(|r| Record {
            at: crate::domain::rfc3339_text(&r.at),
            ..r
        })
        .collect())
}

/// `at` with its fraction of a second padded to nine digits, so that texts sort by time.
fn sortable(at: &str) -> String {
    let Some(body) = at.strip_suffix('Z') else {
        return at.to_string();
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{whole}.{frac:0<9}Z")
}

/// The stored trail; one that cannot be read is an error, never overwritten.
fn parse(text: &str) -> Result<Vec<Record>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Permanent(format!("the audit trail cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;

    fn refused(from: &str) -> Record {
        let who = Principal {
            name: "unknown".into(),
            role: Role::Viewer,
        };
        Record::new(
            &who,
            "login.refused",
            "console",
            Some(format!("no; from {from}")),
        )
    }

    #[tokio::test]
    async fn refused_sign_ins_never_push_a_write_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::embedded(&dir.path().join("data")).unwrap();
        let state = store.state.as_ref();
        let anna = Principal {
            name: "anna".into(),
            role: Role::Approver,
        };
        append(
            state,
            Record::new(&anna, "approve", "job-1", Some("CHG-4711".into())),
        )
        .await
        .unwrap();
        for i in 0..(KEEP_REFUSED + 20) {
            append_refused(state, refused(&format!("10.0.{}.{}", i / 250, i % 250)))
                .await
                .unwrap();
        }
        let all = recent(state, usize::MAX).await.unwrap();
        assert_eq!(
            all.len(),
            KEEP_REFUSED + 1,
            "the refused ones are bounded apart"
        );
        assert!(
            all.iter().any(|r| r.what == "approve" && r.who == "anna"),
            "the approval stays"
        );
        // The same try again from one address within the minute is one record with a count.
        for _ in 0..5 {
            append_refused(state, refused("192.0.2.7")).await.unwrap();
        }
        let all = recent(state, 3).await.unwrap();
        assert_eq!(all[0].comment.as_deref(), Some("no; from 192.0.2.7"));
        assert_eq!(all[0].count, Some(5), "{all:?}");
        assert_ne!(all[1].comment, all[0].comment);
    }

    /// A viewer signing in 2,001 times pushed every approval out of the trail (a sign-in was
    /// one of the 2,000 writes kept); sign-ins now have a list of their own.
    #[tokio::test]
    async fn sign_ins_never_push_a_write_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::embedded(&dir.path().join("data")).unwrap();
        let state = store.state.as_ref();
        let anna = Principal {
            name: "anna".into(),
            role: Role::Approver,
        };
        let vera = Principal {
            name: "vera".into(),
            role: Role::Viewer,
        };
        append(state, Record::new(&anna, "approve", "job-1", None))
            .await
            .unwrap();
        for _ in 0..=KEEP {
            let login = Record::new(&vera, "login", "console", None);
            append(state, login).await.unwrap();
        }
        let all = recent(state, usize::MAX).await.unwrap();
        assert!(
            all.iter().any(|r| r.what == "approve" && r.who == "anna"),
            "the approval stays"
        );
        assert_eq!(all.len(), KEEP_LOGINS + 1, "sign-ins are bounded apart");
        assert_eq!(all[0].what, "login", "newest first: {:?}", all[0]);
    }

    /// Records stored by older releases (0 to 3 digits of fractions) are shown in the one
    /// form every time takes, in time order with the new ones.
    #[tokio::test]
    async fn stored_times_of_any_form_are_shown_with_three_digits() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::embedded(&dir.path().join("data")).unwrap();
        let state = store.state.as_ref();
        let anna = Principal {
            name: "anna".into(),
            role: Role::Approver,
        };
        for at in ["2026-12-07T10:05:05.1Z", "2026-12-07T10:05:05Z"] {
            let old = Record {
                at: at.into(),
                ..Record::new(&anna, "approve", at, None)
            };
            append(state, old).await.unwrap();
        }
        let all = recent(state, 10).await.unwrap();
        let shown: Vec<_> = all.iter().map(|r| r.at.as_str()).collect();
        assert_eq!(
            shown,
            ["2026-12-07T10:05:05.100Z", "2026-12-07T10:05:05.000Z"]
        );
    }

    #[tokio::test]
    async fn user_changes_are_copied_into_the_trail_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::embedded(&dir.path().join("data")).unwrap();
        let state = store.state.as_ref();
        let users = crate::access::Users::in_data(dir.path());
        users.add("zz", Role::Viewer).unwrap();
        users.set_password("zz", "long enough pw").unwrap();
        users.set_role("zz", Role::Operator).unwrap();
        assert_eq!(copy_user_changes(state, &users).await.unwrap(), 3);
        assert_eq!(copy_user_changes(state, &users).await.unwrap(), 0, "once");
        users.remove("zz").unwrap();
        assert_eq!(copy_user_changes(state, &users).await.unwrap(), 1);
        let all = recent(state, 10).await.unwrap();
        let whats: Vec<_> = all.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            whats,
            ["user.remove", "user.role", "user.passwd", "user.add"]
        );
        assert!(
            all.iter()
                .all(|r| r.target == "zz" && r.who.starts_with("cli@"))
        );
        assert!(
            all[1]
                .comment
                .as_deref()
                .unwrap()
                .contains("role operator (was viewer)")
        );
    }

    #[test]
    fn times_sort_whatever_their_fraction() {
        assert!(sortable("2026-12-07T06:30:27.6Z") > sortable("2026-12-07T06:30:27.59Z"));
        assert!(sortable("2026-12-07T06:30:27Z") < sortable("2026-12-07T06:30:27.01Z"));
    }
}

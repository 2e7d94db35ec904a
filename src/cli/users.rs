//! `rulehook users add|list|remove|passwd|role`: the people who may use the admin API and the
//! console. Each change is noted in users.json for the service's audit trail (`user.add` …).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::access::{Role, Users};

#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub action: UsersAction,
}

#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Create a user; its API token is printed once, as the last line (only its hash is kept).
    Add {
        name: String,
        /// viewer (reads), operator (+ replay, re-run), approver (+ approve, reject), admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        data: DataArg,
    },
    /// List users and their roles.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Set a user's console password (Argon2id hash in users.json). Read from standard input
    /// (the first line) when it is not a terminal, else prompted for twice without echo.
    /// Sessions signed in before end.
    Passwd {
        name: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Give a user another role; it takes effect at once (sessions too).
    Role {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        data: DataArg,
    },
    /// Remove a user; its token stops working at once.
    Remove {
        name: String,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Args)]
pub struct DataArg {
    /// The service's data directory (users.json is kept there).
    #[arg(long, env = "RULEHOOK_DATA", default_value = "./data")]
    pub data: PathBuf,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("use one of {}", Role::ALL.join(", ")))
}

pub fn run(a: UsersArgs) -> ExitCode {
    let result = match a.action {
        UsersAction::Add { name, role, data } => {
            Users::in_data(&data.data).add(&name, role).map(|token| {
                println!("user `{name}` added with role {}", role.as_str());
                println!("its API token (shown once; send it as `Authorization: Bearer <token>`):");
                println!("{token}");
            })
        }
        UsersAction::List { data } => Users::in_data(&data.data).list().map(|users| {
            if users.is_empty() {
                println!("no users (the admin token and loopback clients are admin)");
            }
            for u in users {
                println!(
                    "{:<24} {:<9} created {}",
                    u.name,
                    u.role.as_str(),
                    crate::domain::rfc3339(u.created_at)
                );
            }
        }),
        UsersAction::Passwd { name, data } => match read_password() {
            Ok(pw) => Users::in_data(&data.data)
                .set_password(&name, &pw)
                .map(|()| println!("password of user `{name}` set")),
            Err(e) => Err(crate::access::UsersError::Password(e)),
        },
        UsersAction::Role { name, role, data } => {
            Users::in_data(&data.data).set_role(&name, role).map(|was| {
                println!(
                    "user `{name}` now has role {} (was {})",
                    role.as_str(),
                    was.as_str()
                )
            })
        }
        UsersAction::Remove { name, data } => Users::in_data(&data.data)
            .remove(&name)
            .map(|u| println!("user `{}` removed", u.name)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The new password: prompted for twice on a terminal, else the first line of standard input
/// (its line ending removed, nothing else).
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    Ok(pw.strip_suffix('\r').unwrap_or(pw).to_string())
}

//! Checkpoints of the journal's write-ahead log on a thread of their own.
//!
//! SQLite copies the WAL back into the database file (a checkpoint) once the WAL holds
//! [`CHECKPOINT_PAGES`] pages. By default the connection whose commit crossed that mark does
//! it, inside that commit: on the writer thread, so every request of that batch waited for a
//! thousand pages to be copied and the database file synced, and under load the writer spent
//! ~7 % of its time there while the requests queued behind it. Here the writer's commit only
//! signals (a WAL hook, replacing SQLite's automatic checkpoint), and this thread checkpoints
//! with its own connection, `PASSIVE`: it never blocks the writer. Nothing about durability
//! changes: a commit is durable once its WAL frames are synced, before its reply, as before;
//! a checkpoint only moves durable pages into the database file, and the WAL is reused from
//! its start once a checkpoint has copied all of it.

use std::sync::mpsc;

use rusqlite::{Connection, MAIN_DB, wal::CheckpointMode};

use super::writer::storage;
use crate::domain::StoreError;

/// The WAL size (pages) past which a commit asks for a checkpoint: SQLite's own default.
pub const CHECKPOINT_PAGES: i32 = 1000;

/// Makes `write`'s commits ask a thread of their own (with a connection of its own, `conn`) to
/// checkpoint the WAL once it holds `pages` pages. The thread ends when `write` is closed.
pub fn start(
    write: &mut Connection,
    conn: Connection,
    pages: i32,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let asked = hook(write, pages)?;
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || run(&conn, &asked))
        .map_err(storage)
}

/// Replaces `write`'s automatic checkpoint with a request on the returned channel.
fn hook(write: &mut Connection, pages: i32) -> Result<mpsc::Receiver<()>, StoreError> {
    // At most one request waits: asking again while one is pending changes nothing.
    let (ask, asked) = mpsc::sync_channel::<()>(1);
    write
        .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, in_wal: i32| {
            if in_wal >= pages {
                let _ = ask.try_send(());
            }
            Ok(())
        }))
        .map_err(storage)?;
    Ok(asked)
}

fn run(conn: &Connection, asked: &mpsc::Receiver<()>) {
    let mut failing = false;
    while asked.recv().is_ok() {
        match conn.wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE) {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("the journal's checkpoints work again");
            }
            Ok(_) => {}
            // Nothing is lost (the pages stay in the WAL, which grows): said once, not per commit.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot checkpoint the journal's write-ahead log; it grows until a checkpoint works");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn size(path: &Path, suffix: &str) -> u64 {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    fn wal_db(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c
    }

    /// Commits `n` rows of one page each, one commit per row.
    fn fill(c: &Connection, n: usize) {
        for _ in 0..n {
            c.execute("INSERT INTO t (b) VALUES (zeroblob(4000))", [])
                .unwrap();
        }
    }

    #[test]
    fn a_commit_past_the_mark_asks_and_does_not_checkpoint_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut write = wal_db(&path);
        write.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        // SQLite's own checkpoint at the same mark, which the hook replaces.
        write
            .pragma_update(None, "wal_autocheckpoint", 100)
            .unwrap();
        let asked = hook(&mut write, 100).unwrap();
        fill(&write, 10);
        assert!(asked.try_recv().is_err(), "asked below the mark");
        let before = size(&path, "");
        fill(&write, 80);
        // SQLite's own checkpoint would have copied the pages into the
        // database file during those commits; the hook only asks.
        assert_eq!(
            size(&path, ""),
            before,
            "a commit checkpointed on the writer"
        );
        assert!(asked.try_recv().is_ok(), "not asked past the mark");
        assert!(
            asked.try_recv().is_err(),
            "asked more than once while pending"
        );
        // The checkpoint thread's connection does it.
        let other = wal_db(&path);
        let (log, done) = other
            .wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE)
            .unwrap();
        assert_eq!(log, done, "not all of the WAL was copied");
        assert!(
            size(&path, "") >= 80 * 4000,
            "the pages are not in the database file"
        );
        // The WAL is used again from its start: it does not grow with the next commits.
        let wal = size(&path, "-wal");
        fill(&write, 10);
        assert_eq!(
            size(&path, "-wal"),
            wal,
            "the WAL grew after a complete checkpoint"
        );
    }

    #[test]
    fn the_thread_checkpoints_and_ends_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut write = wal_db(&path);
        write.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let thread = start(&mut write, wal_db(&path), 20).unwrap();
        fill(&write, 40);
        let copied = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            size(&path, "") >= 20 * 4000
        });
        assert!(copied, "no checkpoint within 5 s");
        let (ended, end) = mpsc::channel();
        std::thread::spawn(move || ended.send(thread.join().is_ok()));
        assert!(
            end.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the checkpoint thread ended with its writer open"
        );
        drop(write);
        let ended = end.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(ended, Ok(true), "the checkpoint thread outlived its writer");
    }
}

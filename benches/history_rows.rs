//! What the history's rows cost in SQLite alone, per event, whatever sits in front of them: the
//! embedded store's tables (the real schema), the rows one matched event with one finished job
//! leaves (the delivery's dedup row, the event, the job, its attempt), written either as the
//! store writes them today (accepts in small group commits with `synchronous=FULL`, each job
//! updated to `done` in the next commit) or as a log-fronted design would at best (large
//! batches, `synchronous=OFF` because the log holds durability, every job inserted once in its
//! final state). Run under callgrind at two sizes and subtract (benches/history_rows.sh): the
//! difference per event is the rows' cost, set-up excluded. See docs/decisions.md.
//!
//! `cargo bench --bench history_rows -- N BATCH MODE DEDUP PATH`
//! (MODE `today` or `lazy`; DEDUP `1` or `0`)

use rusqlite::{Connection, params};

const BODY_LEN: usize = 791;

struct Rows {
    body: String,
    headers: String,
    matches: String,
    rng: u64,
}

impl Rows {
    fn next_key(&mut self) -> String {
        // The delivery key of a sender without ids: a 256-bit hash of the body (random order).
        let mut out = String::from("dedup/ipfabric/");
        for _ in 0..4 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            out.push_str(&format!("{:016x}", self.rng));
        }
        out
    }

    fn accept(
        &mut self,
        c: &Connection,
        i: i64,
        dedup: bool,
        final_job: bool,
    ) -> rusqlite::Result<()> {
        let id = format!("01a2{:04x}-b592-7335-bbe0-{:012x}", i >> 16, i);
        let key = self.next_key();
        if dedup {
            c.prepare_cached(rulehook::store::sqlite::schema::CLAIM_STATE)?
                .execute(params![
                    key,
                    id,
                    i,
                    1_800_000_000_000i64 + i,
                    1_700_000_000_000i64
                ])?;
        }
        c.prepare_cached(
            "INSERT INTO events (seq, id, source, kind, delivery, parent, received_at, headers, body,
               depth, envelope_version, matches, n_matches, n_jobs, first_job)
             VALUES (?1, ?2, 'ipfabric', 'ipfabric', ?3, NULL, ?4, ?5, ?6, 0, 2, ?7, 1, 1, ?1)",
        )?
        .execute(params![
            i,
            id,
            &key[15..],
            1_700_000_000_000i64 + i,
            self.headers,
            self.body,
            self.matches
        ])?;
        let (state, step) = if final_job {
            ("done", "{\"index\":1}")
        } else {
            ("pending", "{}")
        };
        c.prepare_cached(
            "INSERT INTO jobs (seq, id, event_seq, rulebook, rule, key, fingerprint, state, step, updated_at)
             VALUES (?1, ?2, ?1, 'bench.yml', 'r0', 'bench.yml#r0', '9f86d081884c7d659a2feaa0c55ad015', ?3, ?4, ?5)",
        )?
        .execute(params![i, format!("{id}:0123456789abcdef"), state, step, 1_700_000_000_000i64 + i])?;
        Ok(())
    }
}

fn finish(c: &Connection, i: i64, update: bool) -> rusqlite::Result<()> {
    let job = format!(
        "01a2{:04x}-b592-7335-bbe0-{:012x}:0123456789abcdef",
        i >> 16,
        i
    );
    if update {
        c.prepare_cached(
            "UPDATE jobs SET state = 'done', step = ?2, not_before = NULL, error = NULL, updated_at = ?3,
               awaiting = NULL WHERE seq = ?1",
        )?
        .execute(params![i, "{\"index\":1}", 1_700_000_000_001i64 + i])?;
    }
    c.prepare_cached(
        "INSERT INTO attempts (job_id, phase, idx, attempt, run_id, action, rendered, state,
           started_at, finished_at, exit_code, stdout, stderr, error, status, result)
         VALUES (?1, 0, 0, 1, 'r0.0', 'log', ?2, 'ok', ?3, ?4, NULL, '', '', NULL, NULL, NULL)
         ON CONFLICT (job_id, run_id, attempt, started_at) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![
        job,
        "{\"message\":\"snapshot a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21 completed\",\"level\":\"info\"}",
        1_700_000_000_000i64 + i,
        1_700_000_000_001i64 + i
    ])?;
    Ok(())
}

fn run(n: i64, batch: i64, lazy: bool, dedup: bool, path: &str) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", if lazy { "OFF" } else { "FULL" })?;
    c.pragma_update(None, "cache_size", -16000)?;
    c.execute_batch(rulehook::store::sqlite::schema::SCHEMA)?;
    let mut rows = Rows {
        body: "b".repeat(BODY_LEN),
        headers: "h".repeat(300),
        matches: "m".repeat(200),
        rng: 88_172_645_463_325_252,
    };
    let mut previous: Option<(i64, i64)> = None;
    let mut lo = 1;
    while lo <= n {
        let hi = (lo + batch - 1).min(n);
        c.execute_batch("BEGIN")?;
        for i in lo..=hi {
            rows.accept(&c, i, dedup, lazy)?;
            if lazy {
                finish(&c, i, false)?;
            }
        }
        if let (false, Some((a, b))) = (lazy, previous) {
            for i in a..=b {
                finish(&c, i, true)?;
            }
        }
        c.execute_batch("COMMIT")?;
        previous = Some((lo, hi));
        lo = hi + 1;
    }
    if let (false, Some((a, b))) = (lazy, previous) {
        c.execute_batch("BEGIN")?;
        for i in a..=b {
            finish(&c, i, true)?;
        }
        c.execute_batch("COMMIT")?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [n, batch, mode, dedup, path] = args.as_slice() else {
        eprintln!("usage: history_rows N BATCH today|lazy 1|0 PATH");
        std::process::exit(2);
    };
    let (Ok(n), Ok(batch)) = (n.parse::<i64>(), batch.parse::<i64>()) else {
        eprintln!("N and BATCH are numbers");
        std::process::exit(2);
    };
    if let Err(e) = run(n, batch.max(1), mode == "lazy", dedup == "1", path) {
        eprintln!("history_rows: {e}");
        std::process::exit(1);
    }
}

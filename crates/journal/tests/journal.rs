//! The journal on real files: round trips, reopening, a second handle as another process would
//! hold, refusal of unfinished runs and of foreign files, and durability across `kill -9` of a
//! real child process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use theseus_journal::{
    BUSY_TIMEOUT, Entry, Journal, JournalError, Mark, Request, RunRecord, RunState, default_path,
};

fn run(id: &str) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        migration_name: "centos-to-ubuntu".into(),
        migration_yaml: "apiVersion: theseus.io/v1alpha1\nkind: Migration\n".into(),
        plan_json: r#"{"waves":[]}"#.into(),
        cluster: "in-process simulator".into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        state: RunState::Running,
    }
}

fn entry(node: Option<&str>, phase: &str, mark: Mark) -> Entry {
    Entry {
        node: node.map(str::to_string),
        wave: node.map(|_| 1),
        detail: json!({"why": format!("{phase} {mark}")}),
        ..Entry::new("2026-01-01T00:01:00Z", phase, mark)
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("m.journal.db");
    (dir, path)
}

#[test]
fn create_then_open_roundtrips_the_run() {
    let (_d, path) = tmp();
    let r = run("run-1");
    let j = Journal::create(&path, &r).unwrap();
    assert_eq!(j.path(), path);
    assert_eq!(j.run().unwrap(), r);
    assert!(j.entries().unwrap().is_empty());
    assert_eq!(j.last_seq().unwrap(), 0);
    assert_eq!(j.request().unwrap(), None);
    j.set_state(RunState::Paused).unwrap();
    drop(j);

    let j = Journal::open(&path).unwrap();
    let back = j.run().unwrap();
    assert_eq!(back.state, RunState::Paused);
    assert_eq!(
        RunRecord {
            state: RunState::Running,
            ..back
        },
        r
    );
    assert_eq!(
        j.expect_migration("centos-to-ubuntu").unwrap().run_id,
        "run-1"
    );
    let e = j.expect_migration("other").unwrap_err();
    assert!(matches!(e, JournalError::WrongRun { .. }));
    assert!(
        e.to_string()
            .contains("belongs to run run-1 of migration centos-to-ubuntu, not other"),
        "{e}"
    );
}

#[test]
fn appends_get_increasing_seqs_and_survive_reopen() {
    let (_d, path) = tmp();
    let j = Journal::create(&path, &run("run-1")).unwrap();
    let mut written = Vec::new();
    for (i, (node, phase, mark)) in [
        (None, "run", Mark::Info),
        (Some("w-1"), "cordon", Mark::Intent),
        (Some("w-1"), "cordon", Mark::Done),
        (Some("w-1"), "some-future-phase", Mark::Failed),
        (None, "wave", Mark::Done),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = entry(node, phase, mark);
        e.seq = 999; // ignored
        let seq = j.append(&e).unwrap();
        assert_eq!(seq, i as u64 + 1);
        e.seq = seq;
        written.push(e);
    }
    assert_eq!(j.entries().unwrap(), written);
    assert_eq!(j.entries_since(3).unwrap(), written[3..].to_vec());
    assert!(j.entries_since(5).unwrap().is_empty());
    assert!(j.entries_since(u64::MAX).unwrap().is_empty());
    drop(j);

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.entries().unwrap(), written);
    assert_eq!(j.last_seq().unwrap(), 5);
    assert_eq!(j.append(&entry(None, "run", Mark::Done)).unwrap(), 6);
}

#[test]
fn node_states_are_the_last_entry_of_each_node() {
    let (_d, path) = tmp();
    let j = Journal::create(&path, &run("run-1")).unwrap();
    for (node, phase, mark) in [
        (Some("w-1"), "cordon", Mark::Intent),
        (Some("w-2"), "cordon", Mark::Intent),
        (Some("w-1"), "cordon", Mark::Done),
        (None, "wave", Mark::Info),
        (Some("w-1"), "drain", Mark::Intent),
        (Some("w-2"), "cordon", Mark::Done),
        (Some("w-3"), "action", Mark::Failed),
        (None, "wave", Mark::Done),
    ] {
        j.append(&entry(node, phase, mark)).unwrap();
    }
    let states = j.node_states().unwrap();
    let summary: Vec<(&str, &str, Mark, u64)> = states
        .iter()
        .map(|(n, e)| (n.as_str(), e.phase.as_str(), e.mark, e.seq))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("w-1", "drain", Mark::Intent, 5),
            ("w-2", "cordon", Mark::Done, 6),
            ("w-3", "action", Mark::Failed, 7),
        ]
    );
    assert_eq!(states["w-1"].node.as_deref(), Some("w-1"));
    assert_eq!(states["w-1"].detail, json!({"why": "drain intent"}));
}

#[test]
fn create_refuses_an_unfinished_run_and_reuses_a_finished_one() {
    let (_d, path) = tmp();
    let j = Journal::create(&path, &run("run-1")).unwrap();
    j.append(&entry(Some("w-1"), "cordon", Mark::Intent))
        .unwrap();
    for state in [RunState::Running, RunState::Paused, RunState::Failed] {
        j.set_state(state).unwrap();
        let e = Journal::create(&path, &run("run-2")).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, JournalError::Unfinished { .. }), "{m}");
        assert!(e.is_bad_input());
        assert!(
            m.contains(&format!(
                "holds run run-1 of migration centos-to-ubuntu, which is {state}"
            )),
            "{m}"
        );
        assert!(
            m.contains("theseus resume") && m.contains("delete the file"),
            "{m}"
        );
        assert!(m.contains(&path.display().to_string()), "{m}");
    }
    // The refused create changed nothing.
    assert_eq!(j.run().unwrap().run_id, "run-1");
    assert_eq!(j.entries().unwrap().len(), 1);

    for state in [RunState::Completed, RunState::Aborted] {
        j.set_state(state).unwrap();
        j.set_request(Request::Abort, "old").unwrap();
        let k = Journal::create(&path, &run("run-2")).unwrap();
        assert_eq!(k.run().unwrap(), run("run-2"));
        assert!(k.entries().unwrap().is_empty(), "a fresh run starts empty");
        assert_eq!(k.request().unwrap(), None);
        assert_eq!(
            k.append(&entry(None, "run", Mark::Info)).unwrap(),
            1,
            "seqs restart at 1"
        );
        // The old handle sees the new run (same file).
        assert_eq!(j.run().unwrap().run_id, "run-2");
        j.set_state(RunState::Running).unwrap();
        assert!(Journal::create(&path, &run("run-3")).is_err());
    }
}

#[test]
fn a_second_handle_sees_appends_and_its_requests_reach_the_first() {
    let (_d, path) = tmp();
    let engine = Journal::create(&path, &run("run-1")).unwrap();
    let status = Journal::open(&path).unwrap();

    assert_eq!(
        engine
            .append(&entry(Some("w-1"), "cordon", Mark::Intent))
            .unwrap(),
        1
    );
    assert_eq!(status.entries().unwrap().len(), 1);
    assert_eq!(
        engine
            .append(&entry(Some("w-1"), "cordon", Mark::Done))
            .unwrap(),
        2
    );
    assert_eq!(status.entries_since(1).unwrap()[0].mark, Mark::Done);
    assert_eq!(status.node_states().unwrap()["w-1"].seq, 2);

    status
        .set_request(Request::Pause, "maintenance window over")
        .unwrap();
    assert_eq!(
        engine.request().unwrap(),
        Some((Request::Pause, "maintenance window over".into()))
    );
    // An abort overrides a pause; a later pause does not downgrade the abort.
    status.set_request(Request::Abort, "wrong image").unwrap();
    status.set_request(Request::Pause, "later").unwrap();
    assert_eq!(
        engine.request().unwrap(),
        Some((Request::Abort, "wrong image".into()))
    );
    engine.clear_request().unwrap();
    assert_eq!(status.request().unwrap(), None);
    engine.set_state(RunState::Paused).unwrap();
    assert_eq!(status.run().unwrap().state, RunState::Paused);

    // Both handles can be used from several threads at once.
    let engine = std::sync::Arc::new(engine);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = engine.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    j.append(&entry(Some(&format!("t-{t}")), "drain", Mark::Info))
                        .unwrap();
                }
            })
        })
        .collect();
    for _ in 0..10 {
        status.append(&entry(None, "status", Mark::Info)).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let seqs: Vec<u64> = status.entries().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=52).collect::<Vec<_>>());
}

#[test]
fn open_of_a_missing_file_says_no_run_was_started() {
    let (_d, path) = tmp();
    let e = Journal::open(&path).unwrap_err();
    assert!(matches!(e, JournalError::NotFound { .. }));
    let m = e.to_string();
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("no run was started with this journal"), "{m}");
    assert!(
        m.contains("--journal") && m.contains("theseus apply"),
        "{m}"
    );
    assert!(!path.exists(), "open does not create the file");
}

#[test]
fn files_that_are_not_journals_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    // Not SQLite at all.
    let garbage = dir.path().join("garbage.db");
    let bytes = b"this is a text file, certainly not an SQLite database\n".repeat(100);
    std::fs::write(&garbage, &bytes).unwrap();
    for e in [
        Journal::open(&garbage).unwrap_err(),
        Journal::create(&garbage, &run("r")).unwrap_err(),
    ] {
        let m = e.to_string();
        assert!(matches!(e, JournalError::NotAJournal { .. }), "{m}");
        assert!(
            m.starts_with(&format!(
                "journal {} is not a theseus journal (not an SQLite database)",
                garbage.display()
            )),
            "{m}"
        );
    }
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes, "left untouched");

    // Another application's SQLite database.
    let other = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&other).unwrap();
    for e in [
        Journal::open(&other).unwrap_err(),
        Journal::create(&other, &run("r")).unwrap_err(),
    ] {
        assert!(matches!(e, JournalError::NotAJournal { .. }), "{e}");
        assert!(e.to_string().contains("is not a theseus journal"), "{e}");
    }
    assert_eq!(std::fs::read(&other).unwrap(), before, "left untouched");

    // An empty file: open refuses (no run), create initializes it.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let e = Journal::open(&empty).unwrap_err();
    assert!(matches!(e, JournalError::NotAJournal { .. }), "{e}");
    Journal::create(&empty, &run("r")).unwrap();
    Journal::open(&empty).unwrap();

    // A directory.
    let e = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(e, JournalError::NotAJournal { .. }), "{e}");
}

#[test]
fn another_schema_version_is_a_clear_error() {
    let (_d, path) = tmp();
    drop(Journal::create(&path, &run("r")).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute(
            "UPDATE meta SET value = '7' WHERE key = 'schemaVersion'",
            [],
        )
        .unwrap();
    }
    for e in [
        Journal::open(&path).unwrap_err(),
        Journal::create(&path, &run("r2")).unwrap_err(),
    ] {
        assert!(matches!(e, JournalError::SchemaVersion { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("has schema version 7, this theseus reads version 1"),
            "{m}"
        );
    }
}

#[test]
fn the_file_is_in_wal_mode_with_a_busy_timeout() {
    let (_d, path) = tmp();
    let j = Journal::create(&path, &run("r")).unwrap();
    j.append(&entry(None, "run", Mark::Info)).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(BUSY_TIMEOUT, Duration::from_secs(5));
    // A reader in another connection does not block appends.
    let tx = c.unchecked_transaction().unwrap();
    let n: i64 = tx
        .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(j.append(&entry(None, "run", Mark::Info)).unwrap(), 2);
    drop(tx);
}

#[test]
fn default_path_is_relative_to_the_working_directory() {
    assert_eq!(
        default_path("m"),
        Path::new(".").join(".theseus").join("m.journal.db")
    );
}

// ----------------------------------------------------------------------------------------------
// kill -9

const CHILD_ENV: &str = "THESEUS_JOURNAL_TEST_CHILD";

/// Not a test of its own: the child process of
/// [`every_acknowledged_append_survives_kill_9`]. Appends until killed, printing each seq after
/// `append` returned, and reports a control request it sees.
#[test]
fn child_appends_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let j = Journal::open(Path::new(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test child_appends_until_killed ... " without a newline.
    writeln!(out).unwrap();
    let mut told = false;
    for i in 0..200_000u32 {
        let e = Entry {
            node: Some(format!("w-{}", i % 7)),
            wave: Some(i / 7),
            detail: json!({"i": i, "padding": "x".repeat(200)}),
            ..Entry::new("2026-01-01T00:00:00Z", "drain", Mark::Intent)
        };
        let seq = j.append(&e).unwrap();
        writeln!(out, "seq {seq}").unwrap();
        if let Some((r, reason)) = j.request().unwrap().filter(|_| !told) {
            writeln!(out, "request {r} {reason}").unwrap();
            told = true;
        }
        out.flush().unwrap();
    }
}

#[test]
fn every_acknowledged_append_survives_kill_9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (_d, path) = tmp();
    let status = Journal::create(&path, &run("run-1")).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appends_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let mut saw_request = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read while the child writes; meanwhile read the journal and send a pause as `theseus status`
    // and `theseus pause` would, from this (other) process.
    while printed.len() < 300 || !saw_request {
        assert!(Instant::now() < deadline, "the child is too slow");
        let Some(line) = lines.next() else {
            panic!("the child ended early; printed {}", printed.len());
        };
        let line = line.unwrap();
        if let Some(seq) = line.strip_prefix("seq ") {
            printed.push(seq.parse::<u64>().unwrap());
            if printed.len() == 50 {
                let seen = status.entries().unwrap();
                assert!(seen.len() >= 50, "a reader sees committed appends");
                status
                    .set_request(Request::Pause, "from the parent")
                    .unwrap();
            }
        } else if line.starts_with("request ") {
            assert_eq!(line, "request pause from the parent");
            saw_request = true;
        }
    }
    child.kill().unwrap(); // SIGKILL
    // Lines the child printed before it died are still in the pipe.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(seq) = line
            .strip_prefix("seq ")
            .and_then(|s| s.parse::<u64>().ok())
        {
            printed.push(seq);
        }
    }
    let status_code = child.wait().unwrap();
    assert!(
        !status_code.success(),
        "killed, not finished: {status_code:?}"
    );
    drop(status);

    let j = Journal::open(&path).unwrap();
    let seqs: Vec<u64> = j.entries().unwrap().iter().map(|e| e.seq).collect();
    let last = *printed.last().unwrap();
    assert_eq!(printed, (1..=last).collect::<Vec<_>>(), "printed in order");
    assert!(
        seqs.len() as u64 >= last,
        "every acknowledged seq is in the journal: {} entries, {} printed",
        seqs.len(),
        last
    );
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // At most the one append in flight at the kill is in the journal without being printed.
    assert!(seqs.len() as u64 <= last + 1, "{} > {last} + 1", seqs.len());
    // The journal stays usable.
    assert_eq!(
        j.append(&entry(None, "run", Mark::Info)).unwrap(),
        seqs.len() as u64 + 1
    );
}

//! The engine's durable write-ahead journal of a run.
//!
//! Before each side effect on the cluster (cordon, drain, a node action, uncordon, ...) the engine
//! appends an [`Mark::Intent`] entry, and after it a [`Mark::Done`] (or [`Mark::Failed`]) entry.
//! After a crash, even `kill -9` in the middle of a drain, `theseus resume` reads the journal back
//! ([`Journal::node_states`]) and reconciles each node's last recorded step with what the cluster
//! shows. That only works if an entry the engine saw acknowledged is really on disk, so every
//! [`Journal::append`] is its own transaction, committed with `synchronous=FULL` before it returns.
//!
//! # Why SQLite (and not redb)
//!
//! `theseus status`, `theseus pause` and `theseus abort` run as separate processes while
//! `theseus apply` (or `resume`) holds the journal open: status reads the entries, pause and abort
//! write a control request ([`Journal::set_request`]) that the running engine polls
//! ([`Journal::request`]). SQLite in WAL mode allows exactly that: readers in other processes never
//! block the writer and see every committed append, and short writes from other processes wait for
//! the lock (busy timeout, 5 s) instead of failing. redb locks its file exclusively for the life of
//! the database handle, so a second process could not even open the journal to read its status.
//! SQLite is also a single self-describing file that can be inspected with the `sqlite3` shell when
//! something went wrong, and it is linked in (`rusqlite` with `bundled`), so nothing has to be
//! installed on the operator's machine.
//!
//! # Settings
//!
//! - `journal_mode=WAL` (persistent in the file): concurrent readers in other processes.
//! - `synchronous=FULL` (per connection): the WAL is fsynced at every commit, so an entry whose
//!   append returned survives a process kill and a power loss. The journal's directory is fsynced
//!   once after the file is created.
//! - `busy_timeout` of 5 s ([`BUSY_TIMEOUT`]): another process's write waits, then
//!   [`JournalError::Locked`].
//! - Each [`Journal::append`] is one transaction; [`Journal::create`] sets the file up and records
//!   the run in one `BEGIN IMMEDIATE` transaction, so two `apply` racing on one file cannot both
//!   start.
//!
//! # Schema (version [`SCHEMA_VERSION`])
//!
//! - `meta(key, value)`: `format` = `theseus-journal`, `schemaVersion` = `1`. A file without them
//!   is not a journal ([`JournalError::NotAJournal`]); another version is refused
//!   ([`JournalError::SchemaVersion`]).
//! - `run`: one row, the [`RunRecord`] plus the pending control request and its reason.
//! - `entries(seq, at, node, wave, phase, mark, detail)`: the appended [`Entry`]s, `seq` from 1,
//!   `detail` as JSON text.
//!
//! A journal is a file per run; [`default_path`] puts it under `./.theseus/`. [`Journal::create`]
//! reuses the file of a finished (completed or aborted) run and refuses one whose run is not
//! finished, so that a crashed run is resumed rather than forgotten.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// The journal schema this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// How long a write waits for another process holding the journal's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `format` row that marks a file as a theseus journal.
const FORMAT: &str = "theseus-journal";

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE run (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    run_id         TEXT NOT NULL,
    migration_name TEXT NOT NULL,
    migration_yaml TEXT NOT NULL,
    plan_json      TEXT NOT NULL,
    cluster        TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    state          TEXT NOT NULL,
    request        TEXT,
    request_reason TEXT
);
CREATE TABLE entries (
    seq    INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    node   TEXT,
    wave   INTEGER,
    phase  TEXT NOT NULL,
    mark   TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX entries_by_node ON entries (node, seq);
";

const ENTRY_COLUMNS: &str = "seq, at, node, wave, phase, mark, detail";

// ----------------------------------------------------------------------------------------------
// data

/// The run a journal belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub migration_name: String,
    /// The migration spec as the user wrote it.
    pub migration_yaml: String,
    /// The plan the run executes (JSON).
    pub plan_json: String,
    /// The API server URL, or "in-process simulator".
    pub cluster: String,
    /// RFC 3339.
    pub started_at: String,
    pub state: RunState,
}

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            /// The lowercase name, as serialized and stored.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(format!(
                        concat!("unknown ", stringify!($name), " {:?} (expected one of: {})"),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

str_enum! {
    /// Where a run stands.
    RunState {
        Running = "running",
        Paused = "paused",
        Aborted = "aborted",
        Failed = "failed",
        Completed = "completed",
    }
}

impl RunState {
    /// Completed or aborted: nothing to resume, the journal file may be reused.
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Completed | RunState::Aborted)
    }
}

str_enum! {
    /// A control request from another process to the running engine.
    Request {
        Pause = "pause",
        Abort = "abort",
    }
}

str_enum! {
    /// What an entry records about its phase.
    Mark {
        /// About to do it (written before the side effect).
        Intent = "intent",
        /// Done.
        Done = "done",
        /// Tried and failed.
        Failed = "failed",
        /// Progress or context, no state change.
        Info = "info",
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Assigned by [`Journal::append`] (1, 2, ...); ignored on input.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339, from the caller (the engine may run on virtual time).
    pub at: String,
    pub node: Option<String>,
    pub wave: Option<u32>,
    /// "cordon", "drain", "action", "ready", "uncordon", "done", "wave", "run", ...; any string.
    pub phase: String,
    pub mark: Mark,
    pub detail: serde_json::Value,
}

impl Entry {
    /// An entry about no node and no wave, with a `null` detail.
    pub fn new(at: impl Into<String>, phase: impl Into<String>, mark: Mark) -> Self {
        Entry {
            seq: 0,
            at: at.into(),
            node: None,
            wave: None,
            phase: phase.into(),
            mark,
            detail: serde_json::Value::Null,
        }
    }
}

/// `./.theseus/<name>.journal.db`. Characters of the name other than ASCII letters, digits, `-`,
/// `_` and `.` become `_`, so the name cannot point elsewhere.
pub fn default_path(migration_name: &str) -> PathBuf {
    let mut safe: String = migration_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        safe = "migration".into();
    }
    Path::new(".")
        .join(".theseus")
        .join(format!("{safe}.journal.db"))
}

// ----------------------------------------------------------------------------------------------
// errors

/// A journal operation that failed. Every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "journal {} does not exist: no run was started with this journal; pass --journal with the journal of the run, or run `theseus apply`",
        .path.display()
    )]
    NotFound { path: PathBuf },

    #[error("cannot {action} journal {}: {source}; {}", .path.display(), io_hint(.source))]
    Io {
        path: PathBuf,
        /// "open", "create the directory of", ...
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "journal {} is not a theseus journal ({why}); pass --journal with a journal written by `theseus apply`, or move the file away",
        .path.display()
    )]
    NotAJournal { path: PathBuf, why: String },

    #[error(
        "journal {} has schema version {found}, this theseus reads version {expected}; finish its run with the theseus release that started it, or delete the file",
        .path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error(
        "journal {} holds run {run_id} of migration {migration}, which is {state} (not completed or aborted); continue it with `theseus resume`, or delete the file to start over",
        .path.display()
    )]
    Unfinished {
        path: PathBuf,
        run_id: String,
        migration: String,
        state: RunState,
    },

    #[error(
        "journal {} belongs to run {run_id} of migration {migration}, not {expected}; pass --journal with the journal of {expected}",
        .path.display()
    )]
    WrongRun {
        path: PathBuf,
        run_id: String,
        migration: String,
        expected: String,
    },

    #[error(
        "journal {} stayed locked by another process for more than {} s; retry, or look for a hung theseus process holding it",
        .path.display(), BUSY_TIMEOUT.as_secs()
    )]
    Locked {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "journal {} cannot use write-ahead logging (SQLite kept journal mode {mode:?}); put the journal on a local filesystem (--journal)",
        .path.display()
    )]
    NoWal { path: PathBuf, mode: String },

    #[error(
        "journal {} is damaged: {what}; restore it from a copy, or delete it and check the cluster by hand",
        .path.display()
    )]
    Corrupt { path: PathBuf, what: String },

    #[error("cannot encode an entry for journal {}: {source}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("journal {}: {source}{}", .path.display(), sqlite_hint(.source))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl JournalError {
    /// The journal file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            JournalError::NotFound { path }
            | JournalError::Io { path, .. }
            | JournalError::NotAJournal { path, .. }
            | JournalError::SchemaVersion { path, .. }
            | JournalError::Unfinished { path, .. }
            | JournalError::WrongRun { path, .. }
            | JournalError::Locked { path, .. }
            | JournalError::NoWal { path, .. }
            | JournalError::Corrupt { path, .. }
            | JournalError::Encode { path, .. }
            | JournalError::Sqlite { path, .. } => path,
        }
    }

    /// Whether the error is about what the user passed (a wrong or missing file, a run in the
    /// way) rather than a failure of the disk or of SQLite.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            JournalError::NotFound { .. }
                | JournalError::NotAJournal { .. }
                | JournalError::SchemaVersion { .. }
                | JournalError::Unfinished { .. }
                | JournalError::WrongRun { .. }
        )
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "check the owner and mode of the file and its directory, or pass --journal with a path you can write"
        }
        io::ErrorKind::NotFound => "create the directory, or pass --journal with another path",
        io::ErrorKind::IsADirectory => "pass --journal with the path of a file",
        _ => "check the disk, or pass --journal with another path",
    }
}

fn sqlite_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "; free disk space and retry",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            "; check the owner and mode of the file and its directory (SQLite also writes <journal>-wal and <journal>-shm next to it)"
        }
        Some(ErrorCode::SystemIoFailure) => "; check the disk",
        Some(ErrorCode::DatabaseCorrupt) => {
            "; the file is damaged: restore it from a copy, or delete it and check the cluster by hand"
        }
        _ => "",
    }
}

/// Maps a SQLite error on `path` to a [`JournalError`].
fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => JournalError::NotAJournal {
            path: path.to_path_buf(),
            why: "not an SQLite database".into(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => JournalError::Locked {
            path: path.to_path_buf(),
            source: e,
        },
        _ => JournalError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn corrupt(path: &Path, what: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

// ----------------------------------------------------------------------------------------------
// the journal

/// An open journal. `Send + Sync`: the connection is behind a mutex, so one handle can be shared
/// by the engine's tasks; other processes open their own handle on the same file.
pub struct Journal {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a file holds.
enum Contents {
    /// No tables: a new (or empty) file.
    Empty,
    Journal,
}

impl Journal {
    /// Creates a new journal file for a run (and its directory). Reuses the file of a finished
    /// (completed or aborted) run; refuses a file whose run is not finished
    /// ([`JournalError::Unfinished`]) and a file that is not a journal.
    pub fn create(path: &Path, run: &RunRecord) -> Result<Journal, JournalError> {
        match std::fs::metadata(path) {
            Ok(_) => check_access(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
                        path: path.to_path_buf(),
                        action: "create the directory of",
                        source,
                    })?;
                }
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    action: "create",
                    source,
                });
            }
        }
        let mut conn = connect(path, true)?;
        // Check before switching the file to WAL: a foreign database stays untouched.
        contents(&conn, path)?;
        setup(&conn, path)?;
        let err = sql(path);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        // Again under the write lock: another process may have created it in the meantime.
        match contents(&tx, path)? {
            Contents::Empty => {
                tx.execute_batch(SCHEMA).map_err(&err)?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?1), ('schemaVersion', ?2)",
                    params![FORMAT, SCHEMA_VERSION.to_string()],
                )
                .map_err(&err)?;
            }
            Contents::Journal => {
                if let Some(old) = read_run(&tx, path)?.filter(|r| !r.state.is_finished()) {
                    return Err(JournalError::Unfinished {
                        path: path.to_path_buf(),
                        run_id: old.run_id,
                        migration: old.migration_name,
                        state: old.state,
                    });
                }
                tx.execute_batch("DELETE FROM entries; DELETE FROM run;")
                    .map_err(&err)?;
            }
        }
        tx.execute(
            "INSERT INTO run (id, run_id, migration_name, migration_yaml, plan_json, cluster,
                started_at, state, request, request_reason)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL)",
            params![
                run.run_id,
                run.migration_name,
                run.migration_yaml,
                run.plan_json,
                run.cluster,
                run.started_at,
                run.state.as_str(),
            ],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        sync_dir(path);
        Ok(Journal {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing journal (resume, status, pause, abort).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        match std::fs::metadata(path) {
            Ok(_) => check_access(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JournalError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    action: "open",
                    source,
                });
            }
        }
        let conn = connect(path, false)?;
        match contents(&conn, path)? {
            Contents::Empty => {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    why: "an empty file: no run was ever recorded in it".into(),
                });
            }
            Contents::Journal => {}
        }
        setup(&conn, path)?;
        if read_run(&conn, path)?.is_none() {
            return Err(corrupt(path, "it records no run"));
        }
        Ok(Journal {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The run this journal belongs to, with its current state.
    pub fn run(&self) -> Result<RunRecord, JournalError> {
        read_run(&self.conn(), &self.path)?.ok_or_else(|| corrupt(&self.path, "it records no run"))
    }

    /// The run, if it is one of `migration_name`; otherwise [`JournalError::WrongRun`].
    pub fn expect_migration(&self, migration_name: &str) -> Result<RunRecord, JournalError> {
        let run = self.run()?;
        if run.migration_name == migration_name {
            Ok(run)
        } else {
            Err(JournalError::WrongRun {
                path: self.path.clone(),
                run_id: run.run_id,
                migration: run.migration_name,
                expected: migration_name.to_string(),
            })
        }
    }

    /// Records the run's state (durably).
    pub fn set_state(&self, state: RunState) -> Result<(), JournalError> {
        let n = self
            .conn()
            .execute(
                "UPDATE run SET state = ?1 WHERE id = 1",
                params![state.as_str()],
            )
            .map_err(sql(&self.path))?;
        if n == 1 {
            Ok(())
        } else {
            Err(corrupt(&self.path, "it records no run"))
        }
    }

    /// Appends an entry in its own transaction, on disk when this returns; returns its seq
    /// (1, 2, ...). `entry.seq` is ignored.
    pub fn append(&self, entry: &Entry) -> Result<u64, JournalError> {
        let detail =
            serde_json::to_string(&entry.detail).map_err(|source| JournalError::Encode {
                path: self.path.clone(),
                source,
            })?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO entries (at, node, wave, phase, mark, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.at,
                entry.node,
                entry.wave,
                entry.phase,
                entry.mark.as_str(),
                detail
            ],
        )
        .map_err(sql(&self.path))?;
        let seq = conn.last_insert_rowid();
        u64::try_from(seq).map_err(|_| corrupt(&self.path, format!("entry seq {seq}")))
    }

    /// All entries, in order.
    pub fn entries(&self) -> Result<Vec<Entry>, JournalError> {
        self.entries_since(0)
    }

    /// The entries with a seq greater than `seq`, in order (for following a run).
    pub fn entries_since(&self, seq: u64) -> Result<Vec<Entry>, JournalError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(Vec::new());
        };
        query_entries(
            &self.conn(),
            &self.path,
            &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE seq > ?1 ORDER BY seq"),
            seq,
        )
    }

    /// The seq of the last entry (0 when there is none).
    pub fn last_seq(&self) -> Result<u64, JournalError> {
        let seq: i64 = self
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM entries", [], |r| {
                r.get(0)
            })
            .map_err(sql(&self.path))?;
        u64::try_from(seq).map_err(|_| corrupt(&self.path, format!("entry seq {seq}")))
    }

    /// The last entry of each node (whatever its mark, `Info` included), by node name: where
    /// each node stands, for resume's reconciliation and for status.
    pub fn node_states(&self) -> Result<BTreeMap<String, Entry>, JournalError> {
        let entries = query_entries(
            &self.conn(),
            &self.path,
            "SELECT e.seq, e.at, e.node, e.wave, e.phase, e.mark, e.detail
             FROM entries e
             JOIN (SELECT MAX(seq) AS last FROM entries WHERE node IS NOT NULL GROUP BY node) l
               ON e.seq = l.last
             WHERE e.seq > ?1",
            0,
        )?;
        Ok(entries
            .into_iter()
            .filter_map(|e| e.node.clone().map(|n| (n, e)))
            .collect())
    }

    /// The pending control request and its reason, if any (the running engine polls this).
    pub fn request(&self) -> Result<Option<(Request, String)>, JournalError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT request, request_reason FROM run WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(&self.path))?;
        let Some((request, reason)) = row else {
            return Err(corrupt(&self.path, "it records no run"));
        };
        match request {
            None => Ok(None),
            Some(r) => {
                let r = r.parse::<Request>().map_err(|e| corrupt(&self.path, e))?;
                Ok(Some((r, reason.unwrap_or_default())))
            }
        }
    }

    /// Requests a pause or an abort, with a reason (from `theseus pause`/`abort`, usually in
    /// another process). A pending abort is never downgraded to a pause: a pause requested while
    /// an abort is pending leaves the abort (and its reason) in place.
    pub fn set_request(&self, r: Request, reason: &str) -> Result<(), JournalError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE run SET request = ?1, request_reason = ?2
             WHERE id = 1 AND (?1 = 'abort' OR request IS NULL OR request <> 'abort')",
            params![r.as_str(), reason],
        )
        .map_err(sql(&self.path))?;
        let exists: Option<i64> = conn
            .query_row("SELECT id FROM run WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path))?;
        match exists {
            Some(_) => Ok(()),
            None => Err(corrupt(&self.path, "it records no run")),
        }
    }

    /// Clears the pending request (the engine, once it acted on it).
    pub fn clear_request(&self) -> Result<(), JournalError> {
        let n = self
            .conn()
            .execute(
                "UPDATE run SET request = NULL, request_reason = NULL WHERE id = 1",
                [],
            )
            .map_err(sql(&self.path))?;
        if n == 1 {
            Ok(())
        } else {
            Err(corrupt(&self.path, "it records no run"))
        }
    }
}

/// Opens the file with the OS first, for a precise error (permission denied, a directory, ...)
/// where SQLite would only say "unable to open database file".
fn check_access(path: &Path) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        action: "open",
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            why: "a directory".into(),
        });
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(io)
}

fn connect(path: &Path, create: bool) -> Result<Connection, JournalError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(sql(path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(path))?;
    Ok(conn)
}

/// WAL mode and full synchronization.
fn setup(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql(path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql(path))?;
    Ok(())
}

/// Whether the file is empty or a journal of this schema version; an error otherwise.
fn contents(conn: &Connection, path: &Path) -> Result<Contents, JournalError> {
    let err = sql(path);
    let not_journal = |why: &str| JournalError::NotAJournal {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let tables: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .map_err(&err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)?
    };
    if tables.is_empty() {
        return Ok(Contents::Empty);
    }
    if !tables.iter().any(|t| t == "meta") {
        return Err(not_journal("an SQLite database without theseus' tables"));
    }
    let meta = |key: &str| -> Result<Option<String>, JournalError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => err(e),
            _ => not_journal("an SQLite database whose meta table is not theseus'"),
        })
    };
    if meta("format")?.as_deref() != Some(FORMAT) {
        return Err(not_journal(
            "an SQLite database without the theseus-journal format mark",
        ));
    }
    let version = meta("schemaVersion")?.unwrap_or_else(|| "(none)".into());
    if version != SCHEMA_VERSION.to_string() {
        return Err(JournalError::SchemaVersion {
            path: path.to_path_buf(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    for t in ["run", "entries"] {
        if !tables.iter().any(|x| x == t) {
            return Err(corrupt(path, format!("its {t} table is missing")));
        }
    }
    Ok(Contents::Journal)
}

fn read_run(conn: &Connection, path: &Path) -> Result<Option<RunRecord>, JournalError> {
    let row = conn
        .query_row(
            "SELECT run_id, migration_name, migration_yaml, plan_json, cluster, started_at, state
             FROM run WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()
        .map_err(sql(path))?;
    let Some((run_id, migration_name, migration_yaml, plan_json, cluster, started_at, state)) = row
    else {
        return Ok(None);
    };
    let state = state.parse().map_err(|e| corrupt(path, e))?;
    Ok(Some(RunRecord {
        run_id,
        migration_name,
        migration_yaml,
        plan_json,
        cluster,
        started_at,
        state,
    }))
}

fn query_entries(
    conn: &Connection,
    path: &Path,
    sql_text: &str,
    arg: i64,
) -> Result<Vec<Entry>, JournalError> {
    let err = sql(path);
    let mut st = conn.prepare(sql_text).map_err(&err)?;
    let rows = st
        .query_map([arg], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<u32>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .map_err(&err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, node, wave, phase, mark, detail) = row.map_err(&err)?;
        let seq = u64::try_from(seq).map_err(|_| corrupt(path, format!("entry seq {seq}")))?;
        let mark = mark
            .parse()
            .map_err(|e| corrupt(path, format!("entry {seq}: {e}")))?;
        let detail = serde_json::from_str(&detail)
            .map_err(|e| corrupt(path, format!("entry {seq}: detail is not JSON: {e}")))?;
        out.push(Entry {
            seq,
            at,
            node,
            wave,
            phase,
            mark,
            detail,
        });
    }
    Ok(out)
}

/// Makes the new file's directory entry durable (best effort: some filesystems refuse to fsync
/// a directory; the file's own data is synced by SQLite).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn journal_is_send_and_sync() {
        assert_send_sync::<Journal>();
        assert_send_sync::<JournalError>();
    }

    #[test]
    fn connections_use_wal_full_sync_and_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let run = RunRecord {
            run_id: "r".into(),
            migration_name: "m".into(),
            migration_yaml: String::new(),
            plan_json: "{}".into(),
            cluster: "in-process simulator".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            state: RunState::Running,
        };
        let created = Journal::create(&path, &run).unwrap();
        let opened = Journal::open(&path).unwrap();
        for j in [&created, &opened] {
            let c = j.conn();
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(sync, 2, "FULL");
            let busy: i64 = c
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .unwrap();
            assert_eq!(busy, 5000);
            assert!(c.is_autocommit(), "no transaction left open");
        }
    }

    #[test]
    fn enums_serialize_lowercase_and_parse_back() {
        for s in [
            RunState::Running,
            RunState::Paused,
            RunState::Aborted,
            RunState::Failed,
            RunState::Completed,
        ] {
            let j = serde_json::to_value(s).unwrap();
            assert_eq!(j, serde_json::json!(s.as_str()));
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        for m in [Mark::Intent, Mark::Done, Mark::Failed, Mark::Info] {
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::json!(m.as_str())
            );
            assert_eq!(m.as_str().parse::<Mark>().unwrap(), m);
        }
        for r in [Request::Pause, Request::Abort] {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
            assert_eq!(r.as_str().parse::<Request>().unwrap(), r);
        }
        let e = "Running".parse::<RunState>().unwrap_err();
        assert!(e.contains("running, paused"), "{e}");
        assert!(RunState::Completed.is_finished() && RunState::Aborted.is_finished());
        assert!(!RunState::Failed.is_finished() && !RunState::Paused.is_finished());
    }

    #[test]
    fn records_are_camel_case() {
        let run = RunRecord {
            run_id: "r1".into(),
            migration_name: "m".into(),
            migration_yaml: "y".into(),
            plan_json: "{}".into(),
            cluster: "in-process simulator".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            state: RunState::Running,
        };
        let j = serde_json::to_value(&run).unwrap();
        assert_eq!(j["runId"], "r1");
        assert_eq!(j["migrationName"], "m");
        assert_eq!(j["planJson"], "{}");
        assert_eq!(j["startedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(j["state"], "running");
        let e = Entry {
            node: Some("w-1".into()),
            wave: Some(2),
            ..Entry::new("2026-01-01T00:00:00Z", "drain", Mark::Intent)
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["mark"], "intent");
        assert_eq!(j["wave"], 2);
        // seq may be left out on input.
        let mut j = j;
        j.as_object_mut().unwrap().remove("seq");
        let back: Entry = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn default_path_is_under_dot_theseus_and_sanitized() {
        assert_eq!(
            default_path("os-migration"),
            PathBuf::from("./.theseus/os-migration.journal.db")
        );
        assert_eq!(
            default_path("../../etc/passwd"),
            PathBuf::from("./.theseus/.._.._etc_passwd.journal.db")
        );
        assert_eq!(
            default_path(""),
            PathBuf::from("./.theseus/migration.journal.db")
        );
    }

    #[test]
    fn io_errors_name_the_file_and_the_fix() {
        let e = JournalError::Io {
            path: "/x/y.db".into(),
            action: "open",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("cannot open journal /x/y.db: permission denied"),
            "{m}"
        );
        assert!(m.contains("check the owner and mode"), "{m}");
        assert!(!e.is_bad_input());
        assert_eq!(e.path(), Path::new("/x/y.db"));
    }

    #[test]
    fn other_errors_name_the_file_and_the_fix() {
        let p = PathBuf::from("/x/y.db");
        let m = JournalError::NotAJournal {
            path: p.clone(),
            why: "not an SQLite database".into(),
        }
        .to_string();
        assert!(
            m.starts_with("journal /x/y.db is not a theseus journal"),
            "{m}"
        );
        let m = JournalError::WrongRun {
            path: p.clone(),
            run_id: "X".into(),
            migration: "Y".into(),
            expected: "Z".into(),
        }
        .to_string();
        assert!(
            m.starts_with("journal /x/y.db belongs to run X of migration Y, not Z"),
            "{m}"
        );
        let m = JournalError::NotFound { path: p.clone() }.to_string();
        assert!(m.contains("no run was started with this journal"), "{m}");
        assert!(
            m.contains("--journal") && m.contains("theseus apply"),
            "{m}"
        );
        let m = JournalError::Unfinished {
            path: p,
            run_id: "X".into(),
            migration: "Y".into(),
            state: RunState::Paused,
        }
        .to_string();
        assert!(m.contains("run X of migration Y, which is paused"), "{m}");
        assert!(
            m.contains("theseus resume") && m.contains("delete the file"),
            "{m}"
        );
    }
}

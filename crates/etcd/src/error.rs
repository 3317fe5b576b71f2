//! The crate's error type. Every message names the thing that failed and, where there is one,
//! the fix.

use std::path::PathBuf;
use std::time::Duration;

/// Which step of a member replacement failed (see [`crate::replace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Health and quorum checks before anything changes.
    Check,
    /// Removing a dead old member before its replacement is added.
    RemoveDead,
    /// `member add --learner`.
    AddLearner,
    /// The start hook for the new member.
    StartNew,
    /// Waiting until the learner has caught up with the leader.
    CatchUp,
    /// Promoting the learner to a voter.
    Promote,
    /// Moving leadership away from the old member.
    MoveLeader,
    /// Removing the old member through another member.
    RemoveOld,
    /// Verifying the cluster after the change.
    Verify,
    /// The stop-and-wipe hook for the old member.
    StopOld,
    /// Undoing a learner add after a failure.
    Rollback,
    /// `hash_kv` comparison after a migration.
    HashKv,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Check => "health and quorum check",
            Step::RemoveDead => "remove the dead old member",
            Step::AddLearner => "add the new member as a learner",
            Step::StartNew => "start the new member",
            Step::CatchUp => "wait for the learner to catch up",
            Step::Promote => "promote the learner",
            Step::MoveLeader => "move leadership",
            Step::RemoveOld => "remove the old member",
            Step::Verify => "verify the cluster",
            Step::StopOld => "stop and wipe the old member",
            Step::Rollback => "roll back",
            Step::HashKv => "compare hash_kv on every member",
        })
    }
}

/// Errors of the etcd operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, URL, name or file given by the user is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// A file named by the user cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The member name does not exist in the cluster.
    #[error(
        "no member named {name:?} in the cluster (members: {known}); check the name with `theseus etcd status`"
    )]
    UnknownMember { name: String, known: String },
    /// The peer or client URL for a new member is already taken.
    #[error("{kind} URL {url} is already in use by {by}; choose a free address for the new member")]
    UrlInUse {
        kind: &'static str,
        url: String,
        by: String,
    },
    /// No endpoint could be reached at all.
    #[error(
        "no etcd endpoint answered: {details}. Check --endpoints (etcd client URLs such as https://10.0.0.1:2379), that etcd runs there, and the TLS flags --cacert/--cert/--key"
    )]
    Unreachable { details: String },
    /// Connecting to one endpoint failed.
    #[error("cannot connect to {endpoint}: {detail}{hint}")]
    Connect {
        endpoint: String,
        detail: String,
        hint: String,
    },
    /// One RPC against one member failed.
    #[error("{op} on {endpoint} failed: {detail}")]
    Rpc {
        op: &'static str,
        endpoint: String,
        detail: String,
    },
    /// A wait ran out of time. `what` names what was waited for, `last` the last observation.
    #[error("timed out after {}s waiting for {what} (last seen: {last})", after.as_secs_f64())]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    /// The operation refuses to run because it would not be safe.
    #[error("refused: {0}")]
    Refused(String),
    /// A member replacement stopped at `step`; the cluster was left as `state` says.
    #[error(
        "replacing member {member:?} failed at step \"{step}\": {cause}. {rollback} Next: {next}"
    )]
    ReplaceFailed {
        member: String,
        step: Step,
        cause: Box<Error>,
        rollback: String,
        next: String,
    },
    /// A hook (start or stop command, or the local launcher) failed.
    #[error("{hook} for member {member:?} failed: {detail}")]
    Hook {
        hook: &'static str,
        member: String,
        detail: String,
    },
    /// A snapshot file is corrupt, truncated or unverifiable.
    #[error("snapshot {}: {detail}", path.display())]
    BadSnapshot { path: PathBuf, detail: String },
    /// Saving a snapshot failed (stream, disk).
    #[error("snapshot save to {} failed: {detail}", path.display())]
    SnapshotSave { path: PathBuf, detail: String },
    /// An external etcd tool (etcdctl, etcdutl) failed or is missing.
    #[error("{tool}: {detail}")]
    Tool { tool: String, detail: String },
    /// A local file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cluster is not healthy; each problem is listed.
    #[error("the cluster is not healthy: {}", problems.join("; "))]
    Unhealthy { problems: Vec<String> },
    /// `hash_kv` differs between members.
    #[error("hash_kv at revision {revision} differs between members: {details}")]
    HashMismatch { revision: i64, details: String },
}

impl Error {
    /// True when the user's input is at fault (exit code 2 in the CLI), and nothing was changed.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::InvalidInput(_)
            | Error::ReadFile { .. }
            | Error::UnknownMember { .. }
            | Error::UrlInUse { .. }
            | Error::BadSnapshot { .. } => true,
            Error::ReplaceFailed { cause, step, .. } => {
                *step == Step::Check && cause.is_bad_input()
            }
            _ => false,
        }
    }

    pub(crate) fn timeout(
        what: impl Into<String>,
        after: Duration,
        last: impl Into<String>,
    ) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
            last: last.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The text of an error and all its sources, de-duplicated ("transport error: tcp connect error:
/// Connection refused").
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

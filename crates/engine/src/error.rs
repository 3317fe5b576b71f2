//! Errors of a run. Each names the node, the object or the gate and what to do next.

use thiserror::Error;

/// Why a run could not start or could not go on. A run that stops on one of these leaves the
/// journal consistent: `theseus resume` continues from it.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The plan cannot run as it is (blocked findings, an operation the engine does not carry
    /// out yet).
    #[error("the plan cannot run: {0}")]
    Refused(String),
    /// Another run holds the cluster's lock.
    #[error(
        "another theseus run holds the lock (Lease {namespace}/{name}, holder {holder}, expires in {expires_in_seconds} s); wait for it to finish, or run `theseus status` where it runs"
    )]
    Locked {
        namespace: String,
        name: String,
        holder: String,
        expires_in_seconds: i64,
    },
    /// The journal failed (disk, permissions): stop before doing anything not recorded.
    #[error("journal: {0}")]
    Journal(#[from] theseus_journal::JournalError),
    /// The Kubernetes API failed outside of a node step.
    #[error("{0}")]
    Cluster(#[from] theseus_cluster::OpsError),
}

/// Why one node's step failed. The node is left uncordoned when its machine was not acted on.
#[derive(Debug, Error, Clone)]
pub enum StepError {
    /// kubectl drain would refuse these pods (no controller, local storage, DaemonSet) without
    /// the named option.
    #[error("drain of {node} refused: {}", reasons.join("; "))]
    DrainRefused { node: String, reasons: Vec<String> },
    /// Evictions were still refused at the drain timeout.
    #[error(
        "drain of {node} timed out after {seconds} s: {} still blocked by PodDisruptionBudget {} (disruptionsAllowed 0); raise the budget or the replicas, or fix the pods that are not Ready, then `theseus resume`",
        pods.join(", "),
        if pdbs.is_empty() { "(none named)".to_string() } else { pdbs.join(", ") }
    )]
    DrainTimeout {
        node: String,
        seconds: u64,
        pods: Vec<String>,
        pdbs: Vec<String>,
    },
    /// Something did not happen in time.
    #[error("{node}: timed out after {seconds} s waiting for {what}")]
    Timeout {
        node: String,
        seconds: u64,
        what: String,
    },
    /// The provider failed.
    #[error("{node}: node action failed: {message}")]
    Provider { node: String, message: String },
    /// A pre- or post-node hook failed.
    #[error("{node}: {hook} hook `{command}` failed: {message}")]
    Hook {
        node: String,
        hook: String,
        command: String,
        message: String,
    },
    /// The Kubernetes API failed during the step.
    #[error("{node}: {message}")]
    Api { node: String, message: String },
    /// The journal failed during the step.
    #[error("{node}: journal: {message}")]
    Journal { node: String, message: String },
}

impl StepError {
    pub(crate) fn api(node: &str, e: impl std::fmt::Display) -> StepError {
        StepError::Api {
            node: node.to_string(),
            message: e.to_string(),
        }
    }
}

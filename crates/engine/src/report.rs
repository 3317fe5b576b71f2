//! The report at the end of a run: what was done, what was left and why, and what the users of
//! the cluster saw.

use serde::Serialize;

/// One probe's results over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub longest_gap_seconds: f64,
}

/// A node the run did not finish.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLeft {
    pub node: String,
    /// `failed`, `stopped` or `not started`.
    pub status: String,
    pub reason: String,
    /// Whether the node is still cordoned (only when the run did not cordon it, or could not
    /// uncordon it).
    pub cordoned: bool,
}

/// The final report of `theseus apply`/`resume`/`simulate`/`demo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub run_id: String,
    pub migration: String,
    /// `completed`, `paused`, `aborted` or `failed`.
    pub state: String,
    /// Why the run stopped before the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub nodes_total: usize,
    pub nodes_migrated: usize,
    pub waves_total: usize,
    pub waves_completed: usize,
    pub nodes_left: Vec<NodeLeft>,
    /// Evictions that succeeded.
    pub evictions: u64,
    /// Evictions refused by a PodDisruptionBudget (429) and retried.
    pub evictions_refused: u64,
    /// Single-replica Deployments surged before their pod was moved.
    pub surged: u64,
    /// Seconds the run took on its clock (virtual time in simulations).
    pub elapsed_seconds: f64,
    /// The plan's estimate and lower bound for the whole migration.
    pub estimated_seconds: u64,
    pub lower_bound_seconds: u64,
    pub probes: Vec<ProbeResult>,
    pub probe_failures: u64,
    /// From the simulator's invariant recorder, when the cluster is the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb_violations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_pods: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<serde_json::Value>,
}

impl Report {
    /// Whether the migration completed with nothing failed, no probe failure and no violation.
    pub fn clean(&self) -> bool {
        self.state == "completed"
            && self.probe_failures == 0
            && self.pdb_violations.unwrap_or(0) == 0
            && self.lost_pods.unwrap_or(0) == 0
    }
}

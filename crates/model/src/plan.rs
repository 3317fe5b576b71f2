//! `Plan`: what the planner answers for a (snapshot, migration) pair. Stable schema, documented
//! field by field here and in `crates/model/docs/plan-schema.md`.
//!
//! Stability: within `apiVersion: theseus.io/v1alpha1`, fields are only added, never renamed or
//! removed, and finding `code`s keep their meaning. Consumers should ignore fields they do not
//! know. A code unknown to an older reader deserializes as `Unknown`.

use serde::{Deserialize, Serialize};

use crate::spec::{OperationKind, StrategyType};

/// `kind` of a plan document.
pub const PLAN_KIND: &str = "Plan";

/// A migration plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// `theseus.io/v1alpha1`.
    pub api_version: String,
    /// `Plan`.
    pub kind: String,
    /// `metadata.name` of the migration.
    pub migration: String,
    /// The operation planned (absent when the spec had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationKind>,
    /// `removeBeforeAdd` or `addBeforeRemove`.
    pub strategy: StrategyType,
    /// The cluster as the snapshot shows it.
    pub cluster: ClusterSummary,
    /// What was selected.
    pub selection: Selection,
    /// Components that change, current → target (the table of `kubeadm upgrade plan`).
    #[serde(default)]
    pub components: Vec<ComponentChange>,
    /// For `upgrade`: the minor hops, one minor version each, and what each needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_path: Vec<UpgradeHop>,
    /// Control plane and etcd.
    pub control_plane: ControlPlanePlan,
    /// Waves in execution order.
    pub waves: Vec<Wave>,
    /// Findings, errors first.
    pub findings: Vec<Finding>,
    /// Duration estimate.
    pub estimate: Estimate,
}

impl Plan {
    /// Whether a finding of severity `error` blocks the plan (the CLI exits 1).
    pub fn is_blocked(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Findings of one severity.
    pub fn findings_of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// Findings with one code.
    pub fn findings_with(&self, code: FindingCode) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.code == code)
    }

    /// The wave (1-based index) that contains `node`, in the last pass that touches it.
    pub fn wave_of(&self, node: &str) -> Option<u32> {
        self.waves
            .iter()
            .rev()
            .find(|w| w.nodes.iter().any(|n| n == node))
            .map(|w| w.index)
    }
}

/// The cluster in brief.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// API server version (oldest, when they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Nodes.
    pub nodes: u32,
    /// Control-plane nodes.
    pub control_plane_nodes: u32,
    /// Pods.
    pub pods: u32,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: u32,
}

/// Which nodes the migration touches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Selected nodes that are planned.
    pub nodes: u32,
    /// Of which control-plane nodes.
    pub control_plane: u32,
    /// Of which workers.
    pub workers: u32,
    /// Selected nodes skipped because they are already at the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Largest worker wave allowed (`maxUnavailable`, or its cap for `auto`).
    pub max_wave_size: u32,
    /// Most drain rounds a multi-node worker wave may take per PDB: a wave evicts at most this
    /// many times the disruptions a PDB allows, one budget at a time (the API server refuses
    /// the rest until the previous round's replacements are Ready). Chosen so that the extra
    /// start-up times stay a small share of a wave's node action.
    #[serde(default = "one")]
    pub max_drain_rounds: u32,
}

fn one() -> u32 {
    1
}

/// One component, current → target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentChange {
    /// `API Server`, `Kubelet`, `OS image`, ...
    pub component: String,
    /// Current values with counts, e.g. `4 x v1.11.1` or `v1.11.1`.
    pub current: String,
    /// Target.
    pub target: String,
}

/// One minor hop of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeHop {
    /// 1-based hop number.
    pub hop: u32,
    /// Version before the hop.
    pub from: String,
    /// Version after the hop (`v1.12.x` when the patch is left to the latest).
    pub to: String,
    /// Whether worker kubelets move in this hop (they may stay up to three minors behind).
    pub workers: bool,
    /// What the hop needs, in order.
    pub steps: Vec<String>,
}

/// Control plane and etcd, as planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlanePlan {
    /// Control-plane nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The primary control-plane node (migrated last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// How the primary was determined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_source: Option<String>,
    /// kubeadm `controlPlaneEndpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    /// `cluster-info` server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_info_server: Option<String>,
    /// Node whose address the endpoint (or cluster-info) names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_node: Option<String>,
    /// Whether the endpoint must be handed to another control-plane node before that node's
    /// wave (and back after).
    pub endpoint_handoff: bool,
    /// etcd quorum arithmetic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdPlan>,
}

/// etcd quorum arithmetic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdPlan {
    /// Voting members.
    pub members: u32,
    /// Healthy voting members.
    pub healthy: u32,
    /// Members needed for quorum.
    pub quorum: u32,
    /// Failures tolerated now.
    pub tolerated_failures: u32,
    /// Further failures tolerated while one member is down for its wave.
    pub tolerated_failures_during_migration: u32,
    /// Where the member list came from: `etcd` (members listed by etcd), `staticPods`,
    /// `inventory`.
    pub source: String,
}

/// What kind of nodes a wave holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WaveKind {
    /// One control-plane node.
    ControlPlane,
    /// Worker nodes.
    Workers,
}

/// A set of nodes taken out together. Waves run one after another; within a wave, nodes are
/// drained and acted on in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// 1-based position in execution order.
    pub index: u32,
    /// Control plane or workers.
    pub kind: WaveKind,
    /// For a multi-hop upgrade: the version this wave moves its nodes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Node names.
    pub nodes: Vec<String>,
    /// Zones of those nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Pods evicted and recreated elsewhere.
    pub evicted_pods: u32,
    /// Of those, pods of single-replica Deployments surged first.
    pub surge_pods: u32,
    /// Pods deleted and not recreated (unmanaged pods with `force`).
    pub deleted_pods: u32,
    /// Drain rounds: the most budgets' worth of one PDB's pods the wave evicts (1: every
    /// eviction is allowed at once).
    #[serde(default = "one")]
    pub drain_rounds: u32,
    /// Estimated duration of the wave, seconds.
    pub estimated_seconds: u64,
    /// Whether the wave cannot run as planned (see the findings naming it).
    pub blocked: bool,
    /// Whether the wave holds the primary control-plane node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary: bool,
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Blocks the plan: the migration would fail or lose availability or data it must not.
    Error,
    /// Costs something (a gap in service, lost scratch data, time) but the plan can run.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// `ERROR`, `WARNING`, `INFO`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// Stable codes of findings. The severity of a code may depend on the spec (e.g. unmanaged pods
/// are an error without `drain.force` and a warning with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FindingCode {
    /// The spec has no usable operation.
    InvalidSpec,
    /// The node selection matches no node.
    EmptySelection,
    /// `spec.nodes.names` names a node the snapshot does not have.
    UnknownNode,
    /// Selected nodes already at the target are skipped.
    NodesAlreadyAtTarget,
    /// A selected node is not Ready.
    NodeNotReady,
    /// A selected node is already cordoned.
    NodeCordoned,
    /// The pods a wave displaces do not fit on the nodes that remain (CPU, memory, pods per node).
    CapacityExceeded,
    /// A displaced pod has no other node its selectors, affinity and tolerations allow.
    NoEligibleNode,
    /// Hard pod anti-affinity leaves no spare node (or zone) for a displaced replica (runbook 003).
    AntiAffinityNeedsSpareNode,
    /// A PDB can never allow a disruption (minAvailable ≥ replicas, maxUnavailable 0, ...).
    PdbNeverAllowsDisruption,
    /// A workload is already below its PDB: no eviction is allowed until it recovers.
    PdbBelowMinimum,
    /// A PDB selects no pod.
    PdbMatchesNoPods,
    /// A pod is covered by more than one PDB (the eviction API refuses it).
    PodInMultiplePdbs,
    /// Replicated workloads without a PDB.
    NoPdb,
    /// A single-replica workload has a gap while its pod moves (no surge).
    SingleReplicaWorkload,
    /// Single-replica Deployments are surged: a replacement starts before the eviction.
    SingleReplicaSurge,
    /// Every ready replica of a workload is on one node: draining it interrupts the service.
    ReplicasOnOneNode,
    /// Pods without a controller: deleted by a forced drain, blocking otherwise.
    UnmanagedPod,
    /// Pods with emptyDir volumes: their data is lost (blocking without deleteEmptyDirData).
    EmptyDirData,
    /// DaemonSet pods stay with their nodes (blocking without ignoreDaemonSets).
    DaemonSetPods,
    /// Static (mirror) pods go down and up with their nodes.
    StaticPods,
    /// Pods are Pending already: the cluster is short of capacity before the migration.
    PendingPods,
    /// `drain.disableEviction` bypasses every PDB.
    EvictionDisabled,
    /// The minor hops of an upgrade.
    UpgradePath,
    /// The target version is older than the cluster.
    DowngradeNotSupported,
    /// HA API servers are more than one minor apart.
    ApiServerSkew,
    /// A kubelet is newer than the API server, or too many minors older.
    KubeletSkew,
    /// The primary control-plane node (migrated last).
    PrimaryControlPlane,
    /// `controlPlaneEndpoint` or `cluster-info` names a node the migration takes down.
    EndpointHandoffRequired,
    /// A single control-plane node: the API is down during its wave.
    ControlPlaneDowntime,
    /// etcd membership and the failures it tolerates.
    EtcdQuorum,
    /// etcd tolerates no further failure while a member is down.
    EtcdNoFaultTolerance,
    /// Taking one etcd member down would lose quorum.
    EtcdQuorumAtRisk,
    /// A wave takes longer than the maintenance window.
    MaintenanceWindowTooShort,
    /// A drain is expected to take longer than `drain.timeout`.
    DrainTimeoutTooShort,
    /// Notes on a control-plane relocation.
    ControlPlaneRelocation,
    /// A code this reader does not know (newer writer).
    #[serde(other)]
    Unknown,
}

/// A reference to a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Kind (`Node`, `Pod`, `Deployment`, `PodDisruptionBudget`, ...).
    pub kind: String,
    /// Namespace, for namespaced objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// A namespaced object.
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }

    /// A cluster-scoped object.
    pub fn cluster(kind: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: None,
            name: name.to_string(),
        }
    }

    /// A node.
    pub fn node(name: &str) -> Self {
        Self::cluster("Node", name)
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A preflight finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `error` blocks, `warning` costs something, `info` is worth knowing.
    pub severity: Severity,
    /// Stable code.
    pub code: FindingCode,
    /// One or two sentences, naming the objects.
    pub message: String,
    /// The objects concerned.
    #[serde(default)]
    pub objects: Vec<ObjectRef>,
    /// How to fix or avoid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Wave concerned (1-based), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
}

/// Duration estimate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Sum of the waves' estimates, seconds.
    pub total_seconds: u64,
    /// The best any ordering could do under the same capacity, PDB and cap limits (never more
    /// than `totalSeconds`): the fewest worker waves times the shortest a wave can be, or one
    /// wave plus the longest chain of one PDB's drain rounds, whichever is longer.
    pub lower_bound_seconds: u64,
    /// Fewest worker waves any ordering needs (the cap and the room for displaced pods; PDBs
    /// cost drain rounds, not waves).
    pub min_worker_waves: u32,
    /// What sets the lower bound: `cap` or `capacity` (the fewest worker waves), `pdb` (one
    /// PDB's drain rounds one after another) or `none`.
    pub min_worker_waves_bound: String,
    /// Maintenance windows the migration needs, when a window is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_windows: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings() {
        assert_eq!(
            serde_json::to_string(&FindingCode::CapacityExceeded).unwrap(),
            "\"CapacityExceeded\""
        );
        let c: FindingCode = serde_json::from_str("\"SomethingNew\"").unwrap();
        assert_eq!(c, FindingCode::Unknown);
        assert_eq!(
            serde_json::to_string(&Severity::Warning).unwrap(),
            "\"warning\""
        );
    }
}

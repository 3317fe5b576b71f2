//! `ClusterSnapshot`: everything the planner needs to know about a cluster, as versioned JSON.
//!
//! ```json
//! {"apiVersion": "theseus.io/v1alpha1", "kind": "ClusterSnapshot", "kubernetesVersion": "v1.33.4",
//!  "nodes": [...], "pods": [...], "workloads": [...], "podDisruptionBudgets": [...],
//!  "services": [...], "namespaces": [...], "controlPlane": {...}, "etcd": {...}}
//! ```
//!
//! Conventions: field names are the camelCase names of the Kubernetes API where one exists;
//! quantities are normalized (CPU in millicores, memory in bytes, see [`crate::quantity`]);
//! optional and empty fields are omitted, so a snapshot of 150,000 pods stays small. The capture
//! code fills one struct per Kubernetes object; derived facts the capture resolves once (the top
//! controller of a pod, the primary control-plane node) are stored so that the planner stays a
//! pure function of the snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::selector::{LabelSelector, Labels, NodeSelector, Taint, Toleration};
use crate::version::KubeVersion;
use crate::{API_VERSION, IntOrPercent};

/// `kind` of a snapshot document.
pub const SNAPSHOT_KIND: &str = "ClusterSnapshot";
/// Node label with the node's hostname (topology key of per-node anti-affinity).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Node label with the node's zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Deprecated zone label, still read when the current one is absent.
pub const LABEL_ZONE_LEGACY: &str = "failure-domain.beta.kubernetes.io/zone";
/// Prefix of node role labels (`node-role.kubernetes.io/control-plane`).
pub const LABEL_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// Role of control-plane nodes.
pub const ROLE_CONTROL_PLANE: &str = "control-plane";
/// Legacy role of control-plane nodes (before Kubernetes 1.20).
pub const ROLE_MASTER: &str = "master";

/// A cluster as captured by `theseus snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSnapshot {
    /// Always `theseus.io/v1alpha1`.
    pub api_version: String,
    /// Always `ClusterSnapshot`.
    pub kind: String,
    /// Where and when the snapshot was taken.
    #[serde(default)]
    pub metadata: SnapshotMetadata,
    /// `gitVersion` of the API server answering `/version` (e.g. `v1.33.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<KubeVersion>,
    /// Every node.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Every pod that is not finished, plus finished pods still bound to a node.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Top-level controllers (Deployments, StatefulSets, DaemonSets, Jobs, ...).
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// PodDisruptionBudgets.
    #[serde(default)]
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    /// Services (used to tell which workloads serve traffic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Namespaces with their labels (needed for `namespaceSelector` in pod affinity terms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    /// Control-plane topology.
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// etcd members, when etcd endpoints were given to the capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdCluster>,
}

/// Provenance of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMetadata {
    /// RFC 3339 time of capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<String>,
    /// kubeconfig context or simulator scenario the snapshot came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Cluster name (kubeadm `clusterName`, Kubean cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// Why a snapshot document was refused.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Not JSON of the snapshot's shape.
    #[error("snapshot is not valid JSON of kind ClusterSnapshot: {0}")]
    Json(#[from] serde_json::Error),
    /// Wrong `apiVersion`.
    #[error("snapshot apiVersion is {found:?}; this theseus reads {API_VERSION:?}")]
    ApiVersion {
        /// The apiVersion found.
        found: String,
    },
    /// Wrong `kind`.
    #[error("document kind is {found:?}, expected \"ClusterSnapshot\"")]
    Kind {
        /// The kind found.
        found: String,
    },
}

impl Default for ClusterSnapshot {
    fn default() -> Self {
        ClusterSnapshot {
            api_version: API_VERSION.to_string(),
            kind: SNAPSHOT_KIND.to_string(),
            metadata: SnapshotMetadata::default(),
            kubernetes_version: None,
            nodes: Vec::new(),
            pods: Vec::new(),
            workloads: Vec::new(),
            pod_disruption_budgets: Vec::new(),
            services: Vec::new(),
            namespaces: Vec::new(),
            control_plane: ControlPlane::default(),
            etcd: None,
        }
    }
}

impl ClusterSnapshot {
    /// Parses a snapshot from JSON and checks `apiVersion` and `kind`.
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        Self::from_json_slice(text.as_bytes())
    }

    /// Parses a snapshot from JSON bytes and checks `apiVersion` and `kind`.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snapshot: ClusterSnapshot = serde_json::from_slice(bytes)?;
        if snapshot.api_version != API_VERSION {
            return Err(SnapshotError::ApiVersion {
                found: snapshot.api_version,
            });
        }
        if snapshot.kind != SNAPSHOT_KIND {
            return Err(SnapshotError::Kind {
                found: snapshot.kind,
            });
        }
        Ok(snapshot)
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Indented JSON.
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The API server version: the newest `kube-apiserver` static pod if known, else
    /// `kubernetesVersion`.
    pub fn apiserver_versions(&self) -> Vec<KubeVersion> {
        let mut v: Vec<KubeVersion> = self
            .control_plane
            .components
            .iter()
            .filter(|c| c.component == COMPONENT_APISERVER)
            .filter_map(|c| c.version.clone())
            .collect();
        if v.is_empty() {
            v.extend(self.kubernetes_version.clone());
        }
        v.sort();
        v.dedup();
        v
    }
}

/// `kube-apiserver`, as named in [`ControlPlaneComponent::component`].
pub const COMPONENT_APISERVER: &str = "kube-apiserver";
/// `kube-controller-manager`.
pub const COMPONENT_CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// `kube-scheduler`.
pub const COMPONENT_SCHEDULER: &str = "kube-scheduler";
/// `etcd`.
pub const COMPONENT_ETCD: &str = "etcd";

/// Resources of a node or requests of a pod, normalized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    #[serde(default)]
    pub cpu_millis: i64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: i64,
}

/// Allocatable resources of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocatable {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Maximum number of pods (kubelet `maxPods`, 110 by default).
    pub pods: i64,
}

/// `v1.NodeAddress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub address: String,
}

/// A node condition (`Ready`, `MemoryPressure`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Node name.
    pub name: String,
    /// `status.addresses`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Roles from `node-role.kubernetes.io/<role>` labels (`control-plane`, `master`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Zone (`topology.kubernetes.io/zone`, or the legacy label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `status.allocatable`.
    pub allocatable: Allocatable,
    /// `status.nodeInfo.osImage`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_image: String,
    /// `status.nodeInfo.kernelVersion`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_version: String,
    /// `status.nodeInfo.kubeletVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<KubeVersion>,
    /// `status.nodeInfo.containerRuntimeVersion`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_runtime_version: String,
    /// `status.nodeInfo.architecture`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    /// `status.conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
    /// `spec.unschedulable` (cordoned).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unschedulable: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Node {
    /// Whether the `Ready` condition is `True`. A node without conditions counts as ready (a
    /// hand-written snapshot need not spell them out).
    pub fn is_ready(&self) -> bool {
        match self.conditions.iter().find(|c| c.kind == "Ready") {
            Some(c) => c.status == "True",
            None => true,
        }
    }

    /// Whether the node is a control-plane node by its roles.
    pub fn is_control_plane(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r == ROLE_CONTROL_PLANE || r == ROLE_MASTER)
    }

    /// Every address (InternalIP first).
    pub fn ips(&self) -> impl Iterator<Item = &str> {
        let internal = self.addresses.iter().filter(|a| a.kind == "InternalIP");
        let other = self.addresses.iter().filter(|a| a.kind != "InternalIP");
        internal.chain(other).map(|a| a.address.as_str())
    }

    /// Whether `host` (an IP or hostname) is one of this node's addresses or its name.
    pub fn has_address(&self, host: &str) -> bool {
        self.name == host || self.addresses.iter().any(|a| a.address == host)
    }

    /// Roles from `node-role.kubernetes.io/<role>` labels, as the capture stores them.
    pub fn roles_from_labels(labels: &Labels) -> Vec<String> {
        labels
            .keys()
            .filter_map(|k| k.strip_prefix(LABEL_ROLE_PREFIX))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Zone from the zone labels, as the capture stores it.
    pub fn zone_from_labels(labels: &Labels) -> Option<String> {
        labels
            .get(LABEL_ZONE)
            .or_else(|| labels.get(LABEL_ZONE_LEGACY))
            .cloned()
    }
}

/// Kind of a top-level controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet without a Deployment.
    ReplicaSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job without a CronJob.
    Job,
    /// batch/v1 CronJob.
    CronJob,
    /// v1 ReplicationController.
    ReplicationController,
    /// Any other controller (a custom resource); its kind as the API names it.
    Other(String),
}

impl From<String> for WorkloadKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Deployment" => WorkloadKind::Deployment,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            "ReplicationController" => WorkloadKind::ReplicationController,
            _ => WorkloadKind::Other(s),
        }
    }
}

impl From<WorkloadKind> for String {
    fn from(k: WorkloadKind) -> String {
        k.as_str().to_string()
    }
}

impl WorkloadKind {
    /// The Kubernetes kind.
    pub fn as_str(&self) -> &str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Other(s) => s,
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The top controller of a pod: its owner chain followed to the end (Pod → ReplicaSet →
/// Deployment gives the Deployment; Pod → Job → CronJob gives the CronJob). Always in the pod's
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerRef {
    /// Kind of the top controller.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

/// `status.phase` of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted, not all containers started (or not yet scheduled).
    Pending,
    /// Bound and at least one container running.
    #[default]
    Running,
    /// Every container exited successfully.
    Succeeded,
    /// Every container exited, at least one failed.
    Failed,
    /// State unknown (node unreachable).
    Unknown,
}

impl PodPhase {
    /// `Succeeded` or `Failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinityTerm {
    /// Pods this term is about.
    #[serde(default)]
    pub label_selector: LabelSelector,
    /// Namespaces of those pods; empty means the pod's own namespace (unless
    /// `namespaceSelector` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces by label; `{}` means every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Node label defining the topology domain (`kubernetes.io/hostname`,
    /// `topology.kubernetes.io/zone`).
    pub topology_key: String,
}

/// Required scheduling constraints of a pod (the `requiredDuringScheduling…` parts of
/// `spec.affinity`; preferred terms do not decide feasibility and are not stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// Required node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeSelector>,
    /// Required pod affinity terms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_anti_affinity: Vec<PodAffinityTerm>,
}

impl Affinity {
    /// No required constraint at all.
    pub fn is_empty(&self) -> bool {
        self.node_affinity.is_none()
            && self.pod_affinity.is_empty()
            && self.pod_anti_affinity.is_empty()
    }
}

/// A pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.nodeName`; none while unscheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Top controller; none for a pod nobody recreates (a "naked" pod, which `kubectl drain`
    /// refuses without `--force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerRef>,
    /// Effective requests: the larger of the sum over containers and the largest init
    /// container, plus pod overhead (what the scheduler counts).
    #[serde(default)]
    pub requests: Resources,
    /// `status.phase`.
    #[serde(default)]
    pub phase: PodPhase,
    /// `Ready` condition is `True`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ready: bool,
    /// Names of emptyDir volumes (their data is lost when the pod is evicted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub empty_dir: Vec<String>,
    /// Mirror pod of a static pod (annotation `kubernetes.io/config.mirror`): not evictable,
    /// goes down and up with its node.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mirror: bool,
    /// `spec.tolerations`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: Labels,
    /// Required affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// `spec.priority`.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// `spec.priorityClassName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// `spec.terminationGracePeriodSeconds` (Kubernetes default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Observed start-up time: from `status.startTime` to the `Ready` transition, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<u32>,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether a DaemonSet owns the pod.
    pub fn is_daemonset(&self) -> bool {
        self.controller
            .as_ref()
            .is_some_and(|c| c.kind == WorkloadKind::DaemonSet)
    }
}

/// Deployment update strategy (or StatefulSet/DaemonSet `updateStrategy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStrategy {
    /// `RollingUpdate`, `Recreate`, `OnDelete`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `rollingUpdate.maxSurge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// `rollingUpdate.maxUnavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// A top-level controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Desired replicas (`spec.replicas`; DaemonSets: `desiredNumberScheduled`; Jobs:
    /// `parallelism`).
    #[serde(default)]
    pub replicas: i32,
    /// Ready replicas (`status.readyReplicas`; DaemonSets: `numberReady`).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Available replicas, when the kind reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Update strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<WorkloadStrategy>,
    /// Pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// `spec.minReadySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

impl Workload {
    /// `Kind namespace/name`.
    pub fn key(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// `status` of a PodDisruptionBudget as the disruption controller last wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PdbStatus {
    /// Healthy pods.
    #[serde(default)]
    pub current_healthy: i32,
    /// Healthy pods required.
    #[serde(default)]
    pub desired_healthy: i32,
    /// Evictions allowed now.
    #[serde(default)]
    pub disruptions_allowed: i32,
    /// Pods counted by the budget.
    #[serde(default)]
    pub expected_pods: i32,
}

/// A PodDisruptionBudget (`policy/v1`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudget {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods covered; an empty selector covers every pod of the namespace.
    #[serde(default)]
    pub selector: LabelSelector,
    /// `spec.minAvailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrPercent>,
    /// `spec.maxUnavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    /// `spec.unhealthyPodEvictionPolicy`: `IfHealthyBudget` (default) or `AlwaysAllow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_pod_eviction_policy: Option<String>,
    /// Last status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PdbStatus>,
}

impl PodDisruptionBudget {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `unhealthyPodEvictionPolicy` is `AlwaysAllow`.
    pub fn always_allow_unhealthy(&self) -> bool {
        self.unhealthy_pod_eviction_policy.as_deref() == Some("AlwaysAllow")
    }
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port.
    pub port: i32,
    /// `TCP`, `UDP`, `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `spec.selector`; empty for Services without selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
    /// `spec.clusterIP`.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
}

/// A namespace and its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// A control-plane component seen as a static (mirror) pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneComponent {
    /// `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `etcd`.
    pub component: String,
    /// Node it runs on.
    pub node: String,
    /// Version from the image tag, when it parses as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<KubeVersion>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What the kubeadm `kubeadm-config` ConfigMap says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmConfig {
    /// `namespace/name` of the ConfigMap (`kube-system/kubeadm-config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// `kubernetesVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<KubeVersion>,
    /// `controlPlaneEndpoint` (`host:port`); for old `MasterConfiguration`s,
    /// `api.advertiseAddress:bindPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    /// `clusterName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// `etcd.external.endpoints`, when etcd is external.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_etcd_endpoints: Vec<String>,
}

/// A host of a Kubean/Kubespray inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryHost {
    /// Inventory host name (the node name).
    pub name: String,
    /// `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `access_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_ip: Option<String>,
    /// `ansible_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ansible_host: Option<String>,
}

/// A Kubean/Kubespray inventory (the `hosts-conf` ConfigMap), groups in inventory order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// `namespace/name` of the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// `all.hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<InventoryHost>,
    /// `kube_control_plane` hosts in order; the first is the primary control-plane node
    /// (runbook 000: "master1").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_control_plane: Vec<String>,
    /// `kube_node` hosts in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_node: Vec<String>,
    /// `etcd` hosts in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<String>,
}

/// How the primary control-plane node was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PrimarySource {
    /// First host of `kube_control_plane` in the Kubean/Kubespray inventory.
    Inventory,
    /// The node whose address `controlPlaneEndpoint` names.
    ControlPlaneEndpoint,
    /// The node whose address the `cluster-info` server names.
    ClusterInfo,
    /// First control-plane node by name (nothing better known).
    FirstByName,
    /// Given explicitly.
    Explicit,
}

impl PrimarySource {
    /// Human description.
    pub fn describe(self) -> &'static str {
        match self {
            PrimarySource::Inventory => "first of kube_control_plane in the Kubean inventory",
            PrimarySource::ControlPlaneEndpoint => "named by kubeadm controlPlaneEndpoint",
            PrimarySource::ClusterInfo => "named by the cluster-info server",
            PrimarySource::FirstByName => "first control-plane node by name",
            PrimarySource::Explicit => "given in the snapshot",
        }
    }
}

/// Control-plane topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    /// Control-plane node names (by role label, static pods or inventory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// The primary control-plane node, migrated last; see [`ControlPlane::implied_primary`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// How `primary` was determined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_source: Option<PrimarySource>,
    /// Control-plane static pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ControlPlaneComponent>,
    /// kubeadm `ClusterConfiguration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm: Option<KubeadmConfig>,
    /// `server` of the kubeconfig in the `kube-public/cluster-info` ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_info_server: Option<String>,
    /// Kubean/Kubespray inventory, when a `hosts-conf` ConfigMap was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

/// The host part of an endpoint: `https://10.0.0.1:6443` → `10.0.0.1`, `[fd00::1]:6443` →
/// `fd00::1`, `api.example.com` → `api.example.com`.
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    // A bare IPv6 address has several colons and no port.
    if rest.matches(':').count() > 1 {
        return rest;
    }
    rest.split(':').next().unwrap_or(rest)
}

impl ControlPlane {
    /// The primary control-plane node and how it was determined, from the stored `primary`, else:
    /// the first `kube_control_plane` host of the inventory; the node whose address
    /// `controlPlaneEndpoint` or the `cluster-info` server names; the first control-plane node
    /// by name.
    pub fn implied_primary(&self, nodes: &[Node]) -> Option<(String, PrimarySource)> {
        if let Some(p) = &self.primary {
            return Some((
                p.clone(),
                self.primary_source.unwrap_or(PrimarySource::Explicit),
            ));
        }
        let cp_nodes = self.control_plane_node_names(nodes);
        if let Some(first) = self
            .inventory
            .as_ref()
            .and_then(|i| i.kube_control_plane.first())
        {
            return Some((first.clone(), PrimarySource::Inventory));
        }
        let by_address = |endpoint: &str| {
            let host = endpoint_host(endpoint);
            nodes
                .iter()
                .filter(|n| cp_nodes.contains(&n.name))
                .find(|n| n.has_address(host))
                .map(|n| n.name.clone())
        };
        if let Some(name) = self
            .kubeadm
            .as_ref()
            .and_then(|k| k.control_plane_endpoint.as_deref())
            .and_then(by_address)
        {
            return Some((name, PrimarySource::ControlPlaneEndpoint));
        }
        if let Some(name) = self.cluster_info_server.as_deref().and_then(by_address) {
            return Some((name, PrimarySource::ClusterInfo));
        }
        cp_nodes
            .into_iter()
            .min()
            .map(|n| (n, PrimarySource::FirstByName))
    }

    /// Control-plane node names: `nodes` if filled, else nodes with a control-plane role.
    pub fn control_plane_node_names(&self, nodes: &[Node]) -> Vec<String> {
        if !self.nodes.is_empty() {
            return self.nodes.clone();
        }
        nodes
            .iter()
            .filter(|n| n.is_control_plane())
            .map(|n| n.name.clone())
            .collect()
    }
}

/// An etcd member (`etcdctl member list` plus `endpoint status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    /// Member ID in hex.
    pub id: String,
    /// Member name.
    #[serde(default)]
    pub name: String,
    /// Peer URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// A learner (non-voting) member.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
    /// Whether its endpoint answered a status request.
    #[serde(default = "default_true")]
    pub healthy: bool,
    /// Whether it is the Raft leader.
    #[serde(default, skip_serializing_if = "is_false")]
    pub leader: bool,
    /// The node it runs on, when its peer URL names a node address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn default_true() -> bool {
    true
}

/// The etcd cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdCluster {
    /// Endpoints the capture used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Members.
    #[serde(default)]
    pub members: Vec<EtcdMember>,
    /// Server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts() {
        assert_eq!(endpoint_host("https://10.6.212.11:6443"), "10.6.212.11");
        assert_eq!(endpoint_host("10.6.212.11:6443"), "10.6.212.11");
        assert_eq!(endpoint_host("api.example.com"), "api.example.com");
        assert_eq!(endpoint_host("https://[fd00::1]:6443/"), "fd00::1");
        assert_eq!(endpoint_host("fd00::1"), "fd00::1");
    }

    #[test]
    fn json_round_trip_and_checks() {
        let mut s = ClusterSnapshot::default();
        s.nodes.push(Node {
            name: "n1".into(),
            allocatable: Allocatable {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                pods: 110,
            },
            kubelet_version: Some(KubeVersion::parse("v1.33.4").unwrap()),
            ..Default::default()
        });
        s.pods.push(Pod {
            namespace: "default".into(),
            name: "p".into(),
            node_name: Some("n1".into()),
            controller: Some(ControllerRef {
                kind: WorkloadKind::Other("CloneSet".into()),
                name: "c".into(),
            }),
            ..Default::default()
        });
        let json = s.to_json().unwrap();
        assert!(json.contains("\"apiVersion\":\"theseus.io/v1alpha1\""));
        assert!(json.contains("\"kind\":\"CloneSet\""));
        assert!(json.contains("\"kubeletVersion\":\"v1.33.4\""));
        assert_eq!(ClusterSnapshot::from_json(&json).unwrap(), s);
        let wrong = json.replace("theseus.io/v1alpha1", "theseus.io/v9");
        assert!(matches!(
            ClusterSnapshot::from_json(&wrong),
            Err(SnapshotError::ApiVersion { .. })
        ));
        assert!(ClusterSnapshot::from_json("{").is_err());
    }

    #[test]
    fn primary_is_implied() {
        let node = |name: &str, ip: &str| Node {
            name: name.into(),
            roles: vec!["control-plane".into()],
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: ip.into(),
            }],
            ..Default::default()
        };
        let nodes = vec![node("m1", "10.0.0.1"), node("m2", "10.0.0.2")];
        let mut cp = ControlPlane::default();
        assert_eq!(
            cp.implied_primary(&nodes),
            Some(("m1".into(), PrimarySource::FirstByName))
        );
        cp.cluster_info_server = Some("https://10.0.0.2:6443".into());
        assert_eq!(
            cp.implied_primary(&nodes),
            Some(("m2".into(), PrimarySource::ClusterInfo))
        );
        cp.inventory = Some(Inventory {
            kube_control_plane: vec!["m1".into(), "m2".into()],
            ..Default::default()
        });
        assert_eq!(
            cp.implied_primary(&nodes),
            Some(("m1".into(), PrimarySource::Inventory))
        );
    }
}

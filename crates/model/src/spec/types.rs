//! Types of the `Migration` spec and their defaults.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::API_VERSION;
use crate::selector::LabelSelector;
use crate::version::KubeVersion;

/// `kind` of a migration document.
pub const MIGRATION_KIND: &str = "Migration";

/// A migration: `apiVersion: theseus.io/v1alpha1`, `kind: Migration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Migration {
    /// `theseus.io/v1alpha1`.
    pub api_version: String,
    /// `Migration`.
    pub kind: String,
    /// Name and description.
    pub metadata: MigrationMetadata,
    /// What to do.
    pub spec: MigrationSpec,
}

/// Metadata of a migration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationMetadata {
    /// Name (DNS-1123 label: lower case letters, digits, `-`); names the journal of the run.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The body of a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationSpec {
    /// The one operation to perform on every selected node.
    pub operation: Operation,
    /// Which nodes (default: every node).
    #[serde(default)]
    pub nodes: NodeSelection,
    /// Order and parallelism.
    #[serde(default)]
    pub strategy: Strategy,
    /// How nodes are drained (kubectl drain's options).
    #[serde(default)]
    pub drain: DrainPolicy,
    /// Surge for single-replica Deployments.
    #[serde(default)]
    pub surge: Surge,
    /// Checks between waves.
    #[serde(default)]
    pub gates: Gates,
    /// Availability probes sampled during the whole run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// Commands run on this machine around each node's step.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// Time limits.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// How node actions are carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// When the run may act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
}

/// The operation: exactly one of the four fields is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Reinstall every selected node with another OS image (runbook 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_migration: Option<OsMigration>,
    /// Upgrade Kubernetes, one minor version at a time (runbooks 002, 003).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,
    /// Cordon, drain, act (e.g. reboot), uncordon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// Move control-plane (and etcd) members to new hosts (runbook 001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_relocation: Option<ControlPlaneRelocation>,
}

/// Which operation a migration performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationKind {
    /// `osMigration`.
    OsMigration,
    /// `upgrade`.
    Upgrade,
    /// `maintenance`.
    Maintenance,
    /// `controlPlaneRelocation`.
    ControlPlaneRelocation,
}

impl OperationKind {
    /// The field name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::OsMigration => "osMigration",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Maintenance => "maintenance",
            OperationKind::ControlPlaneRelocation => "controlPlaneRelocation",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Operation {
    /// Every operation that is set (a valid spec has exactly one).
    pub fn kinds(&self) -> Vec<OperationKind> {
        let mut v = Vec::new();
        if self.os_migration.is_some() {
            v.push(OperationKind::OsMigration);
        }
        if self.upgrade.is_some() {
            v.push(OperationKind::Upgrade);
        }
        if self.maintenance.is_some() {
            v.push(OperationKind::Maintenance);
        }
        if self.control_plane_relocation.is_some() {
            v.push(OperationKind::ControlPlaneRelocation);
        }
        v
    }

    /// The operation, if exactly one is set.
    pub fn kind(&self) -> Option<OperationKind> {
        match self.kinds().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// `osMigration`: reinstall nodes with another OS image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OsMigration {
    /// OS image as the node reports it after the migration (`status.nodeInfo.osImage`, e.g.
    /// `Ubuntu 22.04.4 LTS`). Nodes already on it are skipped.
    pub target_os_image: String,
    /// Kernel the node should report afterwards, if checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kernel_version: Option<String>,
    /// Provider-specific image reference (ISO, AMI, PXE profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `upgrade`: move to another Kubernetes version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upgrade {
    /// Target version (`v1.13` or `v1.13.5`).
    pub target_version: KubeVersion,
    /// Exact versions for the intermediate minor hops (e.g. `[v1.12.10]` for v1.11 → v1.13);
    /// each must be one minor above the previous. Hops not listed use the latest patch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<KubeVersion>,
}

/// `maintenance`: an action on each node between drain and uncordon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maintenance {
    /// Action name the provider understands (`reboot`, `kernel-update`, ...).
    pub action: String,
    /// Parameters for the action.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// `controlPlaneRelocation`: move control-plane hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneRelocation {
    /// Old host → new host, processed one at a time.
    pub moves: Vec<HostMove>,
}

/// One control-plane host move.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostMove {
    /// Current control-plane node.
    pub from: String,
    /// New host name.
    pub to: String,
    /// Address of the new host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Node selection. Every criterion given must hold (they are ANDed); `exclude` removes nodes.
/// Nothing given selects every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelection {
    /// Label selector on node labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Node names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Roles: `control-plane` (also matches legacy `master`), `worker` (every node that is not a
    /// control-plane node), or any `node-role.kubernetes.io/<role>` role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Node names never to touch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Order in which a node is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyType {
    /// Drain and remove the node, act, re-add it with the same name and IP (runbook 000). Also
    /// the in-place flow of upgrades and maintenance.
    #[default]
    RemoveBeforeAdd,
    /// A new node joins first, then the old one is drained and removed.
    AddBeforeRemove,
}

impl StrategyType {
    /// The name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyType::RemoveBeforeAdd => "removeBeforeAdd",
            StrategyType::AddBeforeRemove => "addBeforeRemove",
        }
    }
}

/// How many worker nodes may be out at once: `auto` (as many as is safe), a number, or a
/// percentage of the selected workers (rounded down, at least 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// As many as capacity and PDBs allow, up to `maxUnavailableCap`.
    #[default]
    Auto,
    /// At most this many nodes.
    Count(u32),
    /// At most this percentage of the selected worker nodes.
    Percent(u32),
}

impl MaxUnavailable {
    /// The number of nodes for `total` selected workers (`None` for `auto`).
    pub fn resolve(self, total: usize) -> Option<usize> {
        match self {
            MaxUnavailable::Auto => None,
            MaxUnavailable::Count(n) => Some(n as usize),
            MaxUnavailable::Percent(p) => Some(((total * p as usize) / 100).max(1)),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Auto => f.write_str("auto"),
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxUnavailable::Count(n) => s.serialize_u32(*n),
            _ => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = MaxUnavailable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto`, a number of nodes or a percentage such as \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxUnavailable, E> {
                u32::try_from(v)
                    .map(MaxUnavailable::Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxUnavailable, E> {
                u32::try_from(v).map(MaxUnavailable::Count).map_err(|_| {
                    E::custom(format!(
                        "must be `auto`, a positive number or a percentage, got {v}"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxUnavailable, E> {
                let t = v.trim();
                if t == "auto" {
                    return Ok(MaxUnavailable::Auto);
                }
                let bad = || {
                    E::custom(format!(
                        "invalid value {v:?}: expected `auto`, a number of nodes or a percentage such as \"25%\""
                    ))
                };
                if let Some(p) = t.strip_suffix('%') {
                    return p
                        .trim()
                        .parse()
                        .map(MaxUnavailable::Percent)
                        .map_err(|_| bad());
                }
                t.parse().map(MaxUnavailable::Count).map_err(|_| bad())
            }
        }
        d.deserialize_any(V)
    }
}

/// Default cap on `maxUnavailable: auto`: 20% of the selected workers (Kubespray's default
/// upgrade batch), so that `auto` never takes most of a cluster down at once even when it could.
pub const DEFAULT_MAX_UNAVAILABLE_CAP: MaxUnavailable = MaxUnavailable::Percent(20);

/// Order and parallelism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// `removeBeforeAdd` (default) or `addBeforeRemove`.
    #[serde(default, rename = "type")]
    pub kind: StrategyType,
    /// Worker nodes out at once (default `auto`).
    #[serde(default)]
    pub max_unavailable: MaxUnavailable,
    /// Upper bound for `auto` (default 20%); only allowed with `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_cap: Option<MaxUnavailable>,
    /// Finish one zone before starting the next; waves never mix zones (default: waves spread
    /// across zones).
    #[serde(default)]
    pub zone_by_zone: bool,
    /// Workloads with two or more replicas and no PDB keep at least one replica running in every
    /// wave, as if they had a budget (default true).
    #[serde(default = "yes")]
    pub protect_unbudgeted: bool,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            kind: StrategyType::RemoveBeforeAdd,
            max_unavailable: MaxUnavailable::Auto,
            max_unavailable_cap: None,
            zone_by_zone: false,
            protect_unbudgeted: true,
        }
    }
}

impl Strategy {
    /// The largest worker wave for `total` selected workers: `maxUnavailable` if a number or a
    /// percentage, else the cap (default 20%). At least 1.
    pub fn max_wave_size(&self, total: usize) -> usize {
        let n = match self.max_unavailable {
            MaxUnavailable::Auto => self
                .max_unavailable_cap
                .unwrap_or(DEFAULT_MAX_UNAVAILABLE_CAP)
                .resolve(total)
                .unwrap_or(1),
            other => other.resolve(total).unwrap_or(1),
        };
        n.max(1)
    }
}

fn yes() -> bool {
    true
}

/// Drain policy: the options of `kubectl drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainPolicy {
    /// `--ignore-daemonsets` (default true; DaemonSet pods stay and come back with the node).
    #[serde(default = "yes")]
    pub ignore_daemon_sets: bool,
    /// `--delete-emptydir-data` (default false: pods with emptyDir volumes block the drain).
    #[serde(default)]
    pub delete_empty_dir_data: bool,
    /// `--force` (default false: pods without a controller block the drain; with it they are
    /// deleted and not recreated).
    #[serde(default)]
    pub force: bool,
    /// `--grace-period` in seconds; -1 (default) uses each pod's own.
    #[serde(default = "minus_one")]
    pub grace_period_seconds: i64,
    /// `--timeout` for one node's drain (default 15m; theseus never waits without a limit).
    #[serde(default = "default_drain_timeout")]
    pub timeout: SpecDuration,
    /// `--skip-wait-for-delete-timeout` in seconds (0: always wait).
    #[serde(default)]
    pub skip_wait_for_delete_timeout_seconds: u64,
    /// `--disable-eviction`: delete instead of evict, bypassing PDBs (default false).
    #[serde(default)]
    pub disable_eviction: bool,
    /// `--pod-selector`: only pods matching this label selector are drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
}

fn minus_one() -> i64 {
    -1
}

fn default_drain_timeout() -> SpecDuration {
    SpecDuration(15 * 60)
}

impl Default for DrainPolicy {
    fn default() -> Self {
        DrainPolicy {
            ignore_daemon_sets: true,
            delete_empty_dir_data: false,
            force: false,
            grace_period_seconds: -1,
            timeout: default_drain_timeout(),
            skip_wait_for_delete_timeout_seconds: 0,
            disable_eviction: false,
            pod_selector: None,
        }
    }
}

/// Surge: start a replacement elsewhere before evicting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Surge {
    /// For Deployments with one replica, start a second pod on another node and wait until it is
    /// Ready before evicting the first: no gap instead of a start-up-long gap (default true).
    #[serde(default = "yes")]
    pub single_replica_deployments: bool,
}

impl Default for Surge {
    fn default() -> Self {
        Surge {
            single_replica_deployments: true,
        }
    }
}

/// When a person must confirm before the run goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ManualApproval {
    /// Never (default).
    #[default]
    Never,
    /// After the first wave.
    FirstWave,
    /// After every wave.
    EveryWave,
    /// Before the first control-plane wave.
    ControlPlane,
}

/// Checks after each wave before the next starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gates {
    /// The wave's nodes are Ready again (default true).
    #[serde(default = "yes")]
    pub node_ready: bool,
    /// Replacement pods are Ready (default true).
    #[serde(default = "yes")]
    pub pods_ready: bool,
    /// No pod is Pending (default true).
    #[serde(default = "yes")]
    pub no_pending_pods: bool,
    /// Probes have not failed beyond their threshold (default true).
    #[serde(default = "yes")]
    pub probes: bool,
    /// Time to watch the cluster after a wave before the next (default 30s).
    #[serde(default = "default_soak")]
    pub soak: SpecDuration,
    /// Pauses for a person (default never).
    #[serde(default)]
    pub manual_approval: ManualApproval,
}

fn default_soak() -> SpecDuration {
    SpecDuration(30)
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            node_ready: true,
            pods_ready: true,
            no_pending_pods: true,
            probes: true,
            soak: default_soak(),
            manual_approval: ManualApproval::Never,
        }
    }
}

/// An availability probe. Exactly one of `http`, `tcp`, `service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// Name in reports.
    pub name: String,
    /// HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Requests to a Service of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceProbe>,
    /// Time between requests (default 1s).
    #[serde(default = "one_second")]
    pub interval: SpecDuration,
    /// Time limit of one request (default 2s).
    #[serde(default = "two_seconds")]
    pub timeout: SpecDuration,
    /// Consecutive failures that fail the gate (default 3).
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

fn one_second() -> SpecDuration {
    SpecDuration(1)
}
fn two_seconds() -> SpecDuration {
    SpecDuration(2)
}
fn three() -> u32 {
    3
}

/// An HTTP probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// URL.
    pub url: String,
    /// Expected status (default: any 2xx or 3xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// `https://` only: PEM file of the certificate authorities to trust, instead of the
    /// system's roots (an internal CA, a self-signed ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `https://` only: accept any server certificate (the TLS handshake and its signatures are
    /// still checked). Off unless asked for by name, like kubeconfig's
    /// `insecure-skip-tls-verify`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

/// A TCP probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// `host:port`.
    pub address: String,
}

/// A probe of a cluster Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceProbe {
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Port (default: the Service's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// Time limits of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Provider action on one node (default 30m).
    #[serde(default = "thirty_minutes")]
    pub node_action: SpecDuration,
    /// Node Ready after its action (default 10m).
    #[serde(default = "ten_minutes")]
    pub node_ready: SpecDuration,
    /// Replacement pods Ready after a drain (default 10m).
    #[serde(default = "ten_minutes")]
    pub pods_ready: SpecDuration,
    /// One whole wave (default: none beyond the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<SpecDuration>,
}

/// Commands (`sh -c`) run around each node's step, with `THESEUS_NODE`, `THESEUS_NODE_IP`,
/// `THESEUS_HOOK` (`preNode`/`postNode`) and `THESEUS_RUN_ID` in the environment. A pre-node hook
/// runs before the cordon (a failure fails the step before anything changed); a post-node hook
/// after the uncordon (a failure fails the step and pauses the run). Hooks may run again on a
/// resume, so they must be idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_node: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_node: Vec<String>,
    /// Per command.
    #[serde(default = "five_minutes")]
    pub timeout: SpecDuration,
}

fn five_minutes() -> SpecDuration {
    SpecDuration(5 * 60)
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_node: Vec::new(),
            post_node: Vec::new(),
            timeout: five_minutes(),
        }
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.pre_node.is_empty() && self.post_node.is_empty()
    }
}

fn thirty_minutes() -> SpecDuration {
    SpecDuration(30 * 60)
}
fn ten_minutes() -> SpecDuration {
    SpecDuration(10 * 60)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            node_action: thirty_minutes(),
            node_ready: ten_minutes(),
            pods_ready: ten_minutes(),
            wave: None,
        }
    }
}

/// Kind of node-action provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProviderType {
    /// The simulator's machines.
    Sim,
    /// A local command per node.
    Command,
    /// A command over SSH on the node.
    Ssh,
    /// An Ansible playbook limited to the node.
    Ansible,
    /// Kubean `ClusterOperation`s (remove-node.yml, scale.yml, ...).
    Kubean,
}

impl ProviderType {
    /// The name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Sim => "sim",
            ProviderType::Command => "command",
            ProviderType::Ssh => "ssh",
            ProviderType::Ansible => "ansible",
            ProviderType::Kubean => "kubean",
        }
    }
}

/// How node actions are carried out. The block named by `type` is required (except for `sim`);
/// the others must be absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    /// Which provider.
    #[serde(rename = "type")]
    pub kind: ProviderType,
    /// Expected duration of one node's action, for estimates (default by operation: osMigration
    /// 20m, upgrade 5m (control plane 10m), maintenance 5m, controlPlaneRelocation 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_action_duration: Option<SpecDuration>,
    /// `command` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandProvider>,
    /// `ssh` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshProvider>,
    /// `ansible` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ansible: Option<AnsibleProvider>,
    /// `kubean` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubean: Option<KubeanProvider>,
}

/// A local command; `{node}`, `{ip}` and `{action}` are replaced in each argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandProvider {
    /// Program and arguments.
    pub run: Vec<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A command over SSH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshProvider {
    /// Remote user (default: the SSH default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Port (default 22).
    #[serde(default = "ssh_port")]
    pub port: u16,
    /// Private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Remote command and arguments.
    pub run: Vec<String>,
}

fn ssh_port() -> u16 {
    22
}

/// An Ansible playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnsibleProvider {
    /// Playbook path.
    pub playbook: String,
    /// Inventory path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// `--extra-vars`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_vars: BTreeMap<String, String>,
}

/// Kubean ClusterOperations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeanProvider {
    /// `clusters.kubean.io` name.
    pub cluster: String,
    /// Namespace of the ClusterOperations (default `kubean-system`).
    #[serde(default = "kubean_namespace")]
    pub namespace: String,
    /// spray-job image (default: the one of the cluster's last operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn kubean_namespace() -> String {
    "kubean-system".to_string()
}

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// When the run may start waves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Start, `HH:MM`.
    pub start: TimeOfDay,
    /// End, `HH:MM`; before `start` means the window crosses midnight.
    pub end: TimeOfDay,
    /// IANA time zone (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// Days on which the window opens (default: every day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
}

fn utc() -> String {
    "UTC".to_string()
}

impl MaintenanceWindow {
    /// Length of the window in seconds (0 if start equals end).
    pub fn length_seconds(&self) -> u64 {
        let (s, e) = (u64::from(self.start.0), u64::from(self.end.0));
        ((e + 24 * 60 - s) % (24 * 60)) * 60
    }
}

/// A time of day, minutes after midnight; written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub u16);

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TimeOfDay;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time of day \"HH:MM\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeOfDay, E> {
                let bad = || {
                    E::custom(format!(
                        "invalid time {v:?}: expected \"HH:MM\", e.g. \"22:00\""
                    ))
                };
                let (h, m) = v.trim().split_once(':').ok_or_else(bad)?;
                let (h, m): (u16, u16) =
                    (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                if h > 23 || m > 59 {
                    return Err(bad());
                }
                Ok(TimeOfDay(h * 60 + m))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeOfDay, E> {
                // YAML 1.1 reads 22:00 as the sexagesimal number 1320.
                if v < 24 * 60 {
                    Ok(TimeOfDay(v as u16))
                } else {
                    Err(E::custom(format!("invalid time {v}: expected \"HH:MM\"")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in whole seconds, written `90s`, `15m`, `1h30m` or as a number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecDuration(pub u64);

impl SpecDuration {
    /// Seconds.
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// Parses `1h30m`, `90s`, `15m`, `2h`, `0`, `45` (seconds).
    pub fn parse(s: &str) -> Option<SpecDuration> {
        let t = s.trim();
        if t.is_empty() {
            return None;
        }
        if let Ok(n) = t.parse::<u64>() {
            return Some(SpecDuration(n));
        }
        let mut total: u64 = 0;
        let mut num: Option<u64> = None;
        for c in t.chars() {
            if let Some(d) = c.to_digit(10) {
                num = Some(
                    num.unwrap_or(0)
                        .checked_mul(10)?
                        .checked_add(u64::from(d))?,
                );
                continue;
            }
            let unit = match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            total = total.checked_add(num.take()?.checked_mul(unit)?)?;
        }
        if num.is_some() {
            return None;
        }
        Some(SpecDuration(total))
    }
}

impl fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, (self.0 % 3600) / 60, self.0 % 60);
        if self.0 == 0 {
            return f.write_str("0s");
        }
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for SpecDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = SpecDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 90s, 15m or 1h30m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SpecDuration, E> {
                Ok(SpecDuration(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SpecDuration, E> {
                u64::try_from(v)
                    .map(SpecDuration)
                    .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SpecDuration, E> {
                SpecDuration::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration {v:?}: expected a number of seconds or hours/minutes/seconds such as 90s, 15m, 1h30m"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Migration {
    /// A migration with defaults everywhere but the operation.
    pub fn new(name: &str, operation: Operation) -> Self {
        Migration {
            api_version: API_VERSION.to_string(),
            kind: MIGRATION_KIND.to_string(),
            metadata: MigrationMetadata {
                name: name.to_string(),
                ..Default::default()
            },
            spec: MigrationSpec {
                operation,
                nodes: NodeSelection::default(),
                strategy: Strategy::default(),
                drain: DrainPolicy::default(),
                surge: Surge::default(),
                gates: Gates::default(),
                probes: Vec::new(),
                hooks: Hooks::default(),
                timeouts: Timeouts::default(),
                provider: None,
                maintenance_window: None,
            },
        }
    }

    /// The YAML of this migration (every default spelled out).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(SpecDuration::parse("1h30m"), Some(SpecDuration(5400)));
        assert_eq!(SpecDuration::parse("90s"), Some(SpecDuration(90)));
        assert_eq!(SpecDuration::parse("45"), Some(SpecDuration(45)));
        assert_eq!(SpecDuration::parse("2h"), Some(SpecDuration(7200)));
        for bad in ["", "h", "1x", "1h30", "-5s", "1.5h", "m5"] {
            assert_eq!(SpecDuration::parse(bad), None, "{bad}");
        }
        assert_eq!(SpecDuration(5400).to_string(), "1h30m");
        assert_eq!(SpecDuration(0).to_string(), "0s");
        assert_eq!(SpecDuration(61).to_string(), "1m1s");
    }

    #[test]
    fn max_unavailable_resolves() {
        assert_eq!(MaxUnavailable::Percent(20).resolve(4), Some(1));
        assert_eq!(MaxUnavailable::Percent(50).resolve(10), Some(5));
        assert_eq!(MaxUnavailable::Count(3).resolve(10), Some(3));
        assert_eq!(MaxUnavailable::Auto.resolve(10), None);
        let s = Strategy::default();
        assert_eq!(s.max_wave_size(100), 20);
        assert_eq!(s.max_wave_size(3), 1);
    }

    #[test]
    fn windows() {
        let w = MaintenanceWindow {
            start: TimeOfDay(22 * 60),
            end: TimeOfDay(6 * 60),
            timezone: "UTC".into(),
            days: vec![],
        };
        assert_eq!(w.length_seconds(), 8 * 3600);
    }
}

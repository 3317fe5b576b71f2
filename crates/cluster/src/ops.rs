//! [`Ops`]: every Kubernetes operation the engine needs (nodes, pods and drains, workloads and
//! surges, PodDisruptionBudgets, the lock Lease), answered with plain structs so that no other
//! crate sees kube-rs or k8s-openapi types. [`select_for_drain`] is kubectl drain's pod filter,
//! without I/O.
//!
//! Nothing here retries on its own except where optimistic concurrency asks for it (a 409 on a
//! write pinned to a `resourceVersion` is re-read and re-decided); waits and retries of refused
//! evictions belong to the caller. Build the client with `ClientOptions { no_retry: true, .. }`
//! so that a 429 from the eviction API reaches the caller at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, MicroTime, ObjectMeta, OwnerReference,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{OpsError, error_chain};

/// Annotation on a Node that a run cordoned; the value is the run id. [`Ops::uncordon`] removes
/// it, so a resumed run knows which cordons are its own.
pub const CORDONED_BY: &str = "theseus.io/cordoned-by";

/// Annotation on a Deployment being surged; the value is JSON
/// `{"run": "...", "node": "...", "originalReplicas": N}`, what [`Ops::surge_end`] restores.
pub const SURGE_ANNOTATION: &str = "theseus.io/surge";

/// The ReplicaSet controller deletes the pods with the lowest cost first when it scales down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The annotation the kubelet puts on mirror pods (static pods seen through the API).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Items per list request, as kubectl's `--chunk-size`.
const PAGE: u32 = 500;

/// How often a write pinned to a `resourceVersion` is re-read and retried after a 409.
const CAS_ATTEMPTS: usize = 5;

/// A Node as the engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: changes when the Node object is deleted and registered again.
    pub uid: String,
    /// `metadata.creationTimestamp`, RFC 3339.
    pub creation_timestamp: Option<String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// The run id in the [`CORDONED_BY`] annotation: which run cordoned the node.
    pub cordoned_by: Option<String>,
    /// The Ready condition: `Some(true)`, `Some(false)`, or none when Unknown or absent.
    pub ready: Option<bool>,
    /// The Ready condition's reason (`KubeletReady`, `NodeStatusUnknown`, ...).
    pub ready_reason: Option<String>,
    /// `status.nodeInfo.osImage`.
    pub os_image: String,
    /// `status.nodeInfo.kernelVersion`.
    pub kernel_version: String,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `status.nodeInfo.bootID`: changes on every boot (a reboot happened).
    pub boot_id: String,
    /// The first `InternalIP` address.
    pub internal_ip: Option<String>,
    /// Roles from the `node-role.kubernetes.io/<role>` labels (and `kubernetes.io/role`),
    /// sorted.
    pub roles: Vec<String>,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// `topology.kubernetes.io/zone` (or the deprecated failure-domain label).
    pub zone: Option<String>,
}

/// The controller of a pod (its ownerReference with `controller: true`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, `Node` (mirror pods), ...
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// A Pod as the engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: a StatefulSet's replacement pod has the same name and another uid.
    pub uid: String,
    /// `spec.nodeName`; none while unbound.
    pub node: Option<String>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`; empty if unset).
    pub phase: String,
    /// The Ready condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set: the pod is terminating.
    pub deleting: bool,
    /// A mirror pod (the [`MIRROR_POD_ANNOTATION`]): a static pod, not deletable through the API.
    pub mirror: bool,
    /// The controller ownerReference.
    pub controller: Option<OwnerRef>,
    /// The pod has an `emptyDir` volume (local data lost when it moves).
    pub empty_dir: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.terminationGracePeriodSeconds`.
    pub termination_grace_seconds: Option<i64>,
    /// `metadata.creationTimestamp` when the pod is Pending.
    pub pending_since: Option<String>,
    /// The PodScheduled=False condition's message (the scheduler's "0/N nodes are available").
    pub pending_reason: Option<String>,
}

/// What an eviction did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Eviction {
    /// The API server accepted the eviction: the pod is terminating (or gone already).
    Evicted,
    /// The pod does not exist (404).
    Gone,
    /// 429: a PodDisruptionBudget allows no disruption now (or the server is throttling).
    Blocked {
        /// The budgets in the pod's namespace whose selector matches the pod.
        pdbs: Vec<String>,
        /// The server's message, with its causes.
        message: String,
    },
}

/// Replica counts of a controller.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadState {
    /// `ReplicaSet`, `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.replicas` (default 1); for a DaemonSet `status.desiredNumberScheduled`.
    pub desired: i32,
    /// `status.readyReplicas`; for a DaemonSet `status.numberReady`.
    pub ready: i32,
    /// `status.availableReplicas`; for a DaemonSet `status.numberAvailable`.
    pub available: i32,
    /// `status.updatedReplicas`; for a DaemonSet `status.updatedNumberScheduled`; for a
    /// ReplicaSet (all its pods share one template) `status.replicas`.
    pub updated: i32,
    /// `status.observedGeneration >= metadata.generation`: the status describes the current spec.
    pub observed: bool,
}

/// A PodDisruptionBudget's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PdbState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
    /// `status.currentHealthy`.
    pub current_healthy: i32,
    /// `status.desiredHealthy`.
    pub desired_healthy: i32,
    /// `status.expectedPods`.
    pub expected_pods: i32,
    /// `spec.selector.matchLabels` (matchExpressions are not reported).
    pub selector_labels: BTreeMap<String, String>,
}

/// The lock Lease.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`, RFC 3339 with microseconds.
    pub renew_time: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: Option<i32>,
    /// Annotations (see [`Ops::annotate_lease`]).
    pub annotations: BTreeMap<String, String>,
}

/// What [`Ops::acquire_lease`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum LeaseOutcome {
    /// The caller holds the Lease now (created, taken over after expiry, or renewed).
    Acquired,
    /// Another holder's Lease has not expired.
    HeldBy {
        /// Its holder.
        holder: String,
        /// Its last renewal, RFC 3339.
        renewed_at: Option<String>,
        /// Seconds until it expires if not renewed (rounded up).
        expires_in_seconds: i64,
    },
}

/// kubectl drain's flags that choose the pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainOptions {
    /// `--ignore-daemonsets`: DaemonSet pods are left alone instead of refusing the drain.
    pub ignore_daemon_sets: bool,
    /// `--delete-emptydir-data`: pods with emptyDir volumes are evicted (their data is lost).
    pub delete_empty_dir_data: bool,
    /// `--force`: pods without a controller are evicted (nothing recreates them).
    pub force: bool,
    /// `--pod-selector` (equality only): only matching pods are considered at all.
    pub pod_selector: Option<BTreeMap<String, String>>,
}

/// The pods of a node sorted by what a drain does with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainSelection {
    /// To evict through the eviction API.
    pub evict: Vec<PodState>,
    /// Finished pods (Succeeded, Failed): deleted, whatever their controller.
    pub delete_terminal: Vec<PodState>,
    /// Left alone, with the reason: mirror pods, DaemonSet pods under `--ignore-daemonsets`,
    /// pods already terminating (the caller still waits for those to be gone).
    pub skipped: Vec<(PodState, String)>,
    /// Pods that make kubectl refuse the whole drain, with kubectl's message naming the flag
    /// that would allow it. Non-empty: the drain must not start.
    pub refused: Vec<(PodState, String)>,
}

const DAEMONSET_FATAL: &str = "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets)";
const LOCAL_STORAGE_FATAL: &str =
    "cannot delete Pods with local storage (use --delete-emptydir-data)";
const UNMANAGED_FATAL: &str = "cannot delete Pods that declare no controller (use --force)";

fn terminal(p: &PodState) -> bool {
    matches!(p.phase.as_str(), "Succeeded" | "Failed")
}

/// kubectl drain's pod filter (`k8s.io/kubectl/pkg/drain/filters.go`), in its order, the first
/// filter that does not let a pod through deciding:
///
/// 1. pods not matching `pod_selector` are left out entirely;
/// 2. pods already terminating are skipped (kubectl would evict them again; they are already
///    going, and the caller waits for them);
/// 3. DaemonSet pods: finished ones are deleted, others skipped with `ignore_daemon_sets`, else
///    refused (the orphaned-DaemonSet exception of `--force` needs a lookup and is not made);
/// 4. mirror pods are skipped;
/// 5. running pods with emptyDir volumes are refused unless `delete_empty_dir_data`;
/// 6. finished pods (Succeeded, Failed) are deleted, with or without a controller;
/// 7. pods without a controller are refused unless `force`;
/// 8. everything else is evicted.
pub fn select_for_drain(pods: &[PodState], opts: &DrainOptions) -> DrainSelection {
    let mut out = DrainSelection::default();
    for p in pods {
        let selected = opts
            .pod_selector
            .as_ref()
            .is_none_or(|sel| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)));
        if !selected {
            continue;
        }
        if p.deleting {
            out.skipped.push((
                p.clone(),
                "already terminating (deletionTimestamp set)".into(),
            ));
            continue;
        }
        let daemon = p.controller.as_ref().is_some_and(|c| c.kind == "DaemonSet");
        if daemon && !terminal(p) {
            if opts.ignore_daemon_sets {
                out.skipped.push((
                    p.clone(),
                    "DaemonSet-managed (--ignore-daemonsets): the DaemonSet would recreate it"
                        .into(),
                ));
            } else {
                out.refused.push((p.clone(), DAEMONSET_FATAL.into()));
            }
            continue;
        }
        if p.mirror {
            out.skipped.push((
                p.clone(),
                "mirror pod (a static pod of the kubelet: cannot be deleted through the API server)"
                    .into(),
            ));
            continue;
        }
        if p.empty_dir && !terminal(p) && !opts.delete_empty_dir_data {
            out.refused.push((p.clone(), LOCAL_STORAGE_FATAL.into()));
            continue;
        }
        if terminal(p) {
            out.delete_terminal.push(p.clone());
            continue;
        }
        if p.controller.is_none() && !opts.force {
            out.refused.push((p.clone(), UNMANAGED_FATAL.into()));
            continue;
        }
        out.evict.push(p.clone());
    }
    out
}

/// One request, for error messages: the RBAC verb and resource, the kind and the object.
#[derive(Clone, Copy)]
struct Req<'a> {
    verb: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> Req<'a> {
    fn new(verb: &'static str, resource: &'static str, kind: &'static str) -> Self {
        Req {
            verb,
            resource,
            kind,
            namespace: None,
            name: None,
        }
    }

    fn ns(mut self, ns: &'a str) -> Self {
        self.namespace = Some(ns);
        self
    }

    fn name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    fn what(&self) -> String {
        let action = if self.resource == "pods/eviction" {
            "evict"
        } else {
            self.verb
        };
        let kind = self.kind;
        match (self.namespace, self.name) {
            (Some(ns), Some(n)) => format!("{action} {kind} {ns}/{n}"),
            (None, Some(n)) => format!("{action} {kind} {n}"),
            (Some(ns), None) => format!("{action} {kind}s in namespace {ns}"),
            (None, None) => format!("{action} {kind}s"),
        }
    }

    fn err(&self, e: kube::Error) -> OpsError {
        let what = self.what();
        match e {
            kube::Error::Api(s) => match s.code {
                401 => OpsError::Unauthorized {
                    what,
                    message: s.message,
                },
                403 => OpsError::Forbidden {
                    what,
                    verb: self.verb,
                    resource: self.resource.to_string(),
                    namespace: self.namespace.map(str::to_string),
                    message: s.message,
                },
                404 => OpsError::NotFound {
                    what,
                    message: s.message,
                },
                409 => OpsError::Conflict {
                    what,
                    message: s.message,
                },
                code => OpsError::Api {
                    what,
                    code,
                    message: if s.reason.is_empty() {
                        status_message(&s)
                    } else {
                        format!("{}: {}", s.reason, status_message(&s))
                    },
                },
            },
            kube::Error::SerdeError(e) => OpsError::Invalid {
                what,
                message: format!("cannot decode the API server's answer: {e}"),
            },
            kube::Error::Auth(e) => OpsError::Unauthorized {
                what,
                message: error_chain(&e),
            },
            other => OpsError::Unreachable {
                what,
                message: error_chain(&other),
            },
        }
    }

    fn conflict(&self, message: &str) -> OpsError {
        OpsError::Conflict {
            what: self.what(),
            message: message.to_string(),
        }
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// A Status message with its causes (the eviction API puts the budget's numbers there).
fn status_message(s: &kube::core::Status) -> String {
    let mut m = s.message.clone();
    for c in s.details.iter().flat_map(|d| &d.causes) {
        if !c.message.is_empty() && !m.contains(&c.message) {
            if !m.is_empty() {
                m.push(' ');
            }
            m.push_str(&c.message);
        }
    }
    m
}

/// The PodDisruptionBudget named by an eviction refusal: the API server's 429 carries a cause
/// of type `DisruptionBudget` whose message starts "The disruption budget NAME " ("… needs N
/// healthy pods and has M currently", "… is still being processed by the server."). A pod
/// may have one budget only (the eviction API refuses pods with two), so this is the one.
fn refusing_budget(s: &kube::core::Status) -> Option<String> {
    s.details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| c.reason == "DisruptionBudget")
        .find_map(|c| {
            let name = c.message.strip_prefix("The disruption budget ")?;
            let name = name.split_whitespace().next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
}

/// Lists every page (limit/continue; an expired continue token restarts the list).
async fn list_all<K>(api: &Api<K>, lp: &ListParams, req: Req<'_>) -> Result<Vec<K>, OpsError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut restarts = 0;
    loop {
        let mut page = lp.clone().limit(PAGE);
        if let Some(t) = &token {
            page = page.continue_token(t);
        }
        match api.list(&page).await {
            Ok(list) => {
                out.extend(list.items);
                match list.metadata.continue_ {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(out),
                }
            }
            Err(e) if is_code(&e, 410) && token.is_some() && restarts < 3 => {
                restarts += 1;
                out.clear();
                token = None;
            }
            Err(e) => return Err(req.err(e)),
        }
    }
}

fn time_text(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.to_string()
}

fn micro_text(t: &MicroTime) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t.0.as_microsecond()) {
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => t.0.to_string(),
    }
}

fn micro_time(t: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(t.0.as_microsecond())
}

fn to_micro(now: DateTime<Utc>, what: &str) -> Result<MicroTime, OpsError> {
    k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros())
        .map(MicroTime)
        .map_err(|e| OpsError::Invalid {
            what: what.to_string(),
            message: format!("the time {now} cannot be written as a MicroTime: {e}"),
        })
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn node_state(n: &Node) -> NodeState {
    let m = &n.metadata;
    let labels = m.labels.clone().unwrap_or_default();
    let status = n.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let ready_cond = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let mut roles: BTreeSet<String> = labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(r) = labels.get("kubernetes.io/role").filter(|r| !r.is_empty()) {
        roles.insert(r.clone());
    }
    let zone = labels
        .get("topology.kubernetes.io/zone")
        .or_else(|| labels.get("failure-domain.beta.kubernetes.io/zone"))
        .cloned();
    NodeState {
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        creation_timestamp: m.creation_timestamp.as_ref().map(time_text),
        unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
        cordoned_by: annotation(m, CORDONED_BY).map(str::to_string),
        ready: ready_cond.and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        }),
        ready_reason: ready_cond.and_then(|c| c.reason.clone()),
        os_image: info.map(|i| i.os_image.clone()).unwrap_or_default(),
        kernel_version: info.map(|i| i.kernel_version.clone()).unwrap_or_default(),
        kubelet_version: info.map(|i| i.kubelet_version.clone()).unwrap_or_default(),
        boot_id: info.map(|i| i.boot_id.clone()).unwrap_or_default(),
        internal_ip: status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone()),
        roles: roles.into_iter().collect(),
        labels,
        zone,
    }
}

fn pod_state(p: &Pod) -> PodState {
    let m = &p.metadata;
    let status = p.status.as_ref();
    let spec = p.spec.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let condition = |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t));
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let unscheduled = condition("PodScheduled").filter(|c| c.status == "False");
    PodState {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        ready: condition("Ready").is_some_and(|c| c.status == "True"),
        deleting: m.deletion_timestamp.is_some(),
        mirror: annotation(m, MIRROR_POD_ANNOTATION).is_some(),
        controller: controller_of(m).map(|o| OwnerRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        }),
        empty_dir: spec
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some())),
        labels: m.labels.clone().unwrap_or_default(),
        termination_grace_seconds: spec.and_then(|s| s.termination_grace_period_seconds),
        pending_since: if phase == "Pending" {
            m.creation_timestamp.as_ref().map(time_text)
        } else {
            None
        },
        pending_reason: unscheduled.and_then(|c| {
            c.message
                .clone()
                .filter(|m| !m.is_empty())
                .or_else(|| c.reason.clone())
        }),
        phase,
    }
}

/// kube-apiserver's eviction rule: a nil, empty or invalid selector matches nothing.
fn selector_matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return false };
    let exprs = sel.match_expressions.as_deref().unwrap_or_default();
    let eq = sel.match_labels.as_ref();
    if exprs.is_empty() && eq.is_none_or(|m| m.is_empty()) {
        return false;
    }
    if !eq
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    exprs.iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}

fn pdb_state(p: &PodDisruptionBudget) -> PdbState {
    let st = p.status.as_ref();
    PdbState {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        disruptions_allowed: st.map(|s| s.disruptions_allowed).unwrap_or(0),
        current_healthy: st.map(|s| s.current_healthy).unwrap_or(0),
        desired_healthy: st.map(|s| s.desired_healthy).unwrap_or(0),
        expected_pods: st.map(|s| s.expected_pods).unwrap_or(0),
        selector_labels: p
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default(),
    }
}

fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (None, _) => true,
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
    }
}

fn lease_state(l: &Lease) -> LeaseState {
    let spec = l.spec.as_ref();
    LeaseState {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(micro_text),
        duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        annotations: l.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// When a Lease expires if not renewed: its renewTime (else acquireTime) plus its duration.
/// None (no time at all) counts as expired.
fn lease_expiry(spec: &LeaseSpec) -> Option<DateTime<Utc>> {
    let base = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(micro_time)?;
    Some(base + chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(0).into()))
}

/// The `originalReplicas` of a [`SURGE_ANNOTATION`] value.
fn original_replicas(raw: &str, what: &str) -> Result<i32, OpsError> {
    let bad = |why: String| OpsError::Invalid {
        what: what.to_string(),
        message: format!(
            "the {SURGE_ANNOTATION} annotation {raw:?} {why}; set spec.replicas back by hand and remove the annotation (kubectl annotate deployment NAME {SURGE_ANNOTATION}-)"
        ),
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(format!("is not JSON ({e})")))?;
    v.get("originalReplicas")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad("has no valid originalReplicas".into()))
}

/// A grace period for DeleteOptions: negative means the pod's own (kubectl's `--grace-period=-1`).
fn grace(seconds: Option<i64>) -> Option<i64> {
    seconds.filter(|g| *g >= 0)
}

/// Every Kubernetes operation the engine needs, over one kube-rs client.
#[derive(Clone)]
pub struct Ops {
    client: Client,
}

impl Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Ops {
    /// Operations over `client` (see [`connect`](crate::connect); for the engine with
    /// `no_retry: true`).
    pub fn new(client: Client) -> Ops {
        Ops { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn all<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    fn namespaced<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    // ---- nodes

    /// One Node; none if it does not exist.
    pub async fn node(&self, name: &str) -> Result<Option<NodeState>, OpsError> {
        let req = Req::new("get", "nodes", "Node").name(name);
        self.all::<Node>()
            .get_opt(name)
            .await
            .map(|n| n.as_ref().map(node_state))
            .map_err(|e| req.err(e))
    }

    /// Every Node, in the API server's order (by name).
    pub async fn nodes(&self) -> Result<Vec<NodeState>, OpsError> {
        let req = Req::new("list", "nodes", "Node");
        let nodes = list_all(&self.all::<Node>(), &ListParams::default(), req).await?;
        Ok(nodes.iter().map(node_state).collect())
    }

    /// Cordons a node: `spec.unschedulable=true` and the [`CORDONED_BY`] annotation set to
    /// `run_id`, in one merge patch. Idempotent. A node cordoned by someone else before shows
    /// as `unschedulable` without `cordoned_by` in [`NodeState`]: check before cordoning if
    /// such a node should be left alone.
    pub async fn cordon(&self, node: &str, run_id: &str) -> Result<(), OpsError> {
        let req = Req::new("patch", "nodes", "Node").name(node);
        let patch = json!({
            "metadata": {"annotations": {CORDONED_BY: run_id}},
            "spec": {"unschedulable": true}
        });
        self.all::<Node>()
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| req.err(e))
    }

    /// Uncordons a node: `spec.unschedulable=false` and the [`CORDONED_BY`] annotation removed.
    /// Idempotent; Ok if the node does not exist.
    pub async fn uncordon(&self, node: &str) -> Result<(), OpsError> {
        let req = Req::new("patch", "nodes", "Node").name(node);
        let patch = json!({
            "metadata": {"annotations": {CORDONED_BY: null}},
            "spec": {"unschedulable": false}
        });
        match self
            .all::<Node>()
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(req.err(e)),
        }
    }

    // ---- pods, drain

    /// The pods bound to a node (field selector `spec.nodeName=<node>`), in every namespace.
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<PodState>, OpsError> {
        let req = Req::new("list", "pods", "Pod");
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = list_all(&self.all::<Pod>(), &lp, req).await?;
        Ok(pods.iter().map(pod_state).collect())
    }

    /// The pods of `pod`'s controller (the pod included), found by the pod's labels without
    /// the ones that differ between siblings (a StatefulSet's pod name and index, controller
    /// revision hashes) and then by the controller ownerReference. Empty without a controller.
    pub async fn siblings(&self, pod: &PodState) -> Result<Vec<PodState>, OpsError> {
        let Some(owner) = &pod.controller else {
            return Ok(Vec::new());
        };
        const PER_POD: [&str; 3] = [
            "statefulset.kubernetes.io/pod-name",
            "apps.kubernetes.io/pod-index",
            "controller-revision-hash",
        ];
        let selector: Vec<String> = pod
            .labels
            .iter()
            .filter(|(k, _)| !PER_POD.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = Req::new("list", "pods", "Pod").ns(&pod.namespace);
        let lp = ListParams::default().labels(&selector.join(","));
        let pods = list_all(&self.namespaced::<Pod>(&pod.namespace), &lp, req).await?;
        Ok(pods
            .iter()
            .map(pod_state)
            .filter(|p| p.controller.as_ref() == Some(owner))
            .collect())
    }

    /// Pods waiting for a node: phase Pending and either unbound or `PodScheduled=False`
    /// (bound pods that are still starting are not counted).
    pub async fn pending_pods(&self) -> Result<Vec<PodState>, OpsError> {
        let req = Req::new("list", "pods", "Pod");
        let lp = ListParams::default().fields("status.phase=Pending");
        let pods = list_all(&self.all::<Pod>(), &lp, req).await?;
        Ok(pods
            .iter()
            .map(pod_state)
            .filter(|p| p.phase == "Pending" && (p.node.is_none() || p.pending_reason.is_some()))
            .collect())
    }

    /// Evicts one pod through the eviction subresource (a policy/v1 `Eviction`). 404 →
    /// [`Eviction::Gone`]. 429 → [`Eviction::Blocked`] with the names of the
    /// PodDisruptionBudgets in the pod's namespace whose selector matches the pod, and the
    /// server's message. `grace_seconds`: `deleteOptions.gracePeriodSeconds` when Some
    /// (negative: the pod's own grace period).
    ///
    /// The request body is built here rather than with kube-rs's `Api::evict`, which sends
    /// `delete_options` in snake case: a real API server ignores that field, so the grace
    /// period would be lost.
    pub async fn evict(
        &self,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<Eviction, OpsError> {
        match self.try_evict(namespace, name, grace_seconds).await? {
            Eviction::Blocked { pdbs, message } if pdbs.is_empty() => Ok(Eviction::Blocked {
                pdbs: self.pdbs_of_pod(namespace, name).await?,
                message,
            }),
            other => Ok(other),
        }
    }

    /// [`Ops::evict`] without listing the budgets on a 429: `pdbs` holds only the budget the
    /// server named in the refusal's `DisruptionBudget` cause (the API server names the one
    /// budget it checked; see [`refusing_budget`]), and is empty when it named none (a
    /// throttling 429). For drains, which would otherwise list a namespace's budgets for
    /// every refused pod.
    pub async fn try_evict(
        &self,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<Eviction, OpsError> {
        let req = Req::new("create", "pods/eviction", "Pod")
            .ns(namespace)
            .name(name);
        let mut body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace}
        });
        if let Some(g) = grace(grace_seconds) {
            body["deleteOptions"] = json!({"gracePeriodSeconds": g});
        }
        let pods: Api<Pod> = self.namespaced(namespace);
        match pods
            .create_subresource::<Value, Value>("eviction", name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => Ok(Eviction::Evicted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked {
                pdbs: refusing_budget(&s).into_iter().collect(),
                message: status_message(&s),
            }),
            Err(e) => Err(req.err(e)),
        }
    }

    /// One PodDisruptionBudget with its status (`None`: it does not exist).
    pub async fn pdb(&self, namespace: &str, name: &str) -> Result<Option<PdbState>, OpsError> {
        let api = self.namespaced::<PodDisruptionBudget>(namespace);
        match api.get_opt(name).await {
            Ok(p) => Ok(p.as_ref().map(pdb_state)),
            Err(e) => Err(
                Req::new("get", "poddisruptionbudgets.policy", "PodDisruptionBudget")
                    .ns(namespace)
                    .name(name)
                    .err(e),
            ),
        }
    }

    /// The budgets in `namespace` whose selector matches the pod (none if the pod is gone).
    pub async fn pdbs_of_pod(&self, namespace: &str, name: &str) -> Result<Vec<String>, OpsError> {
        let pods: Api<Pod> = self.namespaced(namespace);
        let pod = match pods.get_opt(name).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                return Err(Req::new("get", "pods", "Pod")
                    .ns(namespace)
                    .name(name)
                    .err(e));
            }
        };
        let labels = pod.metadata.labels.unwrap_or_default();
        let req =
            Req::new("list", "poddisruptionbudgets.policy", "PodDisruptionBudget").ns(namespace);
        let pdbs = list_all(
            &self.namespaced::<PodDisruptionBudget>(namespace),
            &ListParams::default(),
            req,
        )
        .await?;
        Ok(pdbs
            .iter()
            .filter(|p| {
                selector_matches(p.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels)
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect())
    }

    /// Deletes a pod without the eviction API (drain's `--disable-eviction`, and finished pods).
    /// `grace_seconds` as in [`Ops::evict`]. Ok(false) if it did not exist.
    pub async fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<bool, OpsError> {
        let req = Req::new("delete", "pods", "Pod").ns(namespace).name(name);
        let dp = DeleteParams {
            grace_period_seconds: grace(grace_seconds)
                .map(|g| u32::try_from(g).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        match self.namespaced::<Pod>(namespace).delete(name, &dp).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, 404) => Ok(false),
            Err(e) => Err(req.err(e)),
        }
    }

    /// Whether the pod still exists with this uid (a StatefulSet's replacement has the same name
    /// and another uid: the old pod is gone then).
    pub async fn pod_exists(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, OpsError> {
        let req = Req::new("get", "pods", "Pod").ns(namespace).name(name);
        match self.namespaced::<Pod>(namespace).get_opt(name).await {
            Ok(p) => Ok(p.is_some_and(|p| p.metadata.uid.as_deref() == Some(uid))),
            Err(e) => Err(req.err(e)),
        }
    }

    // ---- workloads

    /// Replica counts of a controller, `kind` one of `ReplicaSet`, `Deployment`, `StatefulSet`,
    /// `DaemonSet` (see [`WorkloadState`] for the fields read); none if it does not exist. Any
    /// other kind is [`OpsError::Invalid`].
    pub async fn workload(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<WorkloadState>, OpsError> {
        let state = |desired: i32,
                     ready: Option<i32>,
                     available: Option<i32>,
                     updated: Option<i32>,
                     generation: Option<i64>,
                     observed_generation: Option<i64>| WorkloadState {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            desired,
            ready: ready.unwrap_or(0),
            available: available.unwrap_or(0),
            updated: updated.unwrap_or(0),
            observed: observed(generation, observed_generation),
        };
        match kind {
            "Deployment" => {
                let req = Req::new("get", "deployments.apps", "Deployment")
                    .ns(namespace)
                    .name(name);
                let d = self
                    .namespaced::<Deployment>(namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| req.err(e))?;
                Ok(d.map(|d| {
                    let s = d.status.unwrap_or_default();
                    state(
                        d.spec.and_then(|s| s.replicas).unwrap_or(1),
                        s.ready_replicas,
                        s.available_replicas,
                        s.updated_replicas,
                        d.metadata.generation,
                        s.observed_generation,
                    )
                }))
            }
            "ReplicaSet" => {
                let req = Req::new("get", "replicasets.apps", "ReplicaSet")
                    .ns(namespace)
                    .name(name);
                let r = self
                    .namespaced::<ReplicaSet>(namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| req.err(e))?;
                Ok(r.map(|r| {
                    let s = r.status.unwrap_or_default();
                    state(
                        r.spec.and_then(|s| s.replicas).unwrap_or(1),
                        s.ready_replicas,
                        s.available_replicas,
                        Some(s.replicas),
                        r.metadata.generation,
                        s.observed_generation,
                    )
                }))
            }
            "StatefulSet" => {
                let req = Req::new("get", "statefulsets.apps", "StatefulSet")
                    .ns(namespace)
                    .name(name);
                let st = self
                    .namespaced::<StatefulSet>(namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| req.err(e))?;
                Ok(st.map(|st| {
                    let s = st.status.unwrap_or_default();
                    state(
                        st.spec.and_then(|s| s.replicas).unwrap_or(1),
                        s.ready_replicas,
                        s.available_replicas,
                        s.updated_replicas,
                        st.metadata.generation,
                        s.observed_generation,
                    )
                }))
            }
            "DaemonSet" => {
                let req = Req::new("get", "daemonsets.apps", "DaemonSet")
                    .ns(namespace)
                    .name(name);
                let ds = self
                    .namespaced::<DaemonSet>(namespace)
                    .get_opt(name)
                    .await
                    .map_err(|e| req.err(e))?;
                Ok(ds.map(|ds| {
                    let s = ds.status.unwrap_or_default();
                    state(
                        s.desired_number_scheduled,
                        Some(s.number_ready),
                        s.number_available,
                        s.updated_number_scheduled,
                        ds.metadata.generation,
                        s.observed_generation,
                    )
                }))
            }
            other => Err(OpsError::Invalid {
                what: format!("{other} {namespace}/{name}"),
                message: "theseus reads replicas of ReplicaSet, Deployment, StatefulSet and DaemonSet only".into(),
            }),
        }
    }

    /// The Deployment that owns a ReplicaSet through its controller ownerReference; none if
    /// the ReplicaSet does not exist or has no Deployment controller.
    pub async fn deployment_of_replicaset(
        &self,
        namespace: &str,
        rs: &str,
    ) -> Result<Option<String>, OpsError> {
        let req = Req::new("get", "replicasets.apps", "ReplicaSet")
            .ns(namespace)
            .name(rs);
        let r = self
            .namespaced::<ReplicaSet>(namespace)
            .get_opt(rs)
            .await
            .map_err(|e| req.err(e))?;
        Ok(r.and_then(|r| {
            controller_of(&r.metadata)
                .filter(|o| o.kind == "Deployment")
                .map(|o| o.name.clone())
        }))
    }

    /// Starts a surge of a Deployment (zero downtime for a single replica): unless it already
    /// carries [`SURGE_ANNOTATION`], writes the annotation
    /// `{"run", "node", "originalReplicas"}` and `spec.replicas = original + 1` in one merge
    /// patch pinned to the resourceVersion read (a concurrent change is re-read, so two runs
    /// never surge twice). Returns the original replicas (the annotation's, if it was there).
    pub async fn surge_start(
        &self,
        namespace: &str,
        deployment: &str,
        run_id: &str,
        node: &str,
    ) -> Result<i32, OpsError> {
        let get = Req::new("get", "deployments.apps", "Deployment")
            .ns(namespace)
            .name(deployment);
        let patch_req = Req::new("patch", "deployments.apps", "Deployment")
            .ns(namespace)
            .name(deployment);
        let api: Api<Deployment> = self.namespaced(namespace);
        for _ in 0..CAS_ATTEMPTS {
            let d = api.get(deployment).await.map_err(|e| get.err(e))?;
            if let Some(raw) = annotation(&d.metadata, SURGE_ANNOTATION) {
                return original_replicas(raw, &get.what());
            }
            let original = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let record = json!({"run": run_id, "node": node, "originalReplicas": original});
            let patch = json!({
                "metadata": {
                    "resourceVersion": d.metadata.resource_version,
                    "annotations": {SURGE_ANNOTATION: record.to_string()}
                },
                "spec": {"replicas": original.saturating_add(1)}
            });
            match api
                .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(original),
                Err(e) if is_code(&e, 409) => continue,
                Err(e) => return Err(patch_req.err(e)),
            }
        }
        Err(patch_req.conflict("the Deployment changed on every attempt to surge it"))
    }

    /// Ends a surge: first gives `old_pod` (if any; None when it is gone already) the lowest
    /// [`POD_DELETION_COST`] so that the ReplicaSet deletes it rather than its replacement,
    /// then sets `spec.replicas` back to the annotation's `originalReplicas` and removes
    /// [`SURGE_ANNOTATION`] in one merge patch. Idempotent: Ok if the annotation (or the
    /// Deployment) is gone already.
    pub async fn surge_end(
        &self,
        namespace: &str,
        deployment: &str,
        old_pod: Option<&str>,
    ) -> Result<(), OpsError> {
        let get = Req::new("get", "deployments.apps", "Deployment")
            .ns(namespace)
            .name(deployment);
        let api: Api<Deployment> = self.namespaced(namespace);
        let Some(d) = api.get_opt(deployment).await.map_err(|e| get.err(e))? else {
            return Ok(());
        };
        let Some(raw) = annotation(&d.metadata, SURGE_ANNOTATION) else {
            return Ok(());
        };
        let original = original_replicas(raw, &get.what())?;
        if let Some(pod) = old_pod {
            let req = Req::new("patch", "pods", "Pod").ns(namespace).name(pod);
            let patch =
                json!({"metadata": {"annotations": {POD_DELETION_COST: i32::MIN.to_string()}}});
            match self
                .namespaced::<Pod>(namespace)
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) => {}
                Err(e) => return Err(req.err(e)),
            }
        }
        let req = Req::new("patch", "deployments.apps", "Deployment")
            .ns(namespace)
            .name(deployment);
        let patch = json!({
            "metadata": {"annotations": {SURGE_ANNOTATION: null}},
            "spec": {"replicas": original}
        });
        match api
            .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(req.err(e)),
        }
    }

    /// Deployments that carry [`SURGE_ANNOTATION`] (to resume or undo surges): namespace, name
    /// and the annotation's JSON (a JSON string holding the raw text if it does not parse).
    pub async fn surged_deployments(&self) -> Result<Vec<(String, String, Value)>, OpsError> {
        let req = Req::new("list", "deployments.apps", "Deployment");
        let ds = list_all(&self.all::<Deployment>(), &ListParams::default(), req).await?;
        Ok(ds
            .iter()
            .filter_map(|d| {
                let raw = annotation(&d.metadata, SURGE_ANNOTATION)?;
                let v = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()));
                Some((
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                    v,
                ))
            })
            .collect())
    }

    /// Every PodDisruptionBudget with its status.
    pub async fn pdbs(&self) -> Result<Vec<PdbState>, OpsError> {
        let req = Req::new("list", "poddisruptionbudgets.policy", "PodDisruptionBudget");
        let pdbs = list_all(
            &self.all::<PodDisruptionBudget>(),
            &ListParams::default(),
            req,
        )
        .await?;
        Ok(pdbs.iter().map(pdb_state).collect())
    }

    // ---- lease lock

    /// Takes the lock Lease `namespace/name` (coordination.k8s.io/v1) for `holder`: creates it,
    /// renews it if `holder` holds it, or takes it over when its holder let it expire
    /// (renewTime + leaseDurationSeconds <= `now`; `leaseTransitions` counts takeovers).
    /// Sets holderIdentity, leaseDurationSeconds, acquireTime and renewTime from `now` (the
    /// caller's clock, so that tests run on virtual time). Writes are pinned to the
    /// resourceVersion read; a 409 (another run raced) is re-read and decided again, so the
    /// loser gets [`LeaseOutcome::HeldBy`].
    pub async fn acquire_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        duration_seconds: i32,
        now: DateTime<Utc>,
    ) -> Result<LeaseOutcome, OpsError> {
        let api: Api<Lease> = self.namespaced(namespace);
        let get = Req::new("get", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let stamp = to_micro(now, &get.what())?;
        for _ in 0..CAS_ATTEMPTS {
            match api.get_opt(name).await.map_err(|e| get.err(e))? {
                None => {
                    let req = Req::new("create", "leases.coordination.k8s.io", "Lease")
                        .ns(namespace)
                        .name(name);
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            namespace: Some(namespace.to_string()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(holder.to_string()),
                            lease_duration_seconds: Some(duration_seconds),
                            acquire_time: Some(stamp.clone()),
                            renew_time: Some(stamp.clone()),
                            lease_transitions: Some(0),
                            ..LeaseSpec::default()
                        }),
                    };
                    match api.create(&PostParams::default(), &lease).await {
                        Ok(_) => return Ok(LeaseOutcome::Acquired),
                        Err(e) if is_code(&e, 409) => continue,
                        Err(e) => return Err(req.err(e)),
                    }
                }
                Some(mut lease) => {
                    let spec = lease.spec.clone().unwrap_or_default();
                    let current = spec.holder_identity.clone().filter(|h| !h.is_empty());
                    let expiry = lease_expiry(&spec);
                    let mine = current.as_deref() == Some(holder);
                    if let (Some(other), Some(exp)) = (
                        current.as_ref().filter(|_| !mine),
                        expiry.filter(|e| *e > now),
                    ) {
                        let ms = (exp - now).num_milliseconds();
                        return Ok(LeaseOutcome::HeldBy {
                            holder: other.clone(),
                            renewed_at: spec.renew_time.as_ref().map(micro_text),
                            expires_in_seconds: (ms + 999) / 1000,
                        });
                    }
                    let transitions = spec.lease_transitions.unwrap_or(0);
                    lease.spec = Some(LeaseSpec {
                        holder_identity: Some(holder.to_string()),
                        lease_duration_seconds: Some(duration_seconds),
                        acquire_time: if mine {
                            spec.acquire_time.clone().or(Some(stamp.clone()))
                        } else {
                            Some(stamp.clone())
                        },
                        renew_time: Some(stamp.clone()),
                        lease_transitions: Some(if mine || current.is_none() {
                            transitions
                        } else {
                            transitions.saturating_add(1)
                        }),
                        ..spec
                    });
                    let req = Req::new("update", "leases.coordination.k8s.io", "Lease")
                        .ns(namespace)
                        .name(name);
                    match api.replace(name, &PostParams::default(), &lease).await {
                        Ok(_) => return Ok(LeaseOutcome::Acquired),
                        // Deleted meanwhile (404) or changed (409): read again.
                        Err(e) if is_code(&e, 409) || is_code(&e, 404) => continue,
                        Err(e) => return Err(req.err(e)),
                    }
                }
            }
        }
        Err(get.conflict("the Lease changed on every attempt to take it"))
    }

    /// Renews `holder`'s Lease (renewTime = `now`). [`OpsError::LeaseLost`] if another holder
    /// owns it or it no longer exists.
    pub async fn renew_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<(), OpsError> {
        let api: Api<Lease> = self.namespaced(namespace);
        let get = Req::new("get", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let update = Req::new("update", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let stamp = to_micro(now, &get.what())?;
        let lost = |holder: Option<String>| OpsError::LeaseLost {
            lease: format!("{namespace}/{name}"),
            holder,
        };
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut lease) = api.get_opt(name).await.map_err(|e| get.err(e))? else {
                return Err(lost(None));
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            let current = spec.holder_identity.clone().filter(|h| !h.is_empty());
            if current.as_deref() != Some(holder) {
                return Err(lost(current));
            }
            spec.renew_time = Some(stamp.clone());
            lease.spec = Some(spec);
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) || is_code(&e, 404) => continue,
                Err(e) => return Err(update.err(e)),
            }
        }
        Err(update.conflict("the Lease changed on every attempt to renew it"))
    }

    /// Releases the Lease: deletes it if `holder` holds it (pinned to the resourceVersion
    /// read); Ok without change if it is gone or held by another holder.
    pub async fn release_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
    ) -> Result<(), OpsError> {
        let api: Api<Lease> = self.namespaced(namespace);
        let get = Req::new("get", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let delete = Req::new("delete", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        for _ in 0..CAS_ATTEMPTS {
            let Some(lease) = api.get_opt(name).await.map_err(|e| get.err(e))? else {
                return Ok(());
            };
            let current = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            if current != Some(holder) {
                return Ok(());
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: lease.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 404) => return Ok(()),
                Err(e) if is_code(&e, 409) => continue,
                Err(e) => return Err(delete.err(e)),
            }
        }
        Err(delete.conflict("the Lease changed on every attempt to release it"))
    }

    /// Sets annotations on `holder`'s Lease (e.g. the run id and the plan's digest, for the
    /// operator who finds the lock), in one merge patch pinned to the resourceVersion read.
    /// [`OpsError::LeaseLost`] if another holder owns it or it no longer exists.
    pub async fn annotate_lease(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), OpsError> {
        let api: Api<Lease> = self.namespaced(namespace);
        let get = Req::new("get", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let patch_req = Req::new("patch", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        let lost = |holder: Option<String>| OpsError::LeaseLost {
            lease: format!("{namespace}/{name}"),
            holder,
        };
        for _ in 0..CAS_ATTEMPTS {
            let Some(lease) = api.get_opt(name).await.map_err(|e| get.err(e))? else {
                return Err(lost(None));
            };
            let current = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty());
            if current.as_deref() != Some(holder) {
                return Err(lost(current));
            }
            let patch = json!({"metadata": {
                "resourceVersion": lease.metadata.resource_version,
                "annotations": annotations
            }});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) || is_code(&e, 404) => continue,
                Err(e) => return Err(patch_req.err(e)),
            }
        }
        Err(patch_req.conflict("the Lease changed on every attempt to annotate it"))
    }

    /// The Lease; none if it does not exist.
    pub async fn lease(&self, namespace: &str, name: &str) -> Result<Option<LeaseState>, OpsError> {
        let req = Req::new("get", "leases.coordination.k8s.io", "Lease")
            .ns(namespace)
            .name(name);
        self.namespaced::<Lease>(namespace)
            .get_opt(name)
            .await
            .map(|l| l.as_ref().map(lease_state))
            .map_err(|e| req.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refusal(causes: serde_json::Value) -> kube::core::Status {
        serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": causes},
        }))
        .unwrap()
    }

    #[test]
    fn an_eviction_refusal_names_its_budget_when_the_server_does() {
        let s = refusal(serde_json::json!([{"reason": "DisruptionBudget",
            "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]));
        assert_eq!(refusing_budget(&s).as_deref(), Some("web-pdb"));
        let s = refusal(serde_json::json!([{"reason": "DisruptionBudget",
            "message": "The disruption budget db is still being processed by the server."}]));
        assert_eq!(refusing_budget(&s).as_deref(), Some("db"));
        // Throttling (no cause), or a cause of another type: nothing named.
        assert_eq!(refusing_budget(&refusal(serde_json::json!([]))), None);
        let s = refusal(serde_json::json!([{"reason": "FieldValueInvalid",
            "message": "The disruption budget x needs 1 healthy pods and has 0 currently"}]));
        assert_eq!(refusing_budget(&s), None);
        let s = refusal(serde_json::json!([{"reason": "DisruptionBudget", "message": "odd"}]));
        assert_eq!(refusing_budget(&s), None);
    }

    #[test]
    fn eviction_selectors_follow_the_api_server() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let eq = |kv: &[(&str, &str)]| LabelSelector {
            match_labels: Some(labels(kv)),
            match_expressions: None,
        };
        assert!(!selector_matches(None, &pod), "nil matches nothing");
        assert!(
            !selector_matches(Some(&LabelSelector::default()), &pod),
            "empty matches nothing"
        );
        assert!(selector_matches(Some(&eq(&[("app", "web")])), &pod));
        assert!(!selector_matches(Some(&eq(&[("app", "db")])), &pod));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        };
        assert!(selector_matches(
            Some(&expr("In", &["front", "back"])),
            &pod
        ));
        assert!(!selector_matches(Some(&expr("NotIn", &["front"])), &pod));
        assert!(selector_matches(Some(&expr("Exists", &[])), &pod));
        assert!(!selector_matches(Some(&expr("DoesNotExist", &[])), &pod));
        assert!(!selector_matches(Some(&expr("Bogus", &[])), &pod));
    }

    #[test]
    fn surge_annotations_are_checked() {
        assert_eq!(
            original_replicas(r#"{"run":"r","node":"n","originalReplicas":1}"#, "x").ok(),
            Some(1)
        );
        let e = original_replicas("not json", "Deployment a/b").unwrap_err();
        assert!(
            e.to_string().contains("Deployment a/b") && e.to_string().contains("kubectl annotate"),
            "{e}"
        );
        assert!(original_replicas(r#"{"originalReplicas":-1}"#, "x").is_err());
    }

    #[test]
    fn lease_expiry_uses_renew_then_acquire_time() {
        let t = |s: i64| MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let spec = LeaseSpec {
            acquire_time: Some(t(100)),
            renew_time: Some(t(200)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(lease_expiry(&spec).map(|d| d.timestamp()), Some(215));
        let spec = LeaseSpec {
            renew_time: None,
            ..spec
        };
        assert_eq!(lease_expiry(&spec).map(|d| d.timestamp()), Some(115));
        assert_eq!(lease_expiry(&LeaseSpec::default()), None);
    }

    #[test]
    fn forbidden_names_the_verb_resource_and_can_i() {
        let req = Req::new("create", "pods/eviction", "Pod")
            .ns("shop")
            .name("web-1");
        let s =
            kube::core::Status::failure("pods \"web-1\" is forbidden", "Forbidden").with_code(403);
        let e = req.err(kube::Error::Api(s.boxed()));
        let text = e.to_string();
        assert!(matches!(e, OpsError::Forbidden { .. }), "{e:?}");
        assert!(
            text.contains("evict Pod shop/web-1")
                && text.contains("`create` on `pods/eviction`")
                && text.contains("kubectl auth can-i create pods --subresource=eviction -n shop"),
            "{text}"
        );
    }
}

//! The simulator's kube-scheduler: places pods that have no `spec.nodeName` onto nodes, with the
//! default profile's filters and (simplified) scores, and reports pods that fit nowhere the way the
//! real scheduler does (`PodScheduled=False`, reason `Unschedulable`, a `FailedScheduling` event
//! with the real message).
//!
//! Two layers:
//! - pure placement logic, usable without an API server: [`PodInfo`] / [`NodeInfo`] parsed from
//!   JSON, [`feasible`] (the node-local filters), and [`SchedulerCache`] (nodes, the pods counted on
//!   them, indices for inter-pod (anti-)affinity and spreading; [`SchedulerCache::schedule`] runs
//!   filters and scores over all nodes);
//! - [`spawn`]: the component. It watches pods, nodes and namespaces, keeps the cache up to date
//!   incrementally, schedules pending pods in priority then FIFO order, assumes a pod on its node
//!   before binding it (so two pods never take the same last slot), and keeps unschedulable pods
//!   until a cluster change could help them (with the real 1 s..10 s backoff) or the periodic flush.
//!
//! Filters, in the default profile's order (the first failing one is the node's reason):
//! NodeUnschedulable, TaintToleration (including the taints TaintNodesByCondition puts on nodes
//! that are not Ready or under pressure), NodeAffinity (nodeSelector, required node affinity, the
//! `metadata.name` PreFilter shortcut DaemonSet pods use), NodeResourcesFit (cpu, memory, pods),
//! InterPodAffinity (required affinity, anti-affinity, and existing pods' anti-affinity).
//! Scores: TaintToleration (PreferNoSchedule, weight 3), NodeAffinity preferred terms (2),
//! spreading of pods of the same controller over nodes and zones (2), LeastAllocated (1),
//! BalancedAllocation (1). Equal scores go to the first node by name.
//!
//! Not modelled: preemption (the message says no victims were found), host ports, volumes,
//! preferred inter-pod affinity, extended resources, topology spread constraints.

use crate::json::Json;
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Change, Cluster, ns_name};
use crate::registry::ResourceInfo;
use crate::rest::{self, PatchBody, PatchKind, WriteOptions};
use crate::store::{EventType, StoredObject};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// How the scheduler behaves.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or missing) are scheduled.
    pub scheduler_name: String,
    /// Unschedulable pods are retried at least this often even without a cluster change.
    pub unschedulable_flush: Duration,
    /// Backoff after a failed attempt: initial, doubled per attempt, capped.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `percentageOfNodesToScore`: 0 is the adaptive default (all nodes below 100 nodes, 10% of
    /// 5,000 nodes); 100 scans every node for every pod.
    pub percentage_of_nodes_to_score: u32,
    /// Taint messages as in Kubernetes releases after October 2025 ("node(s) had untolerated
    /// taint(s)") instead of v1.33's "node(s) had untolerated taint {key: value}".
    pub hide_taint_values: bool,
    /// Record a `Scheduled` event for every binding, as the real scheduler does.
    pub record_scheduled_events: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER.to_string(),
            unschedulable_flush: Duration::from_secs(60),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            percentage_of_nodes_to_score: 0,
            hide_taint_values: false,
            record_scheduled_events: true,
        }
    }
}

pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Requests assumed for containers that request nothing, when scoring (as the real scheduler).
const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;
const DEFAULT_MAX_PODS: i64 = 110;
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
const MAX_SCORE: i64 = 100;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
const REGION_LABEL_BETA: &str = "failure-domain.beta.kubernetes.io/region";
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

// ---------------------------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------------------------

/// Parses a Kubernetes quantity ("1", "1.5", "100m", "128Mi", "1G", "500k", "2e3") and returns its
/// value rounded up to an integer, like `resource.Quantity.Value()`. Saturates at the i64 range.
pub fn parse_quantity(s: &str) -> Option<i64> {
    parse_scaled(s, 0)
}

/// Like [`parse_quantity`], in thousandths ("100m" → 100, "1" → 1000): `Quantity.MilliValue()`.
pub fn parse_quantity_milli(s: &str) -> Option<i64> {
    parse_scaled(s, 3)
}

fn parse_scaled(s: &str, scale: i64) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let (pow2, pow10): (u32, i64) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            if exp.is_empty()
                || exp.contains(|c: char| !(c.is_ascii_digit() || c == '+' || c == '-'))
            {
                return None;
            }
            (0, exp.parse::<i64>().ok()?.clamp(-1000, 1000))
        }
        _ => return None,
    };
    let mut pow10 = pow10 + scale - frac.len() as i64;
    // The significant digits (at most 30 kept; the rest only scale).
    let (mut mant, mut kept): (i128, usize) = (0, 0);
    for b in int.bytes().chain(frac.bytes()) {
        if kept == 0 && b == b'0' {
            continue;
        }
        if kept >= 30 {
            pow10 += 1;
            continue;
        }
        mant = mant * 10 + i128::from(b - b'0');
        kept += 1;
    }
    if mant == 0 {
        return Some(0);
    }
    let sat = if neg { i64::MIN } else { i64::MAX };
    let Some(num) = mant.checked_mul(1i128 << pow2) else {
        return Some(sat);
    };
    let v: i128 = if pow10 >= 0 {
        let Some(v) = u32::try_from(pow10)
            .ok()
            .and_then(|p| 10i128.checked_pow(p))
            .and_then(|m| num.checked_mul(m))
        else {
            return Some(sat);
        };
        v
    } else {
        match u32::try_from(-pow10)
            .ok()
            .and_then(|p| 10i128.checked_pow(p))
        {
            // Rounded up: towards +inf, so a negative value rounds towards zero.
            Some(den) if neg => num / den,
            Some(den) => num / den + i128::from(num % den != 0),
            None => i128::from(!neg),
        }
    };
    let v = if neg { -v } else { v };
    Some(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// A quantity from JSON (a string, or a number some manifests use).
fn quantity<V: Json>(v: &V, milli: bool) -> Option<i64> {
    let scale = if milli { 3 } else { 0 };
    if let Some(s) = v.as_str() {
        return parse_scaled(s, scale);
    }
    v.number().and_then(|n| parse_scaled(&n.to_string(), scale))
}

// ---------------------------------------------------------------------------------------------
// Parsed objects
// ---------------------------------------------------------------------------------------------

/// CPU (millicores) and memory (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Res {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Res {
    fn add(&mut self, o: Res) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
    }
    fn sub(&mut self, o: Res) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
    }
    fn max(&mut self, o: Res) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// A pod toleration (`operator` "" means Equal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    pub value: String,
    pub effect: String,
}

impl Toleration {
    /// `v1.Toleration.ToleratesTaint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == taint.value,
            "Exists" => true,
            _ => false,
        }
    }
}

/// Whether any toleration tolerates the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SelReq {
    key: String,
    op: SelOp,
    values: BTreeSet<String>,
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions). An invalid one matches nothing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    reqs: Vec<SelReq>,
    never: bool,
}

impl Selector {
    pub fn from_json<V: Json>(v: &V) -> Selector {
        let mut sel = Selector::default();
        if !v.is_object() {
            sel.never = !v.is_null();
            return sel;
        }
        if let Some(ml) = v.field("matchLabels").and_then(|m| m.entries()) {
            for (k, v) in ml {
                match v.as_str() {
                    Some(v) => sel.reqs.push(SelReq {
                        key: k.to_string(),
                        op: SelOp::In,
                        values: BTreeSet::from([v.to_string()]),
                    }),
                    None => sel.never = true,
                }
            }
        }
        for e in v
            .field("matchExpressions")
            .and_then(Json::as_array)
            .unwrap_or_default()
        {
            let key = e.field("key").and_then(Json::as_str).unwrap_or("");
            let op = match e.field("operator").and_then(Json::as_str).unwrap_or("") {
                "In" => SelOp::In,
                "NotIn" => SelOp::NotIn,
                "Exists" => SelOp::Exists,
                "DoesNotExist" => SelOp::DoesNotExist,
                _ => {
                    sel.never = true;
                    continue;
                }
            };
            let values = strings(e.field("values")).into_iter().collect();
            sel.reqs.push(SelReq {
                key: key.to_string(),
                op,
                values,
            });
        }
        sel
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.never
            && self.reqs.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.op {
                    SelOp::In => v.is_some_and(|v| r.values.contains(v)),
                    SelOp::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                    SelOp::Exists => v.is_some(),
                    SelOp::DoesNotExist => v.is_none(),
                }
            })
    }

    /// Matches every label set.
    pub fn is_everything(&self) -> bool {
        !self.never && self.reqs.is_empty()
    }
}

/// A `NodeSelectorRequirement` (label or field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReq {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl NodeReq {
    fn matches(&self, value: Option<&str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator.as_str() {
            "In" => value.is_some_and(has),
            "NotIn" => value.is_none_or(|v| !has(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            op @ ("Gt" | "Lt") => {
                let (Some(v), [x]) = (value, self.values.as_slice()) else {
                    return false;
                };
                match (v.parse::<i64>(), x.parse::<i64>()) {
                    (Ok(a), Ok(b)) if op == "Gt" => a > b,
                    (Ok(a), Ok(b)) => a < b,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// A `NodeSelectorTerm`: all its expressions and fields must match; an empty term matches nothing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<NodeReq>,
    pub match_fields: Vec<NodeReq>,
}

impl NodeSelectorTerm {
    /// A term from its JSON (`None`: no term, which matches nothing).
    fn from_json<V: Json>(v: Option<&V>) -> Self {
        let reqs = |field: &str| -> Vec<NodeReq> {
            v.and_then(|v| v.field(field))
                .and_then(Json::as_array)
                .unwrap_or_default()
                .iter()
                .map(|r| NodeReq {
                    key: field_str(r, "key").to_string(),
                    operator: field_str(r, "operator").to_string(),
                    values: strings(r.field("values")),
                })
                .collect()
        };
        NodeSelectorTerm {
            match_expressions: reqs("matchExpressions"),
            match_fields: reqs("matchFields"),
        }
    }

    pub fn matches(&self, node: &NodeInfo) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key).map(String::as_str)))
            && self.match_fields.iter().all(|r| {
                r.key == "metadata.name"
                    && matches!(r.operator.as_str(), "In" | "NotIn")
                    && r.matches(Some(&node.name))
            })
    }
}

/// A required pod (anti-)affinity term, with its namespaces resolved against the owning pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityTerm {
    /// None (no labelSelector) matches no pod.
    pub selector: Option<Selector>,
    pub namespaces: BTreeSet<String>,
    /// None matches no namespace; an empty selector matches all.
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
    /// Identity of the term (equal for the replicas of one template).
    key: String,
}

impl AffinityTerm {
    fn from_json<V: Json>(t: &V, pod_ns: &str, pod_labels: &BTreeMap<String, String>) -> Self {
        let mut selector = t
            .field("labelSelector")
            .filter(|s| !s.is_null())
            .map(Selector::from_json);
        if let Some(sel) = selector.as_mut() {
            // matchLabelKeys / mismatchLabelKeys, as the API server merges them into the selector.
            for (field, op) in [
                ("matchLabelKeys", SelOp::In),
                ("mismatchLabelKeys", SelOp::NotIn),
            ] {
                for k in strings(t.field(field)) {
                    if let Some(v) = pod_labels.get(&k) {
                        sel.reqs.push(SelReq {
                            key: k,
                            op,
                            values: BTreeSet::from([v.clone()]),
                        });
                    }
                }
            }
        }
        let mut namespaces: BTreeSet<String> = strings(t.field("namespaces")).into_iter().collect();
        let namespace_selector = t
            .field("namespaceSelector")
            .filter(|s| !s.is_null())
            .map(Selector::from_json);
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(pod_ns.to_string());
        }
        let topology_key = field_str(t, "topologyKey").to_string();
        let key = format!("{namespaces:?}|{namespace_selector:?}|{selector:?}|{topology_key}");
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key,
            key,
        }
    }

    /// A `key In (value)` requirement of the selector (every pod the term selects carries that
    /// label), to index the term by.
    fn index_pair(&self) -> Option<(&str, &str)> {
        let sel = self.selector.as_ref()?;
        if sel.never {
            return None;
        }
        sel.reqs
            .iter()
            .filter(|r| r.op == SelOp::In && r.values.len() == 1)
            .find_map(|r| Some((r.key.as_str(), r.values.first()?.as_str())))
    }

    fn matches_namespace(&self, ns: &str, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        self.namespaces.contains(ns)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.is_everything() || ns_labels.is_some_and(|l| s.matches(l)) || {
                    let empty = BTreeMap::new();
                    ns_labels.is_none() && s.matches(&empty)
                }
            })
    }

    /// Whether the term selects a pod in namespace `ns` with `labels`.
    fn matches(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
        ns_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
            && self.matches_namespace(ns, ns_labels)
    }
}

/// What the scheduler needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Sum of the containers' requests, or the largest init container's (NodeResourcesFit).
    pub requests: Res,
    /// The same with 100m / 200Mi for containers that request nothing (scoring).
    pub non_zero: Res,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms` (None: no requirement).
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<(i64, NodeSelectorTerm)>,
    pub pod_affinity: Vec<AffinityTerm>,
    pub pod_anti_affinity: Vec<AffinityTerm>,
    /// uid of the first controller ownerReference.
    pub owner_uid: Option<String>,
    pub priority: i64,
    pub preemption_never: bool,
    pub node_name: String,
    pub scheduler_name: String,
    pub deleting: bool,
    /// Phase Succeeded or Failed: uses no resources.
    pub terminal: bool,
    /// Has scheduling gates: not scheduled until they are removed.
    pub gated: bool,
}

impl PodInfo {
    pub fn from_json<V: Json + Default>(v: &V) -> PodInfo {
        let null = V::default();
        let (ns, name) = ns_name(v);
        let labels = string_map(at(v, &["metadata", "labels"]));
        let spec = v.field("spec").unwrap_or(&null);
        let (requests, non_zero) = pod_requests(spec);
        let tolerations = spec
            .field("tolerations")
            .and_then(Json::as_array)
            .unwrap_or_default()
            .iter()
            .map(|t| Toleration {
                key: field_str(t, "key").to_string(),
                operator: field_str(t, "operator").to_string(),
                value: field_str(t, "value").to_string(),
                effect: field_str(t, "effect").to_string(),
            })
            .collect();
        let na = at(spec, &["affinity", "nodeAffinity"]);
        let required_node_affinity = na
            .and_then(|n| n.field("requiredDuringSchedulingIgnoredDuringExecution"))
            .filter(|r| !r.is_null())
            .map(|r| {
                r.field("nodeSelectorTerms")
                    .and_then(Json::as_array)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| NodeSelectorTerm::from_json(Some(t)))
                    .collect()
            });
        let preferred_node_affinity = na
            .and_then(|n| n.field("preferredDuringSchedulingIgnoredDuringExecution"))
            .and_then(Json::as_array)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let w = p.field("weight").and_then(Json::as_i64).unwrap_or(0);
                let term = NodeSelectorTerm::from_json(p.field("preference"));
                (w, term)
            })
            .collect();
        let terms = |path: &[&str]| -> Vec<AffinityTerm> {
            at(spec, path)
                .and_then(Json::as_array)
                .unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::from_json(t, ns, &labels))
                .collect()
        };
        let pod_affinity = terms(&[
            "affinity",
            "podAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        ]);
        let pod_anti_affinity = terms(&[
            "affinity",
            "podAntiAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        ]);
        let owner_uid = v
            .field("metadata")
            .and_then(|m| m.field("ownerReferences"))
            .and_then(Json::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.field("controller").and_then(Json::as_bool) == Some(true))
            })
            .and_then(|r| r.field("uid").and_then(Json::as_str))
            .map(str::to_string);
        let phase = at(v, &["status", "phase"]).and_then(Json::as_str);
        PodInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: v
                .field("metadata")
                .and_then(|m| m.field("uid"))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            requests,
            non_zero,
            tolerations,
            node_selector: string_map(spec.field("nodeSelector")),
            required_node_affinity,
            preferred_node_affinity,
            pod_affinity,
            pod_anti_affinity,
            owner_uid,
            priority: spec.field("priority").and_then(Json::as_i64).unwrap_or(0),
            preemption_never: spec.field("preemptionPolicy").and_then(Json::as_str)
                == Some("Never"),
            node_name: field_str(spec, "nodeName").to_string(),
            scheduler_name: spec
                .field("schedulerName")
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_SCHEDULER)
                .to_string(),
            deleting: v
                .field("metadata")
                .and_then(|m| m.field("deletionTimestamp"))
                .is_some_and(|d| !d.is_null()),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            gated: spec
                .field("schedulingGates")
                .and_then(Json::as_array)
                .is_some_and(|g| !g.is_empty()),
            labels,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Requests of one container: `requests`, else `limits` (the API server defaults requests to
/// limits); `non_zero` substitutes the scoring defaults for what is not set at all.
fn container_requests<V: Json>(c: &V) -> (Res, Res) {
    requests_of(
        at(c, &["resources", "requests"]),
        at(c, &["resources", "limits"]),
    )
}

/// [`container_requests`] from the `requests` and `limits` maps.
fn requests_of<V: Json>(req: Option<&V>, lim: Option<&V>) -> (Res, Res) {
    let get = |name: &str, milli: bool| -> Option<i64> {
        req.and_then(|r| r.field(name))
            .or_else(|| lim.and_then(|l| l.field(name)))
            .map(|q| quantity(q, milli).unwrap_or(0).max(0))
    };
    let cpu = get("cpu", true);
    let mem = get("memory", false);
    (
        Res {
            milli_cpu: cpu.unwrap_or(0),
            memory: mem.unwrap_or(0),
        },
        Res {
            milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU_REQUEST),
            memory: mem.unwrap_or(DEFAULT_MEMORY_REQUEST),
        },
    )
}

/// The pod's effective requests: containers summed, init containers as a maximum (restartable
/// sidecars run alongside what follows them), plus the pod overhead.
fn pod_requests<V: Json>(spec: &V) -> (Res, Res) {
    let list = |k: &str| spec.field(k).and_then(Json::as_array).unwrap_or_default();
    let (mut req, mut nz) = (Res::default(), Res::default());
    for c in list("containers") {
        let (r, n) = container_requests(c);
        req.add(r);
        nz.add(n);
    }
    let (mut side, mut side_nz) = (Res::default(), Res::default());
    let (mut init, mut init_nz) = (Res::default(), Res::default());
    for c in list("initContainers") {
        let (r, n) = container_requests(c);
        if c.field("restartPolicy").and_then(Json::as_str) == Some("Always") {
            req.add(r);
            nz.add(n);
            side.add(r);
            side_nz.add(n);
        } else {
            let (mut t, mut tn) = (r, n);
            t.add(side);
            tn.add(side_nz);
            init.max(t);
            init_nz.max(tn);
        }
    }
    req.max(init);
    nz.max(init_nz);
    if let Some(o) = spec.field("overhead") {
        let (r, _) = requests_of(Some(o), None);
        req.add(r);
        nz.add(r);
    }
    (req, nz)
}

/// What the scheduler needs of a node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    /// `spec.taints`, plus the NoSchedule taints TaintNodesByCondition adds for the node's
    /// conditions (not Ready, Ready Unknown, memory/disk/PID pressure, network unavailable).
    pub taints: Vec<Taint>,
    pub allocatable: Res,
    pub max_pods: i64,
    pub ready: bool,
    /// Region and zone (topology labels), for spreading.
    pub zone: Option<String>,
}

impl NodeInfo {
    pub fn from_json<V: Json + Default>(v: &V) -> NodeInfo {
        let null = V::default();
        let name = ns_name(v).1.to_string();
        let labels = string_map(at(v, &["metadata", "labels"]));
        let spec = v.field("spec").unwrap_or(&null);
        let mut taints: Vec<Taint> = spec
            .field("taints")
            .and_then(Json::as_array)
            .unwrap_or_default()
            .iter()
            .map(|t| Taint {
                key: field_str(t, "key").to_string(),
                value: field_str(t, "value").to_string(),
                effect: field_str(t, "effect").to_string(),
            })
            .collect();
        let conds = v
            .field("status")
            .and_then(|s| s.field("conditions"))
            .and_then(Json::as_array)
            .unwrap_or_default();
        let cond = |t: &str| {
            conds
                .iter()
                .find(|c| c.field("type").and_then(Json::as_str) == Some(t))
                .map(|c| field_str(c, "status"))
        };
        let ready = cond("Ready") == Some("True");
        let mut implicit = Vec::new();
        match cond("Ready") {
            Some("True") => {}
            Some("False") | None => implicit.push("node.kubernetes.io/not-ready"),
            Some(_) => implicit.push("node.kubernetes.io/unreachable"),
        }
        for (c, key) in [
            ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
            ("DiskPressure", "node.kubernetes.io/disk-pressure"),
            ("PIDPressure", "node.kubernetes.io/pid-pressure"),
            (
                "NetworkUnavailable",
                "node.kubernetes.io/network-unavailable",
            ),
        ] {
            if cond(c) == Some("True") {
                implicit.push(key);
            }
        }
        for key in implicit {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                taints.push(Taint {
                    key: key.to_string(),
                    value: String::new(),
                    effect: "NoSchedule".to_string(),
                });
            }
        }
        let status = v.field("status").unwrap_or(&null);
        let res = |name: &str, milli: bool| -> Option<i64> {
            status
                .field("allocatable")
                .and_then(|a| a.field(name))
                .or_else(|| at(status, &["capacity", name]))
                .and_then(|q| quantity(q, milli))
        };
        let label = |a: &str, b: &str| {
            labels
                .get(a)
                .or_else(|| labels.get(b))
                .cloned()
                .unwrap_or_default()
        };
        let (region, zone) = (
            label(REGION_LABEL, REGION_LABEL_BETA),
            label(ZONE_LABEL, ZONE_LABEL_BETA),
        );
        NodeInfo {
            name,
            unschedulable: spec.field("unschedulable").and_then(Json::as_bool) == Some(true),
            taints,
            allocatable: Res {
                milli_cpu: res("cpu", true).unwrap_or(0),
                memory: res("memory", false).unwrap_or(0),
            },
            max_pods: res("pods", false).unwrap_or(DEFAULT_MAX_PODS),
            ready,
            zone: (!region.is_empty() || !zone.is_empty()).then(|| format!("{region}/{zone}")),
            labels,
        }
    }
}

/// What is requested on a node by the pods counted there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub requested: Res,
    pub non_zero: Res,
    pub pods: i64,
}

/// `v[p0][p1]...` without `Value::pointer`'s per-segment allocations.
fn at<'a, V: Json>(v: &'a V, path: &[&str]) -> Option<&'a V> {
    path.iter().try_fold(v, |v, k| v.field(k))
}

/// The string field `k` of `v` ("" if absent): a field, not a pointer.
fn field_str<'a, V: Json>(v: &'a V, k: &str) -> &'a str {
    v.field(k).and_then(Json::as_str).unwrap_or("")
}

fn strings<V: Json>(v: Option<&V>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map<V: Json>(v: Option<&V>) -> BTreeMap<String, String> {
    v.and_then(|v| v.entries())
        .map(|m| {
            m.filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// Why a node does not fit a pod: one filter's verdict.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// NodeUnschedulable.
    Unschedulable,
    /// TaintToleration: the first NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint {
        key: String,
        value: String,
    },
    /// NodeAffinity: nodeSelector or required node affinity.
    NodeAffinity,
    /// Not among the nodes NodeAffinity's PreFilter named (matchFields metadata.name).
    NotInPreFilterResult,
    TooManyPods,
    /// `unresolvable`: the request exceeds the node's allocatable (preemption cannot help).
    InsufficientCpu {
        unresolvable: bool,
    },
    InsufficientMemory {
        unresolvable: bool,
    },
    /// Required pod affinity.
    PodAffinity,
    /// The pod's required anti-affinity.
    PodAntiAffinity,
    /// An existing pod's required anti-affinity.
    ExistingPodsAntiAffinity,
}

const MASK_NODE: u8 = 1;
const MASK_RESOURCES: u8 = 2;
const MASK_INTERPOD: u8 = 4;
const MASK_ALL: u8 = 7;

impl Reason {
    /// The real scheduler's reason string.
    pub fn text(&self, hide_taint_values: bool) -> String {
        match self {
            Reason::Unschedulable => "node(s) were unschedulable".into(),
            Reason::UntoleratedTaint { .. } if hide_taint_values => {
                "node(s) had untolerated taint(s)".into()
            }
            Reason::UntoleratedTaint { key, value } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reason::NotInPreFilterResult => {
                "node(s) didn't satisfy plugin(s) [NodeAffinity]".into()
            }
            Reason::TooManyPods => "Too many pods".into(),
            Reason::InsufficientCpu { .. } => "Insufficient cpu".into(),
            Reason::InsufficientMemory { .. } => "Insufficient memory".into(),
            Reason::PodAffinity => "node(s) didn't match pod affinity rules".into(),
            Reason::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules".into(),
            Reason::ExistingPodsAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules".into()
            }
        }
    }

    /// UnschedulableAndUnresolvable: removing pods from the node would not help.
    pub fn unresolvable(&self) -> bool {
        match self {
            Reason::TooManyPods | Reason::PodAntiAffinity | Reason::ExistingPodsAntiAffinity => {
                false
            }
            Reason::InsufficientCpu { unresolvable }
            | Reason::InsufficientMemory { unresolvable } => *unresolvable,
            _ => true,
        }
    }

    /// Which cluster changes could make the node fit again.
    fn mask(&self) -> u8 {
        match self {
            Reason::TooManyPods
            | Reason::InsufficientCpu { .. }
            | Reason::InsufficientMemory { .. } => MASK_RESOURCES,
            Reason::PodAffinity | Reason::PodAntiAffinity | Reason::ExistingPodsAntiAffinity => {
                MASK_INTERPOD
            }
            _ => MASK_NODE,
        }
    }
}

/// Whether the pod's nodeSelector and required node affinity match the node.
pub fn node_affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
}

/// The node-local filters, in the default profile's order: NodeUnschedulable, TaintToleration,
/// NodeAffinity, NodeResourcesFit. Err holds the failing filter's reasons (several only for
/// resources). Inter-pod affinity needs the whole cluster: see [`SchedulerCache::check_node`].
pub fn feasible(pod: &PodInfo, node: &NodeInfo, usage: &NodeUsage) -> Result<(), Vec<Reason>> {
    if node.unschedulable {
        static T: std::sync::LazyLock<Taint> = std::sync::LazyLock::new(|| Taint {
            key: UNSCHEDULABLE_TAINT.to_string(),
            value: String::new(),
            effect: "NoSchedule".to_string(),
        });
        if !tolerated(&pod.tolerations, &T) {
            return Err(vec![Reason::Unschedulable]);
        }
    }
    if let Some(t) = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(&pod.tolerations, t)
    }) {
        return Err(vec![Reason::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone(),
        }]);
    }
    if !node_affinity_matches(pod, node) {
        return Err(vec![Reason::NodeAffinity]);
    }
    let mut reasons = Vec::new();
    if usage.pods + 1 > node.max_pods {
        reasons.push(Reason::TooManyPods);
    }
    let (req, alloc, used) = (pod.requests, node.allocatable, usage.requested);
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu.saturating_sub(used.milli_cpu) {
        reasons.push(Reason::InsufficientCpu {
            unresolvable: req.milli_cpu > alloc.milli_cpu,
        });
    }
    if req.memory > 0 && req.memory > alloc.memory.saturating_sub(used.memory) {
        reasons.push(Reason::InsufficientMemory {
            unresolvable: req.memory > alloc.memory,
        });
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// NodeAffinity's PreFilter: when every required term names nodes by `metadata.name In`, only
/// those nodes are candidates (DaemonSet pods). Some(empty) means the terms conflict.
fn prefilter_node_names(pod: &PodInfo) -> Option<BTreeSet<String>> {
    let terms = pod.required_node_affinity.as_ref()?;
    if terms.is_empty() {
        return None;
    }
    let mut names = BTreeSet::new();
    for t in terms {
        let mut term_names: Option<BTreeSet<String>> = None;
        for f in &t.match_fields {
            if f.key == "metadata.name" && f.operator == "In" {
                let s: BTreeSet<String> = f.values.iter().cloned().collect();
                term_names = Some(match term_names {
                    None => s,
                    Some(p) => p.intersection(&s).cloned().collect(),
                });
            }
        }
        names.extend(term_names?);
    }
    Some(names)
}

/// Why a pod fits no node, rendered like the real scheduler's `FitError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Reason text → number of nodes.
    pub reasons: BTreeMap<String, usize>,
    /// A PreFilter verdict that applies to all nodes.
    pub prefilter: Option<String>,
    /// Nodes where preemption might help / cannot help.
    pub resolvable_nodes: usize,
    pub unresolvable_nodes: usize,
    pub preemption_never: bool,
    mask: u8,
}

impl FitError {
    pub fn message(&self) -> String {
        let n = self.num_all_nodes;
        if n == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        let mut msg = format!("0/{n} nodes are available:");
        if let Some(p) = &self.prefilter {
            msg.push_str(&format!(" {p}."));
        } else {
            let mut hist: Vec<String> = self
                .reasons
                .iter()
                .map(|(r, c)| format!("{c} {r}"))
                .collect();
            hist.sort();
            if !hist.is_empty() {
                msg.push_str(&format!(" {}.", hist.join(", ")));
            }
        }
        if self.preemption_never {
            msg.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
        } else {
            let mut hist = Vec::new();
            if self.resolvable_nodes > 0 {
                hist.push(format!(
                    "{} No preemption victims found for incoming pod",
                    self.resolvable_nodes
                ));
            }
            if self.unresolvable_nodes > 0 {
                hist.push(format!(
                    "{} Preemption is not helpful for scheduling",
                    self.unresolvable_nodes
                ));
            }
            hist.sort();
            msg.push_str(&format!(
                " preemption: 0/{n} nodes are available: {}.",
                hist.join(", ")
            ));
        }
        msg
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FitError {}

// ---------------------------------------------------------------------------------------------
// The cache: nodes, counted pods and indices
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct NodeSlot {
    /// None: pods are bound to a node that is not (or no longer) known.
    info: Option<NodeInfo>,
    usage: NodeUsage,
}

struct CountedPod {
    info: Arc<PodInfo>,
    node: String,
}

/// The pods that carry one distinct required anti-affinity term, by node.
struct AntiEntry {
    term: AffinityTerm,
    nodes: BTreeMap<String, u32>,
}

/// The scheduler's view of the cluster: nodes with the requests of the pods counted on them
/// (bound and not terminal, or assumed), and the indices inter-pod affinity and spreading need.
/// Every update is O(log n) in the number of pods; scheduling one pod is O(nodes) plus the pods
/// its affinity terms select.
pub struct SchedulerCache {
    nodes: BTreeMap<String, NodeSlot>,
    node_count: usize,
    slots: Vec<Option<CountedPod>>,
    free: Vec<u32>,
    by_key: HashMap<String, u32>,
    /// (label key, value) → pods.
    label_index: HashMap<(String, String), BTreeSet<u32>>,
    ns_index: HashMap<String, BTreeSet<u32>>,
    anti_terms: BTreeMap<String, AntiEntry>,
    /// Keys of `anti_terms` without a namespace selector: by the namespaces they list and one
    /// `key In (value)` requirement of their selector (namespace → key → value → terms), or by
    /// namespace alone when they have none; and the terms with a namespace selector (any
    /// namespace may match). A pod is checked against the terms that can select it.
    anti_by_pair: HashMap<String, BTreeMap<String, BTreeMap<String, BTreeSet<String>>>>,
    anti_by_ns: HashMap<String, BTreeSet<String>>,
    anti_any_ns: BTreeSet<String>,
    /// controller uid → node → pods.
    owners: HashMap<String, BTreeMap<String, u32>>,
    ns_labels: HashMap<String, BTreeMap<String, String>>,
    next_start: Option<String>,
    percentage: u32,
    hide_taint_values: bool,
}

impl Default for SchedulerCache {
    fn default() -> Self {
        Self::new(&SchedulerConfig::default())
    }
}

/// Per-pod state computed once per attempt (the InterPodAffinity PreFilter).
struct InterPod {
    /// Per required affinity term: its topology key and the values where matching pods run.
    affinity: Vec<(String, BTreeSet<String>)>,
    affinity_any: bool,
    self_match: bool,
    anti: BTreeMap<String, BTreeSet<String>>,
    existing_anti: BTreeMap<String, BTreeSet<String>>,
}

impl InterPod {
    fn check(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Reason> {
        if !pod.pod_affinity.is_empty() {
            let mut pods_exist = true;
            for (key, vals) in &self.affinity {
                match node.labels.get(key) {
                    Some(v) => pods_exist &= vals.contains(v),
                    None => return Err(Reason::PodAffinity),
                }
            }
            if !pods_exist && (self.affinity_any || !self.self_match) {
                return Err(Reason::PodAffinity);
            }
        }
        let hit = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.iter()
                .any(|(k, vals)| node.labels.get(k).is_some_and(|v| vals.contains(v)))
        };
        if hit(&self.anti) {
            return Err(Reason::PodAntiAffinity);
        }
        if hit(&self.existing_anti) {
            return Err(Reason::ExistingPodsAntiAffinity);
        }
        Ok(())
    }
}

impl SchedulerCache {
    pub fn new(config: &SchedulerConfig) -> Self {
        SchedulerCache {
            nodes: BTreeMap::new(),
            node_count: 0,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            label_index: HashMap::new(),
            ns_index: HashMap::new(),
            anti_terms: BTreeMap::new(),
            anti_by_pair: HashMap::new(),
            anti_by_ns: HashMap::new(),
            anti_any_ns: BTreeSet::new(),
            owners: HashMap::new(),
            ns_labels: HashMap::new(),
            next_start: None,
            percentage: config.percentage_of_nodes_to_score.min(100),
            hide_taint_values: config.hide_taint_values,
        }
    }

    /// Adds or replaces a node; returns whether anything the scheduler looks at changed.
    pub fn set_node(&mut self, info: NodeInfo) -> bool {
        let slot = self.nodes.entry(info.name.clone()).or_default();
        if slot.info.as_ref() == Some(&info) {
            return false;
        }
        if slot.info.is_none() {
            self.node_count += 1;
        }
        slot.info = Some(info);
        true
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(slot) = self.nodes.get_mut(name) {
            if slot.info.take().is_some() {
                self.node_count -= 1;
            }
            if slot.usage.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).and_then(|s| s.info.as_ref())
    }

    /// Number of known nodes.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// What the counted pods request on a node (also for nodes not known yet).
    pub fn usage(&self, name: &str) -> NodeUsage {
        self.nodes.get(name).map(|s| s.usage).unwrap_or_default()
    }

    /// Namespace labels, for affinity terms with a namespaceSelector. Returns whether they changed.
    pub fn set_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) -> bool {
        if self.ns_labels.get(name) == Some(&labels) {
            return false;
        }
        self.ns_labels.insert(name.to_string(), labels);
        true
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.ns_labels.remove(name);
    }

    /// The node a pod (`namespace/name`) is counted on, and its info.
    pub fn counted(&self, key: &str) -> Option<(&Arc<PodInfo>, &str)> {
        let id = *self.by_key.get(key)?;
        let p = self.slots.get(id as usize)?.as_ref()?;
        Some((&p.info, p.node.as_str()))
    }

    /// Keys of all counted pods, sorted.
    pub fn counted_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_key.keys().cloned().collect();
        v.sort();
        v
    }

    /// Counts a pod on a node (bound, or assumed by the scheduler), replacing an earlier entry.
    pub fn add_pod(&mut self, info: Arc<PodInfo>, node: &str) {
        let key = info.key();
        self.remove_pod(&key);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let slot = self.nodes.entry(node.to_string()).or_default();
        slot.usage.requested.add(info.requests);
        slot.usage.non_zero.add(info.non_zero);
        slot.usage.pods += 1;
        for (k, v) in &info.labels {
            self.label_index
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(id);
        }
        self.ns_index
            .entry(info.namespace.clone())
            .or_default()
            .insert(id);
        for t in &info.pod_anti_affinity {
            if !self.anti_terms.contains_key(&t.key) {
                if t.namespace_selector.is_some() {
                    self.anti_any_ns.insert(t.key.clone());
                } else {
                    let pair = t.index_pair();
                    for ns in &t.namespaces {
                        match pair {
                            Some((k, v)) => {
                                self.anti_by_pair
                                    .entry(ns.clone())
                                    .or_default()
                                    .entry(k.to_string())
                                    .or_default()
                                    .entry(v.to_string())
                                    .or_default()
                                    .insert(t.key.clone());
                            }
                            None => {
                                self.anti_by_ns
                                    .entry(ns.clone())
                                    .or_default()
                                    .insert(t.key.clone());
                            }
                        }
                    }
                }
            }
            let e = self
                .anti_terms
                .entry(t.key.clone())
                .or_insert_with(|| AntiEntry {
                    term: t.clone(),
                    nodes: BTreeMap::new(),
                });
            *e.nodes.entry(node.to_string()).or_default() += 1;
        }
        if let Some(o) = &info.owner_uid {
            *self
                .owners
                .entry(o.clone())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.by_key.insert(key, id);
        self.slots[id as usize] = Some(CountedPod {
            info,
            node: node.to_string(),
        });
    }

    /// Stops counting a pod; returns it and its node.
    pub fn remove_pod(&mut self, key: &str) -> Option<(Arc<PodInfo>, String)> {
        let id = self.by_key.remove(key)?;
        let CountedPod { info, node } = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        if let Some(slot) = self.nodes.get_mut(&node) {
            slot.usage.requested.sub(info.requests);
            slot.usage.non_zero.sub(info.non_zero);
            slot.usage.pods -= 1;
            if slot.usage.pods <= 0 && slot.info.is_none() {
                self.nodes.remove(&node);
            }
        }
        for (k, v) in &info.labels {
            let lk = (k.clone(), v.clone());
            if let Some(s) = self.label_index.get_mut(&lk) {
                s.remove(&id);
                if s.is_empty() {
                    self.label_index.remove(&lk);
                }
            }
        }
        if let Some(s) = self.ns_index.get_mut(&info.namespace) {
            s.remove(&id);
            if s.is_empty() {
                self.ns_index.remove(&info.namespace);
            }
        }
        for t in &info.pod_anti_affinity {
            if let Some(e) = self.anti_terms.get_mut(&t.key) {
                dec(&mut e.nodes, &node);
                if e.nodes.is_empty()
                    && let Some(e) = self.anti_terms.remove(&t.key)
                {
                    self.anti_any_ns.remove(&t.key);
                    let pair = e.term.index_pair();
                    for ns in &e.term.namespaces {
                        if let Some(set) = self.anti_by_ns.get_mut(ns) {
                            set.remove(&t.key);
                            if set.is_empty() {
                                self.anti_by_ns.remove(ns);
                            }
                        }
                        if let Some((k, v)) = pair
                            && let Some(keys) = self.anti_by_pair.get_mut(ns)
                        {
                            if let Some(values) = keys.get_mut(k) {
                                if let Some(set) = values.get_mut(v) {
                                    set.remove(&t.key);
                                    if set.is_empty() {
                                        values.remove(v);
                                    }
                                }
                                if values.is_empty() {
                                    keys.remove(k);
                                }
                            }
                            if keys.is_empty() {
                                self.anti_by_pair.remove(ns);
                            }
                        }
                    }
                }
            }
        }
        if let Some(o) = &info.owner_uid
            && let Some(m) = self.owners.get_mut(o)
        {
            dec(m, &node);
            if m.is_empty() {
                self.owners.remove(o);
            }
        }
        Some((info, node))
    }

    /// Counted pods that `term` (of a pod in any namespace) selects, via the most selective index.
    fn matching_pods(&self, term: &AffinityTerm) -> Vec<&CountedPod> {
        let Some(sel) = &term.selector else {
            return Vec::new();
        };
        let mut best: Option<(usize, Vec<&BTreeSet<u32>>)> = None;
        for r in sel.reqs.iter().filter(|r| r.op == SelOp::In) {
            let sets: Vec<&BTreeSet<u32>> = r
                .values
                .iter()
                .filter_map(|v| self.label_index.get(&(r.key.clone(), v.clone())))
                .collect();
            let n = sets.iter().map(|s| s.len()).sum();
            if best.as_ref().is_none_or(|(b, _)| n < *b) {
                best = Some((n, sets));
            }
        }
        let ids: Vec<u32> = match best {
            Some((_, sets)) => sets.into_iter().flatten().copied().collect(),
            None if term.namespace_selector.is_none() => term
                .namespaces
                .iter()
                .filter_map(|ns| self.ns_index.get(ns))
                .flatten()
                .copied()
                .collect(),
            None => (0..self.slots.len() as u32).collect(),
        };
        ids.into_iter()
            .filter_map(|id| self.slots.get(id as usize)?.as_ref())
            .filter(|p| {
                term.matches(
                    &p.info.namespace,
                    &p.info.labels,
                    self.ns_labels.get(&p.info.namespace),
                )
            })
            .collect()
    }

    fn node_label(&self, node: &str, key: &str) -> Option<&str> {
        self.node(node)?.labels.get(key).map(String::as_str)
    }

    fn inter_pod(&self, pod: &PodInfo) -> InterPod {
        let mut ip = InterPod {
            affinity: Vec::new(),
            affinity_any: false,
            self_match: false,
            anti: BTreeMap::new(),
            existing_anti: BTreeMap::new(),
        };
        let own_ns = self.ns_labels.get(&pod.namespace);
        if let Some(first) = pod.pod_affinity.first() {
            ip.affinity = pod
                .pod_affinity
                .iter()
                .map(|t| (t.topology_key.clone(), BTreeSet::new()))
                .collect();
            for p in self.matching_pods(first) {
                let ns_l = self.ns_labels.get(&p.info.namespace);
                if is_same(&p.info, pod)
                    || !pod
                        .pod_affinity
                        .iter()
                        .all(|t| t.matches(&p.info.namespace, &p.info.labels, ns_l))
                {
                    continue;
                }
                for (key, vals) in ip.affinity.iter_mut() {
                    if let Some(v) = self.node_label(&p.node, key) {
                        vals.insert(v.to_string());
                        ip.affinity_any = true;
                    }
                }
            }
            ip.self_match = pod
                .pod_affinity
                .iter()
                .all(|t| t.matches(&pod.namespace, &pod.labels, own_ns));
        }
        for t in &pod.pod_anti_affinity {
            for p in self.matching_pods(t) {
                if is_same(&p.info, pod) {
                    continue;
                }
                if let Some(v) = self.node_label(&p.node, &t.topology_key) {
                    ip.anti
                        .entry(t.topology_key.clone())
                        .or_default()
                        .insert(v.to_string());
                }
            }
        }
        // Only the terms that can select a pod of this namespace.
        let mut keys: BTreeSet<&String> = self.anti_any_ns.iter().collect();
        if let Some(set) = self.anti_by_ns.get(&pod.namespace) {
            keys.extend(set.iter());
        }
        if let Some(by_key) = self.anti_by_pair.get(&pod.namespace) {
            for (k, v) in &pod.labels {
                if let Some(set) = by_key.get(k).and_then(|values| values.get(v)) {
                    keys.extend(set.iter());
                }
            }
        }
        for e in keys.into_iter().filter_map(|k| self.anti_terms.get(k)) {
            if !e.term.matches(&pod.namespace, &pod.labels, own_ns) {
                continue;
            }
            for n in e.nodes.keys() {
                if let Some(v) = self.node_label(n, &e.term.topology_key) {
                    ip.existing_anti
                        .entry(e.term.topology_key.clone())
                        .or_default()
                        .insert(v.to_string());
                }
            }
        }
        ip
    }

    /// All filters for one node, including inter-pod (anti-)affinity against the counted pods.
    pub fn check_node(&self, pod: &PodInfo, node: &str) -> Result<(), Vec<Reason>> {
        let Some(slot) = self.nodes.get(node) else {
            return Err(vec![Reason::NodeAffinity]);
        };
        let Some(info) = &slot.info else {
            return Err(vec![Reason::NodeAffinity]);
        };
        feasible(pod, info, &slot.usage)?;
        self.inter_pod(pod).check(pod, info).map_err(|r| vec![r])
    }

    fn num_to_find(&self, n: usize) -> usize {
        if n < MIN_FEASIBLE_NODES_TO_FIND {
            return n;
        }
        let mut pct = self.percentage as usize;
        if pct == 0 {
            pct = 50usize
                .saturating_sub(n / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE);
        }
        (n * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Chooses a node for the pod (filters, then scores; equal scores: the first node by name).
    /// Does not count the pod: call [`SchedulerCache::add_pod`] to assume it there.
    pub fn schedule(&mut self, pod: &PodInfo) -> Result<String, FitError> {
        let n_all = self.node_count;
        let mut err = FitError {
            num_all_nodes: n_all,
            reasons: BTreeMap::new(),
            prefilter: None,
            resolvable_nodes: 0,
            unresolvable_nodes: 0,
            preemption_never: pod.preemption_never,
            mask: 0,
        };
        if n_all == 0 {
            err.mask = MASK_NODE;
            return Err(err);
        }
        let prefilter = prefilter_node_names(pod);
        if prefilter.as_ref().is_some_and(BTreeSet::is_empty) {
            err.prefilter = Some("pod affinity terms conflict".to_string());
            err.unresolvable_nodes = n_all;
            err.mask = MASK_NODE;
            return Err(err);
        }
        let ip = self.inter_pod(pod);
        let hide = self.hide_taint_values;
        let mut feasible_nodes: Vec<(&str, &NodeSlot)> = Vec::new();
        // Reasons are counted as they are and rendered only if no node fits.
        let mut counts: Vec<(Reason, usize)> = Vec::new();
        let mut record = |err: &mut FitError, reasons: Vec<Reason>| {
            let mut unresolvable = false;
            for r in reasons {
                unresolvable |= r.unresolvable();
                err.mask |= r.mask();
                match counts.iter_mut().find(|(c, _)| *c == r) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((r, 1)),
                }
            }
            if unresolvable {
                err.unresolvable_nodes += 1;
            } else {
                err.resolvable_nodes += 1;
            }
        };
        let evaluate = |slot: &NodeSlot| -> Result<(), Vec<Reason>> {
            let Some(info) = &slot.info else {
                return Err(Vec::new());
            };
            feasible(pod, info, &slot.usage)?;
            ip.check(pod, info).map_err(|r| vec![r])
        };
        let mut next_start = None;
        match &prefilter {
            Some(names) => {
                let mut candidates = 0;
                for name in names {
                    let Some((name, slot)) = self.nodes.get_key_value(name.as_str()) else {
                        continue;
                    };
                    if slot.info.is_none() {
                        continue;
                    }
                    candidates += 1;
                    match evaluate(slot) {
                        Ok(()) => feasible_nodes.push((name.as_str(), slot)),
                        Err(r) => record(&mut err, r),
                    }
                }
                for _ in candidates..n_all {
                    record(&mut err, vec![Reason::NotInPreFilterResult]);
                }
            }
            None => {
                let want = self.num_to_find(n_all);
                let start = self.next_start.clone().unwrap_or_default();
                let iter = self
                    .nodes
                    .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
                    .chain(
                        self.nodes
                            .range::<str, _>((Bound::Unbounded, Bound::Excluded(start.as_str()))),
                    );
                let mut last = None;
                for (name, slot) in iter {
                    if slot.info.is_none() {
                        continue;
                    }
                    last = Some(name);
                    match evaluate(slot) {
                        Ok(()) => {
                            feasible_nodes.push((name.as_str(), slot));
                            if feasible_nodes.len() >= want {
                                break;
                            }
                        }
                        Err(r) => record(&mut err, r),
                    }
                }
                if want < n_all
                    && let Some(last) = last
                {
                    next_start = Some(
                        self.nodes
                            .range::<str, _>((Bound::Excluded(last.as_str()), Bound::Unbounded))
                            .next()
                            .map(|(k, _)| k.clone())
                            .unwrap_or_default(),
                    );
                }
            }
        }
        let chosen = match feasible_nodes.len() {
            0 => None,
            1 => Some(feasible_nodes[0].0.to_string()),
            _ => Some(self.best(pod, &feasible_nodes)),
        };
        if next_start.is_some() {
            self.next_start = next_start;
        }
        if chosen.is_none() {
            for (r, n) in counts {
                *err.reasons.entry(r.text(hide)).or_default() += n;
            }
        }
        chosen.ok_or(err)
    }

    /// The highest-scoring node (equal scores: the smallest name).
    fn best(&self, pod: &PodInfo, feasible_nodes: &[(&str, &NodeSlot)]) -> String {
        struct Raw<'a> {
            name: &'a str,
            taints: i64,
            affinity: i64,
            resources: i64,
            owner_on_node: i64,
            zone: Option<&'a str>,
            /// The owner's pods in the node's zone.
            in_zone: i64,
        }
        let owner_nodes = pod.owner_uid.as_ref().and_then(|o| self.owners.get(o));
        let mut by_zone: BTreeMap<&str, i64> = BTreeMap::new();
        if let Some(m) = owner_nodes {
            for (n, c) in m {
                if let Some(z) = self.node(n).and_then(|i| i.zone.as_deref()) {
                    *by_zone.entry(z).or_default() += i64::from(*c);
                }
            }
        }
        let prefer_tolerations: Vec<&Toleration> = pod
            .tolerations
            .iter()
            .filter(|t| t.effect.is_empty() || t.effect == "PreferNoSchedule")
            .collect();
        let raws: Vec<Raw> = feasible_nodes
            .iter()
            .filter_map(|(name, slot)| {
                let info = slot.info.as_ref()?;
                let taints = info
                    .taints
                    .iter()
                    .filter(|t| {
                        t.effect == "PreferNoSchedule"
                            && !prefer_tolerations.iter().any(|tol| tol.tolerates(t))
                    })
                    .count() as i64;
                let affinity = pod
                    .preferred_node_affinity
                    .iter()
                    .filter(|(_, term)| term.matches(info))
                    .map(|(w, _)| *w)
                    .sum();
                let mut req = slot.usage.non_zero;
                req.add(pod.non_zero);
                let alloc = info.allocatable;
                let least = (least_allocated(alloc.milli_cpu, req.milli_cpu)
                    + least_allocated(alloc.memory, req.memory))
                    / 2;
                let balanced = balanced(alloc, req);
                Some(Raw {
                    name,
                    taints,
                    affinity,
                    resources: least + balanced,
                    owner_on_node: owner_nodes
                        .filter(|m| !m.is_empty())
                        .and_then(|m| m.get(*name))
                        .map_or(0, |c| i64::from(*c)),
                    zone: info.zone.as_deref(),
                    in_zone: info
                        .zone
                        .as_deref()
                        .filter(|_| !by_zone.is_empty())
                        .and_then(|z| by_zone.get(z).copied())
                        .unwrap_or(0),
                })
            })
            .collect();
        let max_taints = raws.iter().map(|r| r.taints).max().unwrap_or(0);
        let max_aff = raws.iter().map(|r| r.affinity).max().unwrap_or(0);
        let max_node = raws.iter().map(|r| r.owner_on_node).max().unwrap_or(0);
        let max_zone = raws
            .iter()
            .filter(|r| r.zone.is_some())
            .map(|r| r.in_zone)
            .max()
            .unwrap_or(0);
        let have_zones = raws.iter().any(|r| r.zone.is_some());
        let mut best: Option<(i64, &str)> = None;
        for r in &raws {
            let taint_score = if max_taints > 0 {
                MAX_SCORE - r.taints * MAX_SCORE / max_taints
            } else {
                MAX_SCORE
            };
            let aff_score = if max_aff > 0 {
                r.affinity.max(0) * MAX_SCORE / max_aff
            } else {
                0
            };
            let mut spread = if max_node > 0 {
                MAX_SCORE * (max_node - r.owner_on_node) / max_node
            } else {
                MAX_SCORE
            };
            if have_zones && r.zone.is_some() {
                let zone_score = if max_zone > 0 {
                    MAX_SCORE * (max_zone - r.in_zone) / max_zone
                } else {
                    MAX_SCORE
                };
                spread = (spread + 2 * zone_score) / 3;
            }
            let total = 3 * taint_score + 2 * aff_score + 2 * spread + r.resources;
            if best.is_none_or(|(b, _)| total > b) {
                best = Some((total, r.name));
            }
        }
        best.map(|(_, n)| n.to_string())
            .or_else(|| feasible_nodes.first().map(|n| n.0.to_string()))
            .unwrap_or_default()
    }
}

/// The same pod (a pod never counts against itself).
fn is_same(a: &PodInfo, b: &PodInfo) -> bool {
    a.namespace == b.namespace && a.name == b.name
}

fn dec(m: &mut BTreeMap<String, u32>, k: &str) {
    if let Some(c) = m.get_mut(k) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            m.remove(k);
        }
    }
}

fn least_allocated(alloc: i64, req: i64) -> i64 {
    if alloc <= 0 || req > alloc {
        return 0;
    }
    ((i128::from(alloc - req) * i128::from(MAX_SCORE)) / i128::from(alloc)) as i64
}

/// BalancedAllocation: 100 × (1 − the standard deviation of the cpu and memory fractions).
fn balanced(alloc: Res, req: Res) -> i64 {
    const UNIT: i128 = 1_000_000;
    let frac = |a: i64, r: i64| -> i128 {
        if a <= 0 {
            UNIT
        } else {
            (i128::from(r) * UNIT / i128::from(a)).min(UNIT)
        }
    };
    let std = (frac(alloc.milli_cpu, req.milli_cpu) - frac(alloc.memory, req.memory)).abs() / 2;
    ((UNIT - std) * i128::from(MAX_SCORE) / UNIT) as i64
}

// ---------------------------------------------------------------------------------------------
// The component
// ---------------------------------------------------------------------------------------------

/// Starts the scheduler: it runs until the runtime stops.
pub fn spawn(cluster: Cluster, config: SchedulerConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut runner = Runner::new(cluster, config);
        runner.run().await;
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Active,
    Backoff(Instant),
    Unschedulable,
}

/// A pod waiting to be scheduled.
struct Pending {
    uid: String,
    obj: Arc<StoredObject>,
    info: Arc<PodInfo>,
    seq: u64,
    queue: Queue,
    attempts: u32,
    last_attempt: Option<Instant>,
    last_message: Option<String>,
    mask: u8,
}

impl Pending {
    fn active_key(&self) -> (i64, u64) {
        (-self.info.priority, self.seq)
    }
}

struct Watches {
    pods: UnboundedReceiver<Change>,
    nodes: UnboundedReceiver<Change>,
    namespaces: UnboundedReceiver<Change>,
}

enum Input {
    Pods(Option<Change>),
    Nodes(Option<Change>),
    Namespaces(Option<Change>),
    Flush,
    Timer,
}

/// What a `PodInfo` is made of: metadata's uid, labels, owners and deletion, the spec, the
/// phase. Parts of the stored tree (shared with the object's later versions while unchanged),
/// compared by pointer first.
#[derive(PartialEq)]
struct Basis([Option<Tree>; 6]);

impl Basis {
    fn of(v: &Tree) -> Basis {
        let part = |p: &str| v.ptr(p).cloned();
        Basis([
            part("/spec"),
            part("/metadata/uid"),
            part("/metadata/labels"),
            part("/metadata/ownerReferences"),
            part("/metadata/deletionTimestamp"),
            part("/status/phase"),
        ])
    }
}

struct Runner {
    cluster: Cluster,
    config: SchedulerConfig,
    cache: SchedulerCache,
    pending: HashMap<String, Pending>,
    active: BTreeMap<(i64, u64), String>,
    backoff: BTreeMap<(Instant, u64), String>,
    unschedulable: BTreeMap<u64, String>,
    /// Pods assumed on a node and bound (or being bound) by us, not yet seen bound: key → uid.
    assumed: HashMap<String, String>,
    /// The last version of each pod seen, with what was derived from it: a status write keeps
    /// metadata and spec (shared with the version before), so its `PodInfo` is the same.
    seen: HashMap<String, (Basis, Arc<PodInfo>)>,
    trigger: u8,
    seq: u64,
    synced: [bool; 3],
}

impl Runner {
    fn new(cluster: Cluster, config: SchedulerConfig) -> Self {
        Runner {
            cache: SchedulerCache::new(&config),
            cluster,
            config,
            pending: HashMap::new(),
            active: BTreeMap::new(),
            backoff: BTreeMap::new(),
            unschedulable: BTreeMap::new(),
            assumed: HashMap::new(),
            seen: HashMap::new(),
            trigger: 0,
            seq: 0,
            synced: [false; 3],
        }
    }

    fn watch(&self, r: &ResourceInfo) -> UnboundedReceiver<Change> {
        self.cluster.informer_channel(r)
    }

    async fn run(&mut self) {
        let res = self.cluster.res.clone();
        let mut w = Watches {
            pods: self.watch(&res.pods),
            nodes: self.watch(&res.nodes),
            namespaces: self.watch(&res.namespaces),
        };
        let mut flush = tokio::time::interval_at(
            Instant::now() + self.config.unschedulable_flush,
            self.config
                .unschedulable_flush
                .max(Duration::from_millis(1)),
        );
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Take in everything that has arrived, so that a burst of changes is one batch.
            loop {
                let input = match w.nodes.try_recv() {
                    Ok(c) => Input::Nodes(Some(c)),
                    Err(TryRecvError::Disconnected) => Input::Nodes(None),
                    Err(TryRecvError::Empty) => match w.pods.try_recv() {
                        Ok(c) => Input::Pods(Some(c)),
                        Err(TryRecvError::Disconnected) => Input::Pods(None),
                        Err(TryRecvError::Empty) => match w.namespaces.try_recv() {
                            Ok(c) => Input::Namespaces(Some(c)),
                            Err(TryRecvError::Disconnected) => Input::Namespaces(None),
                            Err(TryRecvError::Empty) => break,
                        },
                    },
                };
                self.input(input, &mut w).await;
            }
            if self.synced.iter().all(|s| *s) {
                self.apply_trigger();
                self.promote_backoff();
                if let Some((_, key)) = self.active.pop_first() {
                    self.schedule_one(&key).await;
                    // Let the informers and the other components run between two pods.
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let next_backoff = self.backoff.keys().next().map(|(t, _)| *t);
            let input = tokio::select! {
                biased;
                c = w.nodes.recv() => Input::Nodes(c),
                c = w.pods.recv() => Input::Pods(c),
                c = w.namespaces.recv() => Input::Namespaces(c),
                _ = flush.tick() => Input::Flush,
                _ = tokio::time::sleep_until(next_backoff.unwrap_or_else(Instant::now)),
                    if next_backoff.is_some() => Input::Timer,
            };
            self.input(input, &mut w).await;
        }
    }

    async fn input(&mut self, input: Input, w: &mut Watches) {
        let res = self.cluster.res.clone();
        match input {
            Input::Pods(Some(c)) => self.on_pods(c),
            Input::Nodes(Some(c)) => self.on_nodes(c),
            Input::Namespaces(Some(c)) => self.on_namespaces(c),
            // An informer ended (its watch failed): start it again; its list re-syncs the cache.
            Input::Pods(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                w.pods = self.watch(&res.pods);
            }
            Input::Nodes(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                w.nodes = self.watch(&res.nodes);
            }
            Input::Namespaces(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                w.namespaces = self.watch(&res.namespaces);
            }
            Input::Flush => {
                let keys: Vec<String> = std::mem::take(&mut self.unschedulable)
                    .into_values()
                    .collect();
                for k in keys {
                    self.move_to(&k, Queue::Active);
                }
            }
            Input::Timer => {}
        }
    }

    // ----- queues -----

    fn dequeue(&mut self, key: &str) {
        let Some(p) = self.pending.get(key) else {
            return;
        };
        match p.queue {
            Queue::Active => {
                self.active.remove(&p.active_key());
            }
            Queue::Backoff(t) => {
                self.backoff.remove(&(t, p.seq));
            }
            Queue::Unschedulable => {
                self.unschedulable.remove(&p.seq);
            }
        }
    }

    fn move_to(&mut self, key: &str, q: Queue) {
        self.dequeue(key);
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        p.queue = q;
        match q {
            Queue::Active => {
                self.active.insert(p.active_key(), key.to_string());
            }
            Queue::Backoff(t) => {
                self.backoff.insert((t, p.seq), key.to_string());
            }
            Queue::Unschedulable => {
                self.unschedulable.insert(p.seq, key.to_string());
            }
        }
    }

    fn drop_pending(&mut self, key: &str) {
        self.dequeue(key);
        self.pending.remove(key);
    }

    /// Moves a pod out of the unschedulable queue: to backoff while its backoff lasts.
    fn requeue(&mut self, key: &str) {
        let Some(p) = self.pending.get(key) else {
            return;
        };
        let q = match p.last_attempt {
            Some(t) => {
                let exp = p.attempts.saturating_sub(1).min(20);
                let d = self
                    .config
                    .initial_backoff
                    .saturating_mul(1u32 << exp)
                    .min(self.config.max_backoff);
                let ready = t + d;
                if ready > Instant::now() {
                    Queue::Backoff(ready)
                } else {
                    Queue::Active
                }
            }
            None => Queue::Active,
        };
        self.move_to(key, q);
    }

    /// Requeues the unschedulable pods that the recorded cluster changes could help.
    fn apply_trigger(&mut self) {
        let t = std::mem::take(&mut self.trigger);
        if t == 0 || self.unschedulable.is_empty() {
            return;
        }
        let keys: Vec<String> = self
            .unschedulable
            .values()
            .filter(|k| self.pending.get(*k).is_some_and(|p| p.mask & t != 0))
            .cloned()
            .collect();
        for k in keys {
            self.requeue(&k);
        }
    }

    fn promote_backoff(&mut self) {
        let now = Instant::now();
        while let Some(((t, _), _)) = self.backoff.first_key_value() {
            if *t > now {
                break;
            }
            if let Some((_, key)) = self.backoff.pop_first()
                && let Some(p) = self.pending.get_mut(&key)
            {
                p.queue = Queue::Active;
                self.active.insert(p.active_key(), key);
            }
        }
    }

    // ----- informers -----

    fn on_pods(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[0] = true;
                let present: BTreeSet<String> = items
                    .iter()
                    .map(|o| {
                        let (ns, n) = ns_name(&o.value);
                        format!("{ns}/{n}")
                    })
                    .collect();
                let mut known: BTreeSet<String> = self.pending.keys().cloned().collect();
                known.extend(self.cache.counted_keys());
                known.extend(self.assumed.keys().cloned());
                for k in known.difference(&present) {
                    self.pod_gone(k, None);
                }
                self.seen.clear();
                for o in items {
                    self.pod_seen(o);
                }
            }
            Change::Event(e) => match e.kind {
                EventType::Deleted => {
                    let v = &e.object.value;
                    let (ns, name) = ns_name(v);
                    let key = format!("{ns}/{name}");
                    self.seen.remove(&key);
                    self.pod_gone(&key, Some(crate::controllers::workloads::uid_of(v)));
                }
                EventType::Added | EventType::Modified => self.pod_seen(e.object.clone()),
            },
        }
    }

    fn pod_gone(&mut self, key: &str, uid: Option<&str>) {
        let same = |u: &str| uid.is_none_or(|x| x == u);
        if self.pending.get(key).is_some_and(|p| same(&p.uid)) {
            self.drop_pending(key);
        }
        if self.assumed.get(key).is_some_and(|u| same(u)) {
            self.assumed.remove(key);
        }
        if self.cache.counted(key).is_some_and(|(i, _)| same(&i.uid)) {
            self.cache.remove_pod(key);
            self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
        }
    }

    /// The pod's key and `PodInfo`: the previous version's when nothing it is made of changed.
    fn pod_info(&mut self, obj: &Arc<StoredObject>) -> (String, Arc<PodInfo>) {
        let v = &obj.value;
        let (ns, name) = ns_name(v);
        let key = format!("{ns}/{name}");
        let basis = Basis::of(v);
        if let Some((old, info)) = self.seen.get_mut(&key)
            && *old == basis
        {
            // Keep this version's parts, not the older equal ones: the store may have let the
            // older ones go, and they would stay alive here only.
            *old = basis;
            let info = info.clone();
            return (key, info);
        }
        let info = Arc::new(PodInfo::from_json(v));
        self.seen.insert(key.clone(), (basis, info.clone()));
        (key, info)
    }

    fn pod_seen(&mut self, obj: Arc<StoredObject>) {
        let (key, info) = self.pod_info(&obj);
        // A pod with the same name but another uid replaced an old one.
        if self.pending.get(&key).is_some_and(|p| p.uid != info.uid) {
            self.drop_pending(&key);
        }
        if self.assumed.get(&key).is_some_and(|u| *u != info.uid) {
            self.assumed.remove(&key);
        }
        if self
            .cache
            .counted(&key)
            .is_some_and(|(i, _)| i.uid != info.uid)
        {
            self.cache.remove_pod(&key);
            self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
        }
        if !info.node_name.is_empty() {
            self.drop_pending(&key);
            if self.assumed.remove(&key).is_some() {
                // Our binding, confirmed: an assigned pod was added (AssignedPodAdd).
                self.trigger |= MASK_INTERPOD;
            }
            if info.terminal {
                if self.cache.remove_pod(&key).is_some() {
                    self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
                }
                return;
            }
            let change = self.cache.counted(&key).map(|(old, node)| {
                let same = node == info.node_name && **old == *info;
                let freed = node != info.node_name || old.requests != info.requests;
                (same, freed, old.labels != info.labels)
            });
            match change {
                Some((true, _, _)) => {
                    // The counted PodInfo stays: remember that one, not an equal copy.
                    if let Some((counted, _)) = self.cache.counted(&key)
                        && let Some(e) = self.seen.get_mut(&key)
                    {
                        e.1 = counted.clone();
                    }
                }
                Some((false, freed, relabeled)) => {
                    let node = info.node_name.clone();
                    self.cache.add_pod(info, &node);
                    if freed {
                        self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
                    }
                    if relabeled {
                        self.trigger |= MASK_INTERPOD;
                    }
                }
                None => {
                    let node = info.node_name.clone();
                    self.cache.add_pod(info, &node);
                    self.trigger |= MASK_INTERPOD;
                }
            }
            return;
        }
        if self.assumed.contains_key(&key) {
            return; // an older state than our binding
        }
        if self.cache.remove_pod(&key).is_some() {
            self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
        }
        if info.deleting
            || info.terminal
            || info.gated
            || info.scheduler_name != self.config.scheduler_name
        {
            self.drop_pending(&key);
            return;
        }
        match self.pending.get_mut(&key) {
            Some(p) => {
                let changed = *p.info != *info;
                p.obj = obj;
                if changed {
                    let prio_changed = p.info.priority != info.priority;
                    let q = p.queue;
                    if prio_changed && q == Queue::Active {
                        self.dequeue(&key);
                    }
                    if let Some(p) = self.pending.get_mut(&key) {
                        p.info = info;
                    }
                    if prio_changed && q == Queue::Active {
                        self.move_to(&key, Queue::Active);
                    }
                    if q == Queue::Unschedulable {
                        self.requeue(&key);
                    }
                }
            }
            None => {
                self.seq += 1;
                self.pending.insert(
                    key.clone(),
                    Pending {
                        uid: info.uid.clone(),
                        obj,
                        info,
                        seq: self.seq,
                        queue: Queue::Active,
                        attempts: 0,
                        last_attempt: None,
                        last_message: None,
                        mask: 0,
                    },
                );
                self.move_to(&key, Queue::Active);
            }
        }
    }

    fn on_nodes(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[1] = true;
                let present: BTreeSet<String> = items
                    .iter()
                    .map(|o| ns_name(&o.value).1.to_string())
                    .collect();
                let known: Vec<String> = self.cache.nodes.keys().cloned().collect();
                for n in known {
                    if !present.contains(&n) {
                        self.cache.remove_node(&n);
                    }
                }
                for o in items {
                    if self.cache.set_node(NodeInfo::from_json(&o.value)) {
                        self.trigger = MASK_ALL;
                    }
                }
            }
            Change::Event(e) => match e.kind {
                EventType::Deleted => self.cache.remove_node(ns_name(&e.object.value).1),
                EventType::Added | EventType::Modified => {
                    if self.cache.set_node(NodeInfo::from_json(&e.object.value)) {
                        self.trigger = MASK_ALL;
                    }
                }
            },
        }
    }

    fn on_namespaces(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[2] = true;
                for o in &items {
                    self.namespace_seen(&o.value);
                }
            }
            Change::Event(e) => match e.kind {
                EventType::Deleted => self.cache.remove_namespace(ns_name(&e.object.value).1),
                EventType::Added | EventType::Modified => self.namespace_seen(&e.object.value),
            },
        }
    }

    fn namespace_seen(&mut self, v: &Tree) {
        let name = ns_name(v).1;
        if self
            .cache
            .set_namespace(name, string_map(at(v, &["metadata", "labels"])))
        {
            self.trigger |= MASK_INTERPOD;
        }
    }

    // ----- scheduling -----

    async fn schedule_one(&mut self, key: &str) {
        let now = Instant::now();
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        p.attempts += 1;
        p.last_attempt = Some(now);
        let info = p.info.clone();
        match self.cache.schedule(&info) {
            Ok(node) => {
                self.dequeue(key);
                let Some(p) = self.pending.remove(key) else {
                    return;
                };
                self.cache.add_pod(info.clone(), &node);
                self.assumed.insert(key.to_string(), info.uid.clone());
                self.bind(key, p, &node).await;
            }
            Err(fit) => {
                let msg = fit.message();
                tracing::debug!(pod = key, %msg, "unschedulable");
                if let Some(p) = self.pending.get_mut(key) {
                    p.mask = if fit.mask == 0 { MASK_ALL } else { fit.mask };
                }
                self.move_to(key, Queue::Unschedulable);
                self.report_unschedulable(key, &msg).await;
            }
        }
    }

    async fn bind(&mut self, key: &str, p: Pending, node: &str) {
        let info = &p.info;
        match self.cluster.bind(&info.namespace, &info.name, node).await {
            Ok(()) => {
                tracing::debug!(pod = key, node, "bound");
                if self.config.record_scheduled_events {
                    let msg = format!(
                        "Successfully assigned {}/{} to {node}",
                        info.namespace, info.name
                    );
                    let component = self.config.scheduler_name.clone();
                    self.cluster
                        .event(&p.obj.value, "Normal", "Scheduled", &msg, &component)
                        .await;
                }
            }
            Err(e) => {
                tracing::debug!(pod = key, node, error = %e, "binding failed");
                // Forget the assumption; the informer reports what really happened.
                if self.assumed.get(key) == Some(&info.uid) {
                    self.assumed.remove(key);
                    if self
                        .cache
                        .counted(key)
                        .is_some_and(|(i, _)| i.uid == info.uid)
                    {
                        self.cache.remove_pod(key);
                        self.trigger |= MASK_RESOURCES | MASK_INTERPOD;
                    }
                }
                // 409: bound by someone else or being deleted; 404: gone. Otherwise retry later.
                if e.code != 409 && e.code != 404 {
                    let key = key.to_string();
                    self.pending.insert(key.clone(), p);
                    self.move_to(&key, Queue::Unschedulable);
                    self.requeue(&key);
                }
            }
        }
    }

    /// Sets `PodScheduled=False/Unschedulable` and records a `FailedScheduling` event, once per
    /// distinct message.
    async fn report_unschedulable(&mut self, key: &str, msg: &str) {
        let Some(p) = self.pending.get(key) else {
            return;
        };
        if p.last_message.as_deref() == Some(msg) {
            return;
        }
        let cur = p
            .obj
            .value
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.field("type").and_then(Tree::as_str) == Some("PodScheduled"))
            });
        let already = cur.is_some_and(|c| {
            field_str(c, "status") == "False"
                && field_str(c, "reason") == "Unschedulable"
                && field_str(c, "message") == msg
        });
        let (ns, name, obj) = (p.info.namespace.clone(), p.info.name.clone(), p.obj.clone());
        if !already {
            let since = cur
                .filter(|c| field_str(*c, "status") == "False")
                .and_then(|c| c.field("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .map(Tree::to_value)
                .unwrap_or_else(|| json!(self.cluster.server.clock.timestamp()));
            let patch = PatchBody {
                kind: PatchKind::Strategic,
                doc: json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                    "lastTransitionTime": since, "reason": "Unschedulable", "message": msg,
                }]}}),
            };
            let res = rest::patch_object(
                &self.cluster.server,
                &self.cluster.res.pods,
                Some(&ns),
                &name,
                Some("status"),
                &patch,
                &WriteOptions::default(),
            )
            .await;
            match res {
                Ok(_) => {}
                Err(e) if e.code == 404 => {
                    self.drop_pending(key);
                    return;
                }
                Err(e) => {
                    tracing::debug!(pod = key, error = %e, "status update failed");
                    return; // tried again at the next attempt
                }
            }
            let component = self.config.scheduler_name.clone();
            self.cluster
                .event(&obj.value, "Warning", "FailedScheduling", msg, &component)
                .await;
        }
        if let Some(p) = self.pending.get_mut(key) {
            p.last_message = Some(msg.to_string());
        }
    }
}

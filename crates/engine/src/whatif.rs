//! `theseus simulate`: the what-if on a captured cluster. The snapshot becomes a simulator
//! scenario (one machine per node with its name, IP, OS, kubelet, roles, zone, labels, taints and
//! allocatable resources; the workloads, bare pods, PodDisruptionBudgets and Services as
//! Kubernetes objects; a traffic probe per Service that selects pods), and the real engine
//! migrates that simulated cluster on virtual time. The report says how long it took against the
//! plan's estimate, which drains were blocked by which PDB, and what each Service's clients saw.
//!
//! The spec's provider is replaced by the simulator's machines: a reimage takes
//! [`WhatIfTiming::reimage_seconds`] (the spec's `provider.expectedActionDuration` when given,
//! else 900 s) and a boot [`WhatIfTiming::boot_seconds`]. What the snapshot does not record, or
//! the simulator does not model, is listed in [`WhatIfReport::warnings`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use theseus_journal::Journal;
use theseus_model::snapshot::{
    Affinity, Inventory, KubeadmConfig, Node, Pod, PodDisruptionBudget, Service, Workload,
    WorkloadKind,
};
use theseus_model::spec::{Provider, ProviderType};
use theseus_model::{ClusterSnapshot, Migration};
use theseus_sim::scenario::{NodePool, Scenario, ScenarioMeta, ServiceProbe, Timing};
use theseus_sim::sim::{SimError, Simulation};
use thiserror::Error;

use crate::error::EngineError;
use crate::events::{Event, EventSink, Stamped};
use crate::report::Report;
use crate::run::{Engine, EngineOptions};
use crate::twin;

/// Default seconds a machine takes to be reimaged (runbook 000: about 15 minutes).
pub const DEFAULT_REIMAGE_SECONDS: f64 = 900.0;

/// Durations and rates of the simulated cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIfTiming {
    /// Seconds a reimage takes. None: the spec's `provider.expectedActionDuration` less the
    /// boot, else 900.
    pub reimage_seconds: Option<f64>,
    /// Seconds from power-on to a Ready node (default 90).
    pub boot_seconds: f64,
    /// Start-up of a pod whose start-up the snapshot did not observe (default 5).
    pub pod_startup_seconds: f64,
    /// Observed start-ups longer than this are cut to it (a Ready transition long after the
    /// start is a pod that recovered, not a slow start). Default 600.
    pub max_pod_startup_seconds: f64,
    /// Seconds a terminating pod's containers take to exit (default 2).
    pub pod_exit_seconds: f64,
    /// Delay of endpoint changes reaching the clients' kube-proxy (default 1).
    pub endpoint_propagation_seconds: f64,
    /// Uniform jitter on boots and reimages (default 0: every node the same).
    pub jitter_seconds: f64,
    /// Requests per second of each Service's synthetic clients (default 5).
    pub probe_rate_per_second: f64,
    /// How long the simulated cluster may take to settle before the migration (default 7200).
    pub settle_timeout_seconds: u64,
    /// Seed of the simulator's random choices.
    pub seed: u64,
}

impl Default for WhatIfTiming {
    fn default() -> Self {
        WhatIfTiming {
            reimage_seconds: None,
            boot_seconds: 90.0,
            pod_startup_seconds: 5.0,
            max_pod_startup_seconds: 600.0,
            pod_exit_seconds: 2.0,
            endpoint_propagation_seconds: 1.0,
            jitter_seconds: 0.0,
            probe_rate_per_second: 5.0,
            settle_timeout_seconds: 7200,
            seed: 1,
        }
    }
}

impl WhatIfTiming {
    /// The reimage time settled: given, else from the spec's `provider.expectedActionDuration`,
    /// else [`DEFAULT_REIMAGE_SECONDS`]. The spec's duration is the whole node action as the
    /// planner's estimate counts it (the machine reinstalled and booted), so the reimage is that
    /// less [`WhatIfTiming::boot_seconds`].
    pub fn resolved(&self, migration: &Migration) -> WhatIfTiming {
        let from_spec = migration
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.expected_action_duration)
            .map(|d| (d.seconds() as f64 - self.boot_seconds).max(0.0));
        WhatIfTiming {
            reimage_seconds: Some(
                self.reimage_seconds
                    .or(from_spec)
                    .unwrap_or(DEFAULT_REIMAGE_SECONDS),
            ),
            ..self.clone()
        }
    }

    fn reimage(&self) -> f64 {
        self.reimage_seconds.unwrap_or(DEFAULT_REIMAGE_SECONDS)
    }
}

/// Why a what-if could not run.
#[derive(Debug, Error)]
pub enum WhatIfError {
    /// The snapshot cannot be made into a simulated cluster.
    #[error("the snapshot cannot be simulated: {0}")]
    Scenario(String),
    /// The simulator refused the cluster (an object it cannot create).
    #[error("{0}")]
    Sim(#[from] SimError),
    /// Planning, preflight or the run itself.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The run's scratch journal.
    #[error("the what-if's scratch journal in {path}: {message}")]
    Scratch { path: String, message: String },
}

/// A snapshot made into a simulator scenario.
#[derive(Clone, Debug)]
pub struct WhatIfScenario {
    pub scenario: Scenario,
    /// What the scenario leaves out or approximates.
    pub warnings: Vec<String>,
    /// Probed Services (`namespace/name`) and the workloads whose pods they select.
    pub services: BTreeMap<String, Vec<String>>,
}

/// A drain an eviction refusal held up (from the engine's `Blocked` events).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedDrain {
    pub node: String,
    pub wave: u32,
    /// `namespace/name` of the pod whose eviction was refused.
    pub pod: String,
    /// The PodDisruptionBudgets that refused it.
    pub pdbs: Vec<String>,
    pub reason: String,
    /// Seconds into the run when it was first refused.
    pub at_seconds: f64,
}

/// What one Service's synthetic clients saw during the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Downtime {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The workloads whose pods it selects (`Kind namespace/name`).
    pub workloads: Vec<String>,
    pub requests: u64,
    pub failures: u64,
    pub longest_gap_seconds: f64,
}

/// The what-if's answer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIfReport {
    /// The engine's report of the simulated run.
    pub report: Report,
    /// The plan's estimate and lower bound (planned on the simulated cluster).
    pub plan_estimated_seconds: u64,
    pub plan_lower_bound_seconds: u64,
    pub waves: usize,
    /// How long the run took on the simulator's virtual clock.
    pub simulated_seconds: f64,
    pub blocked_drains: Vec<BlockedDrain>,
    /// Per probed Service, worst first.
    pub downtime: Vec<Downtime>,
    /// What carried out the node actions instead of the spec's provider.
    pub provider: String,
    pub timing: WhatIfTiming,
    /// What the what-if ignored or approximated.
    pub warnings: Vec<String>,
}

impl WhatIfReport {
    /// Completed, no failed probe request, no PDB violation, no pod lost.
    pub fn clean(&self) -> bool {
        self.report.clean()
    }

    /// Why the run is not clean (empty when it is).
    pub fn problems(&self) -> Vec<String> {
        let r = &self.report;
        let mut out = Vec::new();
        if r.state != "completed" {
            out.push(match &r.reason {
                Some(why) => format!("the run {}: {why}", r.state),
                None => format!("the run ended {}", r.state),
            });
        }
        if r.probe_failures > 0 {
            let hit: Vec<String> = self
                .downtime
                .iter()
                .filter(|d| d.failures > 0)
                .map(|d| format!("{} ({} failed)", d.service, d.failures))
                .collect();
            out.push(format!(
                "{} probe requests failed: {}",
                r.probe_failures,
                hit.join(", ")
            ));
        }
        if let Some(n) = r.pdb_violations.filter(|n| *n > 0) {
            out.push(format!("{n} PodDisruptionBudget violations"));
        }
        if let Some(n) = r.lost_pods.filter(|n| *n > 0) {
            out.push(format!(
                "{n} workloads were below their replicas for too long"
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The snapshot as a scenario

/// Labels controllers put on their pods; not part of a template.
const GENERATED_LABELS: [&str; 7] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "job-name",
];

/// Namespaces the simulator has from the start.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

const KUBEAN_NAMESPACE: &str = "kubean-system";

fn kind_key(kind: &WorkloadKind) -> String {
    kind.as_str().to_string()
}

fn ipv4_of(n: &Node) -> Option<String> {
    n.addresses
        .iter()
        .filter(|a| a.kind == "InternalIP")
        .chain(n.addresses.iter().filter(|a| a.kind != "InternalIP"))
        .map(|a| a.address.as_str())
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
}

fn names_of(list: &[String], max: usize) -> String {
    let mut s = list
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > max {
        s.push_str(&format!(" and {} more", list.len() - max));
    }
    s
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn affinity_json(a: &Affinity) -> Value {
    let mut out = Map::new();
    if let Some(n) = &a.node_affinity {
        out.insert(
            "nodeAffinity".into(),
            json!({"requiredDuringSchedulingIgnoredDuringExecution": to_json(n)}),
        );
    }
    if !a.pod_affinity.is_empty() {
        out.insert(
            "podAffinity".into(),
            json!({"requiredDuringSchedulingIgnoredDuringExecution": to_json(&a.pod_affinity)}),
        );
    }
    if !a.pod_anti_affinity.is_empty() {
        out.insert(
            "podAntiAffinity".into(),
            json!({"requiredDuringSchedulingIgnoredDuringExecution": to_json(&a.pod_anti_affinity)}),
        );
    }
    Value::Object(out)
}

/// A DaemonSet pod's affinity without the term its controller adds to pin it to its node
/// (`matchFields` on `metadata.name`).
fn without_node_pin(a: &Affinity) -> Affinity {
    let mut a = a.clone();
    if let Some(n) = &mut a.node_affinity {
        for t in &mut n.node_selector_terms {
            t.match_fields.retain(|f| f.key != "metadata.name");
        }
        n.node_selector_terms
            .retain(|t| !(t.match_expressions.is_empty() && t.match_fields.is_empty()));
        if n.node_selector_terms.is_empty() {
            a.node_affinity = None;
        }
    }
    a
}

/// The pod spec of `pod` as far as the snapshot records it: requests (one container), tolerations,
/// nodeSelector, required affinity, priority class, grace period, emptyDir volumes.
fn pod_spec(pod: Option<&Pod>, daemon: bool) -> Value {
    let mut requests = Map::new();
    let mut container = json!({"name": "main", "image": "registry.k8s.io/pause:3.10"});
    let mut spec = Map::new();
    if let Some(p) = pod {
        if p.requests.cpu_millis > 0 {
            requests.insert("cpu".into(), json!(format!("{}m", p.requests.cpu_millis)));
        }
        if p.requests.memory_bytes > 0 {
            requests.insert("memory".into(), json!(p.requests.memory_bytes.to_string()));
        }
        if !p.empty_dir.is_empty() {
            container["volumeMounts"] = Value::Array(
                p.empty_dir
                    .iter()
                    .map(|v| json!({"name": v, "mountPath": format!("/{v}")}))
                    .collect(),
            );
            spec.insert(
                "volumes".into(),
                Value::Array(
                    p.empty_dir
                        .iter()
                        .map(|v| json!({"name": v, "emptyDir": {}}))
                        .collect(),
                ),
            );
        }
        if !p.tolerations.is_empty() {
            spec.insert("tolerations".into(), to_json(&p.tolerations));
        }
        if !p.node_selector.is_empty() {
            spec.insert("nodeSelector".into(), to_json(&p.node_selector));
        }
        let affinity = p.affinity.as_ref().map(|a| {
            if daemon {
                without_node_pin(a)
            } else {
                a.clone()
            }
        });
        if let Some(a) = affinity.filter(|a| !a.is_empty()) {
            spec.insert("affinity".into(), affinity_json(&a));
        }
        if let Some(c) = &p.priority_class_name {
            spec.insert("priorityClassName".into(), json!(c));
        }
        if let Some(g) = p.termination_grace_period_seconds {
            spec.insert("terminationGracePeriodSeconds".into(), json!(g));
        }
    }
    container["resources"] = json!({"requests": requests});
    spec.insert("containers".into(), json!([container]));
    Value::Object(spec)
}

/// Pod labels without the ones controllers generate.
fn template_labels(pod: Option<&Pod>) -> BTreeMap<String, String> {
    pod.map(|p| {
        p.labels
            .iter()
            .filter(|(k, _)| !GENERATED_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// The pod that stands for its workload: Running and Ready first, then by name.
fn representative<'a>(pods: &[&'a Pod]) -> Option<&'a Pod> {
    pods.iter()
        .copied()
        .min_by_key(|p| (!p.ready || p.phase.is_terminal(), p.name.clone()))
}

/// The median of the observed start-ups of `pods`, if any was observed.
fn observed_startup(pods: &[&Pod]) -> Option<u32> {
    let mut v: Vec<u32> = pods
        .iter()
        .filter_map(|p| p.startup_seconds)
        .filter(|s| *s > 0)
        .collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

struct Builder<'a> {
    snap: &'a ClusterSnapshot,
    timing: &'a WhatIfTiming,
    warnings: Vec<String>,
    manifests: Vec<Value>,
    /// Names taken per (namespace, kind) in the simulated cluster.
    taken: BTreeSet<(String, String, String)>,
    /// (namespace, kind, name) of the snapshot's controller → the workload as simulated.
    simulated: BTreeMap<(String, String, String), String>,
    capped_startups: Vec<String>,
}

impl Builder<'_> {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// A free name for a `kind` object in `ns`.
    fn name_for(&mut self, ns: &str, kind: &str, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut i = 2;
        while !self
            .taken
            .insert((ns.to_string(), kind.to_string(), candidate.clone()))
        {
            candidate = format!("{name}-{i}");
            i += 1;
        }
        candidate
    }

    fn template(
        &mut self,
        key: &str,
        pods: &[&Pod],
        extra_labels: &BTreeMap<String, String>,
        daemon: bool,
    ) -> Value {
        let rep = representative(pods);
        let mut labels = template_labels(rep);
        for (k, v) in extra_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut annotations = Map::new();
        if let Some(s) = observed_startup(pods) {
            let mut s = f64::from(s);
            if s > self.timing.max_pod_startup_seconds {
                self.capped_startups.push(format!("{key} ({s} s)"));
                s = self.timing.max_pod_startup_seconds;
            }
            annotations.insert(
                theseus_sim::kubelet::STARTUP_ANNOTATION.into(),
                json!(s.to_string()),
            );
        }
        json!({"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec(rep, daemon)})
    }

    fn workload(&mut self, w: &Workload, pods: &[&Pod]) {
        let key = w.key();
        let (kind, api) = match &w.kind {
            WorkloadKind::Deployment => ("Deployment", "apps/v1"),
            WorkloadKind::StatefulSet => ("StatefulSet", "apps/v1"),
            WorkloadKind::DaemonSet => ("DaemonSet", "apps/v1"),
            WorkloadKind::ReplicaSet => ("ReplicaSet", "apps/v1"),
            WorkloadKind::Job | WorkloadKind::CronJob => return,
            WorkloadKind::ReplicationController | WorkloadKind::Other(_) => {
                self.warn(format!(
                    "{key} is simulated as a Deployment (its controller is not modelled)"
                ));
                ("Deployment", "apps/v1")
            }
        };
        let rep = representative(pods);
        if rep.is_none() && w.replicas > 0 && w.kind != WorkloadKind::DaemonSet {
            self.warn(format!(
                "{key}: no pod of it in the snapshot; its pods are simulated without requests, tolerations or affinity"
            ));
        }
        let selector = match &w.selector {
            Some(s) if !(s.match_labels.is_empty() && s.match_expressions.is_empty()) => s.clone(),
            _ => theseus_model::selector::LabelSelector {
                match_labels: if template_labels(rep).is_empty() {
                    BTreeMap::from([("app".to_string(), w.name.clone())])
                } else {
                    template_labels(rep)
                },
                match_expressions: Vec::new(),
            },
        };
        let template = self.template(&key, pods, &selector.match_labels, kind == "DaemonSet");
        let name = self.name_for(&w.namespace, kind, &w.name);
        if name != w.name {
            self.warn(format!(
                "{key} is simulated as {kind} {}/{name} (the name is taken)",
                w.namespace
            ));
        }
        let mut spec = json!({"selector": to_json(&selector), "template": template});
        if kind != "DaemonSet" {
            spec["replicas"] = json!(w.replicas.max(0));
        }
        if let Some(m) = w.min_ready_seconds.filter(|m| *m > 0) {
            spec["minReadySeconds"] = json!(m);
        }
        if kind == "StatefulSet" {
            spec["serviceName"] = json!(w.name);
        }
        if kind == "Deployment"
            && let Some(s) = &w.strategy
            && (s.kind == "RollingUpdate" || s.kind == "Recreate")
        {
            let mut st = json!({"type": s.kind});
            if s.kind == "RollingUpdate" {
                let mut ru = Map::new();
                if let Some(v) = s.max_surge {
                    ru.insert("maxSurge".into(), to_json(&v));
                }
                if let Some(v) = s.max_unavailable {
                    ru.insert("maxUnavailable".into(), to_json(&v));
                }
                st["rollingUpdate"] = Value::Object(ru);
            }
            spec["strategy"] = st;
        }
        self.manifests.push(json!({
            "apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": w.namespace},
            "spec": spec,
        }));
        self.simulated.insert(
            (w.namespace.clone(), kind_key(&w.kind), w.name.clone()),
            format!("{kind} {}/{name}", w.namespace),
        );
    }

    fn bare_pod(&mut self, p: &Pod) {
        let name = self.name_for(&p.namespace, "Pod", &p.name);
        let mut spec = pod_spec(Some(p), false);
        if let Some(n) = &p.node_name {
            spec["nodeName"] = json!(n);
        }
        let mut annotations = Map::new();
        if let Some(s) = p.startup_seconds.filter(|s| *s > 0) {
            let s = f64::from(s).min(self.timing.max_pod_startup_seconds);
            annotations.insert(
                theseus_sim::kubelet::STARTUP_ANNOTATION.into(),
                json!(s.to_string()),
            );
        }
        self.manifests.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": p.namespace, "labels": p.labels, "annotations": annotations},
            "spec": spec,
        }));
    }

    fn pdb(&mut self, b: &PodDisruptionBudget) {
        let mut spec = json!({"selector": to_json(&b.selector)});
        if let Some(v) = b.min_available {
            spec["minAvailable"] = to_json(&v);
        }
        if let Some(v) = b.max_unavailable {
            spec["maxUnavailable"] = to_json(&v);
        }
        if let Some(p) = &b.unhealthy_pod_eviction_policy {
            spec["unhealthyPodEvictionPolicy"] = json!(p);
        }
        self.manifests.push(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": b.name, "namespace": b.namespace},
            "spec": spec,
        }));
    }

    fn service(&mut self, s: &Service) {
        let ports: Vec<Value> = if s.ports.is_empty() {
            vec![json!({"port": 80, "targetPort": 80, "protocol": "TCP"})]
        } else {
            s.ports
                .iter()
                .map(|p| {
                    json!({"port": p.port, "targetPort": p.port,
                           "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())})
                })
                .collect()
        };
        let mut spec = json!({"selector": s.selector, "ports": ports});
        if s.cluster_ip.as_deref() == Some("None") {
            spec["clusterIP"] = json!("None");
        }
        self.manifests.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": spec,
        }));
    }

    /// kubeadm-config, cluster-info and the Kubean inventory, so that the capture of the
    /// simulated cluster finds the same primary control-plane node and endpoints.
    fn control_plane_sources(&mut self) {
        let cp = &self.snap.control_plane;
        if let Some(k) = &cp.kubeadm {
            self.manifests.push(kubeadm_config(k));
        }
        if let Some(server) = &cp.cluster_info_server {
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {}\n  name: \"\"\n",
                yaml_str(server)
            );
            self.manifests.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                "data": {"kubeconfig": kubeconfig},
            }));
        }
        if let Some(inv) = &cp.inventory {
            let cluster = self
                .snap
                .metadata
                .cluster_name
                .clone()
                .or_else(|| cp.kubeadm.as_ref().and_then(|k| k.cluster_name.clone()))
                .unwrap_or_else(|| "cluster".into());
            let name = inv
                .config_map
                .as_deref()
                .and_then(|c| c.split_once('/'))
                .filter(|(ns, n)| *ns == KUBEAN_NAMESPACE && n.ends_with("-hosts-conf"))
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| format!("{cluster}-hosts-conf"));
            self.manifests.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": KUBEAN_NAMESPACE},
                "data": {"hosts.yml": inventory_yaml(inv)},
            }));
        }
        if cp.primary.is_some()
            && cp.inventory.is_none()
            && cp
                .kubeadm
                .as_ref()
                .and_then(|k| k.control_plane_endpoint.as_ref())
                .is_none()
            && cp.cluster_info_server.is_none()
        {
            self.warn(format!(
                "the primary control-plane node {} was given in the snapshot, not found from the cluster: the simulated cluster's primary is found afresh",
                cp.primary.clone().unwrap_or_default()
            ));
        }
    }
}

/// A YAML scalar: JSON's quoting is valid YAML.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn kubeadm_config(k: &KubeadmConfig) -> Value {
    let mut text = String::from("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n");
    if let Some(v) = &k.kubernetes_version {
        text.push_str(&format!(
            "kubernetesVersion: {}\n",
            yaml_str(&v.to_string())
        ));
    }
    if let Some(e) = &k.control_plane_endpoint {
        text.push_str(&format!("controlPlaneEndpoint: {}\n", yaml_str(e)));
    }
    if let Some(c) = &k.cluster_name {
        text.push_str(&format!("clusterName: {}\n", yaml_str(c)));
    }
    if !k.external_etcd_endpoints.is_empty() {
        text.push_str("etcd:\n  external:\n    endpoints:\n");
        for e in &k.external_etcd_endpoints {
            text.push_str(&format!("    - {}\n", yaml_str(e)));
        }
    }
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": text},
    })
}

/// The inventory as `hosts.yml`, groups in their order (the first `kube_control_plane` host is
/// the primary).
fn inventory_yaml(inv: &Inventory) -> String {
    let mut t = String::from("all:\n  hosts:\n");
    for h in &inv.hosts {
        let mut fields = Vec::new();
        for (k, v) in [
            ("ip", &h.ip),
            ("access_ip", &h.access_ip),
            ("ansible_host", &h.ansible_host),
        ] {
            if let Some(v) = v {
                fields.push(format!("{k}: {}", yaml_str(v)));
            }
        }
        t.push_str(&format!(
            "    {}: {{{}}}\n",
            yaml_str(&h.name),
            fields.join(", ")
        ));
    }
    t.push_str("  children:\n");
    for (group, hosts) in [
        ("kube_control_plane", &inv.kube_control_plane),
        ("kube_node", &inv.kube_node),
        ("etcd", &inv.etcd),
    ] {
        t.push_str(&format!("    {group}:\n      hosts:\n"));
        if hosts.is_empty() {
            t.pop();
            t.push_str(" {}\n");
        }
        for h in hosts {
            t.push_str(&format!("        {}: null\n", yaml_str(h)));
        }
    }
    t
}

impl<'a> Builder<'a> {
    /// One pool of one machine per node, so that names and IPs are the snapshot's.
    fn node_pools(&mut self) -> Vec<NodePool> {
        let snap = self.snap;
        let mut pools = Vec::new();
        let mut no_ip = Vec::new();
        let mut cordoned = Vec::new();
        let mut not_ready = Vec::new();
        let mut no_resources = Vec::new();
        for (i, n) in snap.nodes.iter().enumerate() {
            let ip = ipv4_of(n).unwrap_or_else(|| {
                no_ip.push(n.name.clone());
                format!("10.255.{}.{}", (i / 250) % 256, i % 250 + 1)
            });
            if n.unschedulable {
                cordoned.push(n.name.clone());
            }
            if !n.is_ready() {
                not_ready.push(n.name.clone());
            }
            let a = &n.allocatable;
            let (cpu, memory) = if a.cpu_millis > 0 && a.memory_bytes > 0 {
                (format!("{}m", a.cpu_millis), a.memory_bytes.to_string())
            } else {
                no_resources.push(n.name.clone());
                ("8".into(), "32Gi".into())
            };
            let labels = n
                .labels
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with(theseus_model::snapshot::LABEL_ROLE_PREFIX)
                        && k.as_str() != theseus_model::snapshot::LABEL_ZONE
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let taints = n
                .taints
                .iter()
                .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
                .map(to_json)
                .collect();
            let or = |s: &str, d: &str| {
                if s.is_empty() {
                    d.to_string()
                } else {
                    s.to_string()
                }
            };
            pools.push(NodePool {
                name: n.name.clone(),
                count: 1,
                name_pattern: n.name.clone(),
                first_index: 1,
                roles: n.roles.clone(),
                ip_start: ip,
                os_image: or(&n.os_image, "Ubuntu 22.04.4 LTS"),
                kernel_version: or(&n.kernel_version, "5.15.0-105-generic"),
                kubelet_version: n.kubelet_version.as_ref().map(ToString::to_string),
                container_runtime: or(&n.container_runtime_version, "containerd://1.7.27"),
                architecture: or(&n.architecture, "amd64"),
                zones: n.zone.iter().cloned().collect(),
                cpu,
                memory,
                pods: u32::try_from(n.allocatable.pods.max(1)).unwrap_or(110),
                labels,
                taints,
            });
        }
        if !no_ip.is_empty() {
            self.warn(format!(
                "nodes without an IPv4 address got a made-up one: {}",
                names_of(&no_ip, 5)
            ));
        }
        if !cordoned.is_empty() {
            self.warn(format!(
                "cordoned nodes start uncordoned in the simulator: {}",
                names_of(&cordoned, 5)
            ));
        }
        if !not_ready.is_empty() {
            self.warn(format!(
                "nodes that are not Ready start Ready in the simulator: {}",
                names_of(&not_ready, 5)
            ));
        }
        if !no_resources.is_empty() {
            self.warn(format!(
                "nodes without allocatable CPU or memory in the snapshot got 8 CPUs and 32 GiB: {}",
                names_of(&no_resources, 5)
            ));
        }
        pools
    }

    /// The namespaces of every object, with their labels.
    fn namespaces(&mut self) {
        let snap = self.snap;
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = snap
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), n.labels.clone()))
            .collect();
        for ns in snap
            .pods
            .iter()
            .map(|p| &p.namespace)
            .chain(snap.workloads.iter().map(|w| &w.namespace))
            .chain(snap.services.iter().map(|s| &s.namespace))
            .chain(snap.pod_disruption_budgets.iter().map(|p| &p.namespace))
        {
            namespaces.entry(ns.clone()).or_default();
        }
        for (ns, labels) in &namespaces {
            if BUILTIN_NAMESPACES.contains(&ns.as_str()) || ns == KUBEAN_NAMESPACE {
                continue;
            }
            let labels: BTreeMap<&String, &String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "kubernetes.io/metadata.name")
                .collect();
            self.manifests
                .push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": labels}}));
        }
        if snap.control_plane.inventory.is_some() || namespaces.contains_key(KUBEAN_NAMESPACE) {
            self.manifests
                .push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": KUBEAN_NAMESPACE}}));
        }
    }

    /// Workloads from their controllers and pods, bare pods; returns the pods that are not
    /// finished.
    fn workloads_and_pods(&mut self) -> Vec<&'a Pod> {
        let snap = self.snap;
        let timing = self.timing;
        // Pods by their controller.
        let live: Vec<&Pod> = snap
            .pods
            .iter()
            .filter(|p| !p.phase.is_terminal())
            .collect();
        let finished = snap.pods.len() - live.len();
        if finished > 0 {
            self.warn(format!(
                "{finished} finished pods (Succeeded or Failed) are left out"
            ));
        }
        let mut by_controller: BTreeMap<(String, String, String), Vec<&Pod>> = BTreeMap::new();
        let mut bare = Vec::new();
        let mut static_off_cp = Vec::new();
        for p in &live {
            if p.mirror {
                let on_cp = p
                    .node_name
                    .as_deref()
                    .and_then(|n| snap.node(n))
                    .is_some_and(Node::is_control_plane);
                if !on_cp {
                    static_off_cp.push(p.key());
                }
                continue;
            }
            match &p.controller {
                Some(c) => by_controller
                    .entry((p.namespace.clone(), kind_key(&c.kind), c.name.clone()))
                    .or_default()
                    .push(p),
                None => bare.push(*p),
            }
        }
        if !static_off_cp.is_empty() {
            self.warn(format!(
                "static pods are simulated only for the control-plane components; left out: {}",
                names_of(&static_off_cp, 5)
            ));
        }

        // Workloads.
        let mut jobs = Vec::new();
        let mut seen = BTreeSet::new();
        for w in &snap.workloads {
            let k = (w.namespace.clone(), kind_key(&w.kind), w.name.clone());
            seen.insert(k.clone());
            let pods = by_controller.get(&k).cloned().unwrap_or_default();
            if matches!(w.kind, WorkloadKind::Job | WorkloadKind::CronJob) {
                jobs.push(format!("{} ({} pods)", w.key(), pods.len()));
                continue;
            }
            self.workload(w, &pods);
        }
        // Controllers the pods name that the snapshot does not list.
        for (k, pods) in &by_controller {
            if seen.contains(k) {
                continue;
            }
            let kind = WorkloadKind::from(k.1.clone());
            if matches!(kind, WorkloadKind::Job | WorkloadKind::CronJob) {
                jobs.push(format!("{} {}/{} ({} pods)", k.1, k.0, k.2, pods.len()));
                continue;
            }
            self.warn(format!(
                "{} {}/{} owns pods but is not in the snapshot's workloads: simulated with {} replicas",
                k.1,
                k.0,
                k.2,
                pods.len()
            ));
            let w = Workload {
                kind,
                namespace: k.0.clone(),
                name: k.2.clone(),
                replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
                ready_replicas: 0,
                available_replicas: None,
                strategy: None,
                selector: None,
                min_ready_seconds: None,
            };
            self.workload(&w, pods);
        }
        if !jobs.is_empty() {
            self.warn(format!(
                "Jobs and CronJobs are not simulated (their pods run to completion): {}",
                names_of(&jobs, 5)
            ));
        }
        for p in &bare {
            self.bare_pod(p);
        }
        if !self.capped_startups.is_empty() {
            let capped = std::mem::take(&mut self.capped_startups);
            self.warn(format!(
                "observed start-ups longer than {} s were cut to it (a late Ready transition is more likely a recovery than a start): {}",
                timing.max_pod_startup_seconds,
                names_of(&capped, 5)
            ));
        }
        let not_ready_pods = live
            .iter()
            .filter(|p| {
                !p.mirror && (!p.ready || p.phase != theseus_model::snapshot::PodPhase::Running)
            })
            .count();
        if not_ready_pods > 0 {
            self.warn(format!(
                "{not_ready_pods} pods that are not Running and Ready in the snapshot start healthy in the simulator (so PDBs start with their full budget)"
            ));
        }
        live
    }

    /// PDBs and Services; returns the probed Services with their workloads, and the probes.
    fn pdbs_and_services(
        &mut self,
        live: &[&'a Pod],
    ) -> (BTreeMap<String, Vec<String>>, Vec<ServiceProbe>) {
        let snap = self.snap;
        let timing = self.timing;
        for p in &snap.pod_disruption_budgets {
            self.pdb(p);
        }
        let mut services = BTreeMap::new();
        let mut probes = Vec::new();
        let mut unprobed = Vec::new();
        for s in &snap.services {
            if s.selector.is_empty() {
                if !(s.namespace == "default" && s.name == "kubernetes") {
                    unprobed.push(format!("{}/{} (no selector)", s.namespace, s.name));
                }
                continue;
            }
            self.service(s);
            let selects = |p: &&Pod| {
                p.namespace == s.namespace
                    && !p.mirror
                    && s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            };
            let selected: Vec<&Pod> = live.iter().copied().filter(selects).collect();
            if selected.is_empty() {
                unprobed.push(format!("{}/{} (selects no pod)", s.namespace, s.name));
                continue;
            }
            let mut workloads: BTreeSet<String> = BTreeSet::new();
            for p in &selected {
                match &p.controller {
                    Some(c) => {
                        let k = (p.namespace.clone(), kind_key(&c.kind), c.name.clone());
                        if let Some(w) = self.simulated.get(&k) {
                            workloads.insert(w.clone());
                        }
                    }
                    None => {
                        workloads.insert(format!("Pod {}", p.key()));
                    }
                }
            }
            services.insert(
                format!("{}/{}", s.namespace, s.name),
                workloads.into_iter().collect(),
            );
            if timing.probe_rate_per_second > 0.0 {
                probes.push(ServiceProbe {
                    namespace: s.namespace.clone(),
                    service: s.name.clone(),
                    rate_per_second: timing.probe_rate_per_second,
                    retries: 1,
                });
            }
        }
        if !unprobed.is_empty() {
            self.warn(format!("Services not probed: {}", names_of(&unprobed, 5)));
        }
        (services, probes)
    }
}

/// Makes `snap` into a simulator scenario. See the module documentation.
pub fn scenario_from_snapshot(
    snap: &ClusterSnapshot,
    timing: &WhatIfTiming,
) -> Result<WhatIfScenario, WhatIfError> {
    if snap.nodes.is_empty() {
        return Err(WhatIfError::Scenario("the snapshot has no node".into()));
    }
    let mut b = Builder {
        snap,
        timing,
        warnings: Vec::new(),
        manifests: Vec::new(),
        taken: BTreeSet::new(),
        simulated: BTreeMap::new(),
        capped_startups: Vec::new(),
    };
    let version = snap
        .kubernetes_version
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| snap.apiserver_versions().last().map(ToString::to_string))
        .unwrap_or_else(|| "v1.33.4".into());

    let pools = b.node_pools();
    b.namespaces();
    let live = b.workloads_and_pods();
    let (services, probes) = b.pdbs_and_services(&live);
    b.control_plane_sources();
    if snap.etcd.is_some() {
        b.warn(
            "etcd members are not simulated (the simulator's API server has its own store)".into(),
        );
    }
    b.warn(
        "pods are placed afresh by the simulator's scheduler (same nodes, requests and constraints), not necessarily where they run now".into(),
    );
    b.warn(
        "not in the snapshot, so not simulated: container images and readiness probes, PersistentVolumes and their node affinity, preferred affinity, topologySpreadConstraints, hostPorts".into(),
    );

    let cluster = snap
        .metadata
        .cluster_name
        .clone()
        .or_else(|| snap.metadata.source.clone())
        .unwrap_or_else(|| "snapshot".into());
    let scenario = Scenario {
        api_version: "sim.theseus.io/v1alpha1".into(),
        kind: "Scenario".into(),
        metadata: ScenarioMeta {
            name: "what-if".into(),
            description: format!(
                "what-if of {cluster}{}",
                snap.metadata
                    .captured_at
                    .as_ref()
                    .map(|t| format!(" captured at {t}"))
                    .unwrap_or_default()
            ),
        },
        seed: timing.seed,
        kubernetes_version: version,
        timing: Timing {
            boot_seconds: timing.boot_seconds,
            reimage_seconds: timing.reimage(),
            jitter_seconds: timing.jitter_seconds,
            pod_startup_seconds: timing.pod_startup_seconds,
            pod_exit_seconds: timing.pod_exit_seconds,
            endpoint_propagation_seconds: timing.endpoint_propagation_seconds,
        },
        node_pools: pools,
        workloads: Vec::new(),
        manifests: b.manifests,
        faults: Vec::new(),
        probes,
    };
    Ok(WhatIfScenario {
        scenario,
        warnings: b.warnings,
        services,
    })
}

// ---------------------------------------------------------------------------------------------
// The run

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir() -> Result<Scratch, WhatIfError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "theseus-whatif-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| WhatIfError::Scratch {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Scratch(dir))
}

/// Runs `migration` on a simulation of `snap` with the real engine, on whatever clock the
/// caller's runtime has (a paused current-thread runtime runs it on virtual time: hours in
/// seconds). `events` sees the run's events as they happen.
pub async fn simulate(
    snap: &ClusterSnapshot,
    migration: &Migration,
    timing: &WhatIfTiming,
    events: EventSink,
) -> Result<WhatIfReport, WhatIfError> {
    let timing = timing.resolved(migration);
    let converted = scenario_from_snapshot(snap, &timing)?;
    let mut warnings = converted.warnings;
    let expanded = converted
        .scenario
        .expand("what-if")
        .map_err(|e| WhatIfError::Scenario(e.to_string()))?;
    let sim = Simulation::start(&expanded).await?;
    if let Err(e) = sim
        .wait_steady(Duration::from_secs(timing.settle_timeout_seconds))
        .await
    {
        warnings.push(format!("{e}; the migration was started anyway"));
    }

    // The simulator's machines instead of the spec's provider.
    let mut migration = migration.clone();
    let given = migration.spec.provider.take();
    let reimage = timing.reimage();
    let provider = format!(
        "the simulator's machines (reimage {reimage} s, boot {} s){}",
        timing.boot_seconds,
        match &given {
            Some(p) if p.kind == ProviderType::Sim => ", as the spec's `sim` provider asks".into(),
            Some(p) => format!(" instead of the spec's `{}` provider", p.kind.as_str()),
            None => " (the spec names no provider)".into(),
        }
    );
    migration.spec.provider = Some(Provider {
        kind: ProviderType::Sim,
        expected_action_duration: given.as_ref().and_then(|p| p.expected_action_duration),
        command: None,
        ssh: None,
        ansible: None,
        kubean: None,
    });
    let outside: Vec<String> = migration
        .spec
        .probes
        .iter()
        .filter(|p| p.service.is_none())
        .map(|p| p.name.clone())
        .collect();
    if !outside.is_empty() {
        warnings.push(format!(
            "spec.probes {} (HTTP/TCP) are not run; the simulator's clients probe every Service instead",
            outside.join(", ")
        ));
    }

    let plan = twin::plan(&sim, &migration).await?;
    Engine::preflight(&migration, &plan)?;
    let scratch = scratch_dir()?;
    let run_id = format!("whatif-{}", migration.metadata.name);
    let record = crate::run::run_record(&run_id, &migration, &plan, "what-if simulator")?;
    let journal = Arc::new(
        Journal::create(&scratch.0.join("whatif.journal.db"), &record)
            .map_err(EngineError::from)?,
    );
    let blocked: Arc<Mutex<Vec<BlockedDrain>>> = Arc::default();
    let sink: EventSink = {
        let blocked = blocked.clone();
        Arc::new(move |e: &Stamped| {
            if let Event::Blocked {
                node,
                wave,
                pod,
                pdbs,
                reason,
            } = &e.event
            {
                // PDBs are named without their namespace, which is the pod's.
                let ns = pod.split_once('/').map_or("", |(ns, _)| ns);
                let pdbs: Vec<String> = pdbs
                    .iter()
                    .map(|p| {
                        if p.contains('/') || ns.is_empty() {
                            p.clone()
                        } else {
                            format!("{ns}/{p}")
                        }
                    })
                    .collect();
                let pdbs = &pdbs;
                let mut b = blocked.lock().unwrap_or_else(|p| p.into_inner());
                if !b
                    .iter()
                    .any(|x| &x.node == node && &x.pod == pod && &x.pdbs == pdbs)
                {
                    b.push(BlockedDrain {
                        node: node.clone(),
                        wave: *wave,
                        pod: pod.clone(),
                        pdbs: pdbs.clone(),
                        reason: reason.clone(),
                        at_seconds: e.at,
                    });
                }
            }
            events(e);
        })
    };
    let engine = twin::engine(
        &sim,
        &migration,
        &plan,
        journal,
        &run_id,
        sink,
        EngineOptions::default(),
    );
    let result = engine.run().await;
    drop(engine);
    drop(scratch);
    let report = result?;

    let mut downtime: Vec<Downtime> = report
        .probes
        .iter()
        .map(|p| Downtime {
            service: p.name.clone(),
            workloads: converted.services.get(&p.name).cloned().unwrap_or_default(),
            requests: p.requests,
            failures: p.failures,
            longest_gap_seconds: p.longest_gap_seconds,
        })
        .collect();
    downtime.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| a.service.cmp(&b.service))
    });
    let blocked_drains = std::mem::take(&mut *blocked.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(WhatIfReport {
        plan_estimated_seconds: plan.estimate.total_seconds,
        plan_lower_bound_seconds: plan.estimate.lower_bound_seconds,
        waves: plan.waves.len(),
        simulated_seconds: report.elapsed_seconds,
        report,
        blocked_drains,
        downtime,
        provider,
        timing,
        warnings,
    })
}

//! Scenario files: the objects a simulated cluster starts with.
//!
//! For now a scenario is a YAML stream of Kubernetes manifests (several documents, a YAML list, or
//! `kind: List` objects). An empty file is an empty cluster.

use crate::json::Ptr;
use serde_json::Value;

use crate::server::ApiServer;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: document {doc}: not valid YAML: {source}")]
    Yaml {
        path: String,
        doc: usize,
        source: serde_yaml::Error,
    },
    #[error("{path}: document {doc}: {message}")]
    Object {
        path: String,
        doc: usize,
        message: String,
    },
}

/// Parses manifests from YAML text. `path` only names the source in errors.
pub fn parse_manifests(path: &str, text: &str) -> Result<Vec<Value>, ScenarioError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let v: Value =
            serde::Deserialize::deserialize(de).map_err(|source| ScenarioError::Yaml {
                path: path.to_string(),
                doc,
                source,
            })?;
        flatten(path, doc, v, &mut out)?;
    }
    Ok(out)
}

fn flatten(path: &str, doc: usize, v: Value, out: &mut Vec<Value>) -> Result<(), ScenarioError> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .into_iter()
            .try_for_each(|i| flatten(path, doc, i, out)),
        Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
            let items = m
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            items
                .into_iter()
                .try_for_each(|i| flatten(path, doc, i, out))
        }
        Value::Object(ref m) => {
            for f in ["apiVersion", "kind"] {
                if !m.get(f).is_some_and(Value::is_string) {
                    return Err(ScenarioError::Object {
                        path: path.to_string(),
                        doc,
                        message: format!("a manifest needs a string `{f}` field"),
                    });
                }
            }
            out.push(v);
            Ok(())
        }
        _ => Err(ScenarioError::Object {
            path: path.to_string(),
            doc,
            message: "expected a Kubernetes manifest (a mapping with apiVersion and kind)".into(),
        }),
    }
}

/// Creates the manifests in dependency order: CRDs, namespaces, then everything else. Returns
/// the number of objects created.
pub async fn load(server: &ApiServer, manifests: Vec<Value>) -> Result<usize, String> {
    let rank = |v: &Value| match v.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    };
    let mut sorted = manifests;
    sorted.sort_by_key(rank);
    let n = sorted.len();
    for obj in sorted {
        let what = format!(
            "{} {}",
            obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
            obj.ptr("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        match server.create_internal(obj).await {
            Ok(_) => {}
            // The well-known namespaces exist already; a scenario may list them too.
            Err(e) if e.code == 409 && what.starts_with("Namespace ") => {}
            Err(e) => return Err(format!("{what}: {}", e.message)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_errors() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n---\nkind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: c}}\n---\n";
        let m = parse_manifests("s.yaml", text).unwrap();
        assert_eq!(m.len(), 3);
        assert!(parse_manifests("s.yaml", "").unwrap().is_empty());
        let e = parse_manifests("s.yaml", "kind: Pod\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.yaml: document 1") && e.contains("apiVersion"),
            "{e}"
        );
        let e = parse_manifests("s.yaml", "a: [\n").unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster scenarios: node pools, workloads, services with probes, timing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

/// A whole simulated cluster (`apiVersion: sim.theseus.io/v1alpha1`, `kind: Scenario`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ScenarioMeta,
    /// Seed for every random choice (jitter, names, uids).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Version the API server reports.
    #[serde(default = "default_version")]
    pub kubernetes_version: String,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub node_pools: Vec<NodePool>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Extra raw Kubernetes manifests (ConfigMaps such as kubeadm-config, bare objects, ...).
    #[serde(default)]
    pub manifests: Vec<Value>,
    /// Faults to inject (see [`crate::faults`]): API errors and latency, dropped watches, slow
    /// kubelets, machine crashes at a time.
    #[serde(default)]
    pub faults: Vec<Value>,
    /// Probes of Services given in `manifests` (a workload's own Service is probed through its
    /// `service.probeRate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ServiceProbe>,
}

/// A probe of a Service from `manifests`, by synthetic clients.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceProbe {
    #[serde(default = "default_ns")]
    pub namespace: String,
    pub service: String,
    /// Synthetic client requests per second (more than 0).
    pub rate_per_second: f64,
    /// Other backends tried after a failed attempt (default 1).
    #[serde(default = "one_u32")]
    pub retries: u32,
}

fn default_seed() -> u64 {
    1
}

fn default_version() -> String {
    "v1.33.4".into()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Durations of the things maintenance waits for, in seconds of (virtual) time. Fields left out
/// keep their defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Timing {
    pub boot_seconds: f64,
    pub reimage_seconds: f64,
    /// Uniform jitter added to boot and reimage, up to this many seconds.
    pub jitter_seconds: f64,
    /// Default time from a pod's binding to Ready.
    pub pod_startup_seconds: f64,
    /// Default time a terminating pod's containers take to exit (capped by its grace period).
    pub pod_exit_seconds: f64,
    /// How long a Service's endpoints take to reach the clients' kube-proxy.
    pub endpoint_propagation_seconds: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            boot_seconds: 60.0,
            reimage_seconds: 300.0,
            jitter_seconds: 10.0,
            pod_startup_seconds: 3.0,
            pod_exit_seconds: 1.0,
            endpoint_propagation_seconds: 1.0,
        }
    }
}

/// Identical machines: `count` of them named by `namePattern` (`{index}` from `firstIndex`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePool {
    pub name: String,
    pub count: usize,
    /// e.g. `worker-{index}`, `centos-master{index}`.
    pub name_pattern: String,
    #[serde(default = "one")]
    pub first_index: usize,
    #[serde(default)]
    pub roles: Vec<String>,
    /// First InternalIP; the next machines count up from it.
    pub ip_start: String,
    #[serde(default = "default_os")]
    pub os_image: String,
    #[serde(default = "default_kernel")]
    pub kernel_version: String,
    /// Defaults to the scenario's Kubernetes version.
    #[serde(default)]
    pub kubelet_version: Option<String>,
    #[serde(default = "default_runtime")]
    pub container_runtime: String,
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Zones assigned round-robin.
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
    #[serde(default = "default_pods")]
    pub pods: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Value>,
}

fn one() -> usize {
    1
}
fn default_os() -> String {
    "Ubuntu 22.04.4 LTS".into()
}
fn default_kernel() -> String {
    "5.15.0-105-generic".into()
}
fn default_runtime() -> String {
    "containerd://1.7.27".into()
}
fn default_arch() -> String {
    "amd64".into()
}
fn default_cpu() -> String {
    "8".into()
}
fn default_memory() -> String {
    "32Gi".into()
}
fn default_pods() -> u32 {
    110
}

/// A workload and what guards and serves it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet or Pod (a bare pod with no controller).
    pub kind: String,
    pub name: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: usize,
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    /// `hostname` or `zone`: required pod anti-affinity between replicas.
    #[serde(default)]
    pub anti_affinity: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Value>,
    /// Pod uses an emptyDir volume (its data is lost when the pod moves).
    #[serde(default)]
    pub empty_dir: bool,
    /// Bare pods: the node they run on.
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub startup_seconds: Option<f64>,
    #[serde(default)]
    pub exit_seconds: Option<f64>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub pdb: Option<PdbSpec>,
    #[serde(default)]
    pub service: Option<ServiceSpec>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

fn default_ns() -> String {
    "default".into()
}
fn default_image() -> String {
    "registry.k8s.io/pause:3.10".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdbSpec {
    /// Integer or percent.
    #[serde(default)]
    pub min_available: Option<Value>,
    #[serde(default)]
    pub max_unavailable: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default = "default_port")]
    pub port: u16,
    /// Synthetic client requests per second; 0 or absent: no probe.
    #[serde(default)]
    pub probe_rate: Option<f64>,
    /// How many other backends a client tries after a failed connection (default 1, like most
    /// HTTP clients and proxies); 0 makes every request to a dead backend fail.
    #[serde(default = "one_u32")]
    pub probe_retries: u32,
}

fn one_u32() -> u32 {
    1
}

fn default_port() -> u16 {
    80
}

/// One machine of an expanded scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    pub roles: Vec<String>,
    pub zone: Option<String>,
    pub os_image: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    pub container_runtime: String,
    pub architecture: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
}

/// A probe of a Service by synthetic clients.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    pub namespace: String,
    pub service: String,
    pub rate_per_second: f64,
    /// Other backends tried after a failed attempt.
    pub retries: u32,
}

/// A scenario turned into what the simulation starts from.
#[derive(Clone, Debug, Default)]
pub struct Expanded {
    pub seed: u64,
    pub kubernetes_version: String,
    pub timing: Timing,
    pub nodes: Vec<NodeSpec>,
    pub manifests: Vec<Value>,
    pub probes: Vec<ProbeSpec>,
    pub faults: Vec<Value>,
}

fn bad(path: &str, message: String) -> ScenarioError {
    ScenarioError::Object {
        path: path.to_string(),
        doc: 1,
        message,
    }
}

fn parse_ipv4(s: &str) -> Option<u32> {
    let parts: Vec<u32> = s
        .split('.')
        .map(|p| p.parse::<u8>().map(u32::from))
        .collect::<Result<_, _>>()
        .ok()?;
    (parts.len() == 4).then(|| (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3])
}

fn ipv4(n: u32) -> String {
    format!(
        "{}.{}.{}.{}",
        n >> 24,
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

impl Scenario {
    /// Parses a scenario; `path` names the source in errors (which carry YAML line and column).
    pub fn parse(path: &str, text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = serde_yaml::from_str(text).map_err(|source| ScenarioError::Yaml {
            path: path.to_string(),
            doc: 1,
            source,
        })?;
        if s.api_version != "sim.theseus.io/v1alpha1" || s.kind != "Scenario" {
            return Err(bad(
                path,
                format!(
                    "expected apiVersion sim.theseus.io/v1alpha1 and kind Scenario, got {} {}",
                    s.api_version, s.kind
                ),
            ));
        }
        Ok(s)
    }

    /// Expands pools into machines and workloads into manifests.
    pub fn expand(&self, path: &str) -> Result<Expanded, ScenarioError> {
        let mut nodes = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (pool_index, pool) in self.node_pools.iter().enumerate() {
            if !pool.name_pattern.contains("{index}") && pool.count > 1 {
                return Err(bad(
                    path,
                    format!(
                        "nodePools[{pool_index}] ({}): namePattern must contain {{index}} when count > 1",
                        pool.name
                    ),
                ));
            }
            let start = parse_ipv4(&pool.ip_start).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "nodePools[{pool_index}] ({}): ipStart {:?} is not an IPv4 address",
                        pool.name, pool.ip_start
                    ),
                )
            })?;
            for i in 0..pool.count {
                let name = pool
                    .name_pattern
                    .replace("{index}", &(pool.first_index + i).to_string());
                if !seen.insert(name.clone()) {
                    return Err(bad(
                        path,
                        format!(
                            "nodePools[{pool_index}] ({}): node name {name} is used twice",
                            pool.name
                        ),
                    ));
                }
                let n = nodes.len();
                let mut labels = pool.labels.clone();
                let zone =
                    (!pool.zones.is_empty()).then(|| pool.zones[i % pool.zones.len()].clone());
                if let Some(z) = &zone {
                    labels.insert("topology.kubernetes.io/zone".into(), z.clone());
                }
                nodes.push(NodeSpec {
                    name,
                    ip: ipv4(start.wrapping_add(i as u32)),
                    pod_cidr: pod_cidr(n),
                    roles: pool.roles.clone(),
                    zone,
                    os_image: pool.os_image.clone(),
                    kernel_version: pool.kernel_version.clone(),
                    kubelet_version: pool
                        .kubelet_version
                        .clone()
                        .unwrap_or_else(|| self.kubernetes_version.clone()),
                    container_runtime: pool.container_runtime.clone(),
                    architecture: pool.architecture.clone(),
                    cpu: pool.cpu.clone(),
                    memory: pool.memory.clone(),
                    pods: pool.pods,
                    labels,
                    taints: pool.taints.clone(),
                });
            }
        }
        let mut manifests = Vec::new();
        let mut probes = Vec::new();
        let mut namespaces = std::collections::BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            if !matches!(
                w.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet" | "Pod"
            ) {
                return Err(bad(
                    path,
                    format!(
                        "workloads[{i}] ({}): kind {:?} is not one of Deployment, StatefulSet, DaemonSet, Pod",
                        w.name, w.kind
                    ),
                ));
            }
            if !matches!(
                w.namespace.as_str(),
                "default" | "kube-system" | "kube-public" | "kube-node-lease"
            ) {
                namespaces.insert(w.namespace.clone());
            }
            manifests.extend(workload_manifests(w));
            if let Some(rate) = w
                .service
                .as_ref()
                .and_then(|s| s.probe_rate)
                .filter(|r| *r > 0.0)
            {
                probes.push(ProbeSpec {
                    namespace: w.namespace.clone(),
                    service: w.name.clone(),
                    rate_per_second: rate,
                    retries: w.service.as_ref().map_or(1, |s| s.probe_retries),
                });
            }
        }
        let mut all: Vec<Value> = namespaces
            .into_iter()
            .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .collect();
        all.extend(manifests);
        all.extend(self.manifests.iter().cloned());
        for (i, p) in self.probes.iter().enumerate() {
            let what = format!("probes[{i}] ({}/{})", p.namespace, p.service);
            if !(p.rate_per_second.is_finite() && p.rate_per_second > 0.0) {
                return Err(bad(
                    path,
                    format!(
                        "{what}: ratePerSecond must be more than 0, got {}",
                        p.rate_per_second
                    ),
                ));
            }
            let is_service = |m: &Value| {
                m.get("kind").and_then(Value::as_str) == Some("Service")
                    && m.ptr("/metadata/name").and_then(Value::as_str) == Some(p.service.as_str())
                    && m.ptr("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("default")
                        == p.namespace
            };
            if !all.iter().any(is_service) {
                return Err(bad(
                    path,
                    format!(
                        "{what}: no Service {}/{} in the scenario",
                        p.namespace, p.service
                    ),
                ));
            }
            if probes
                .iter()
                .any(|q: &ProbeSpec| q.namespace == p.namespace && q.service == p.service)
            {
                return Err(bad(path, format!("{what}: the Service is probed twice")));
            }
            probes.push(ProbeSpec {
                namespace: p.namespace.clone(),
                service: p.service.clone(),
                rate_per_second: p.rate_per_second,
                retries: p.retries,
            });
        }
        for (i, f) in self.faults.iter().enumerate() {
            let spec = crate::faults::FaultSpec::from_json(f)
                .map_err(|e| bad(&format!("faults[{i}]"), e.to_string()))?;
            if let crate::faults::FaultSpec::MachineCrash { machine, .. } = &spec
                && !nodes.iter().any(|n| &n.name == machine)
            {
                return Err(bad(
                    &format!("faults[{i}].machine"),
                    format!("no node pool makes a machine named {machine:?}"),
                ));
            }
        }
        Ok(Expanded {
            seed: self.seed,
            kubernetes_version: self.kubernetes_version.clone(),
            timing: self.timing.clone(),
            nodes,
            manifests: all,
            probes,
            faults: self.faults.clone(),
        })
    }
}

/// The Kubernetes objects of one scenario workload.
fn workload_manifests(w: &Workload) -> Vec<Value> {
    let labels = json!({"app": w.name});
    let mut requests = serde_json::Map::new();
    if let Some(c) = &w.cpu {
        requests.insert("cpu".into(), json!(c));
    }
    if let Some(m) = &w.memory {
        requests.insert("memory".into(), json!(m));
    }
    let mut container =
        json!({"name": "main", "image": w.image, "resources": {"requests": requests}});
    let mut spec = json!({"containers": []});
    if w.empty_dir {
        container["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/data"}]);
        spec["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    }
    spec["containers"] = json!([container]);
    if !w.node_selector.is_empty() {
        spec["nodeSelector"] = json!(w.node_selector);
    }
    if !w.tolerations.is_empty() {
        spec["tolerations"] = json!(w.tolerations);
    }
    if let Some(g) = w.termination_grace_period_seconds {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = &w.priority_class_name {
        spec["priorityClassName"] = json!(p);
    }
    if let Some(topo) = &w.anti_affinity {
        let key = if topo == "zone" {
            "topology.kubernetes.io/zone"
        } else {
            "kubernetes.io/hostname"
        };
        spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": labels}, "topologyKey": key}]}});
    }
    let mut annotations = serde_json::Map::new();
    if let Some(s) = w.startup_seconds {
        annotations.insert(
            "sim.theseus.io/startup-seconds".into(),
            json!(s.to_string()),
        );
    }
    if let Some(s) = w.exit_seconds {
        annotations.insert("sim.theseus.io/exit-seconds".into(), json!(s.to_string()));
    }
    let template =
        json!({"metadata": {"labels": labels, "annotations": annotations}, "spec": spec});
    let meta = json!({"name": w.name, "namespace": w.namespace, "labels": labels});
    let mut out = Vec::new();
    match w.kind.as_str() {
        "Deployment" => out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template}})),
        "StatefulSet" => out.push(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {"replicas": w.replicas, "serviceName": w.name, "selector": {"matchLabels": labels}, "template": template}})),
        "DaemonSet" => out.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": {"selector": {"matchLabels": labels}, "template": template}})),
        _ => {
            let mut pod_spec = template["spec"].clone();
            if let Some(n) = &w.node_name {
                pod_spec["nodeName"] = json!(n);
            }
            let mut m = template["metadata"].clone();
            m["name"] = json!(w.name);
            m["namespace"] = json!(w.namespace);
            out.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": pod_spec}));
        }
    }
    if let Some(p) = &w.pdb {
        let mut spec = json!({"selector": {"matchLabels": labels}});
        if let Some(v) = &p.min_available {
            spec["minAvailable"] = v.clone();
        }
        if let Some(v) = &p.max_unavailable {
            spec["maxUnavailable"] = v.clone();
        }
        out.push(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec}),
        );
    }
    if let Some(s) = &w.service {
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": w.name, "namespace": w.namespace},
            "spec": {"selector": labels, "ports": [{"port": s.port, "targetPort": s.port, "protocol": "TCP"}]}}));
    }
    out
}

/// Options of the synthetic cluster generator.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub zones: usize,
    pub seed: u64,
}

/// A large synthetic cluster: `nodes` workers over `zones` zones (plus 3 control-plane nodes),
/// and Deployments filling about `pods_per_node` pods per worker, with a mix of PDBs
/// (minAvailable 1, maxUnavailable 1, 50 %), some single-replica Deployments and some with
/// anti-affinity. Deterministic for a seed.
/// The pod CIDR of the `n`th node: one /24 per node from 10.244.0.0 (kubeadm's default cluster
/// CIDR), continuing below it from 10.112.0.0 once 10.255.255.0/24 is used (past 3,072 nodes),
/// which keeps clear of the node addresses (10.0/16, 10.1/16) and the Service range (10.96/12).
fn pod_cidr(n: usize) -> String {
    let block = n >> 8;
    let second = if block < 12 {
        244 + block
    } else {
        (112 + (block - 12)).min(243)
    };
    format!("10.{second}.{}.0/24", n & 0xff)
}

pub fn generate(opts: &GenerateOptions) -> Scenario {
    let mut state = opts.seed;
    let mut next = move || crate::server::splitmix64(&mut state);
    let zones: Vec<String> = (0..opts.zones.max(1))
        .map(|z| format!("zone-{}", (b'a' + (z % 26) as u8) as char))
        .collect();
    let node_pools = vec![
        NodePool {
            name: "control-plane".into(),
            count: 3,
            name_pattern: "cp-{index}".into(),
            first_index: 1,
            roles: vec!["control-plane".into()],
            ip_start: "10.0.0.10".into(),
            os_image: default_os(),
            kernel_version: default_kernel(),
            kubelet_version: None,
            container_runtime: default_runtime(),
            architecture: default_arch(),
            zones: zones.clone(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            taints: vec![
                json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
            ],
        },
        NodePool {
            name: "workers".into(),
            count: opts.nodes,
            name_pattern: "worker-{index}".into(),
            first_index: 1,
            roles: vec![],
            ip_start: "10.1.0.10".into(),
            os_image: default_os(),
            kernel_version: default_kernel(),
            kubelet_version: None,
            container_runtime: default_runtime(),
            architecture: default_arch(),
            zones: zones.clone(),
            cpu: "32".into(),
            memory: "128Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            taints: vec![],
        },
    ];
    let total = opts.nodes * opts.pods_per_node;
    let mut workloads = Vec::new();
    let mut placed = 0usize;
    let mut i = 0usize;
    while placed < total {
        let r = next();
        let replicas = match r % 10 {
            0 => 1,
            1..=5 => 3,
            6..=8 => 5,
            _ => 10,
        }
        .min(total - placed);
        let pdb = match (r >> 8) % 4 {
            0 => None,
            1 => Some(PdbSpec {
                min_available: Some(json!(1)),
                max_unavailable: None,
            }),
            2 => Some(PdbSpec {
                min_available: None,
                max_unavailable: Some(json!(1)),
            }),
            _ => Some(PdbSpec {
                min_available: Some(json!("50%")),
                max_unavailable: None,
            }),
        };
        let anti = (replicas > 1 && (r >> 16) % 5 == 0).then(|| "hostname".to_string());
        workloads.push(Workload {
            kind: "Deployment".into(),
            name: format!("app-{i}"),
            namespace: format!("team-{}", i % 20),
            replicas,
            image: default_image(),
            cpu: Some(format!("{}m", 50 + (r >> 24) % 200)),
            memory: Some(format!("{}Mi", 64 + (r >> 32) % 256)),
            anti_affinity: anti,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            empty_dir: (r >> 40) % 10 == 0,
            node_name: None,
            startup_seconds: None,
            exit_seconds: None,
            termination_grace_period_seconds: None,
            pdb,
            service: i.is_multiple_of(10).then_some(ServiceSpec {
                port: 80,
                probe_rate: Some(1.0),
                probe_retries: 1,
            }),
            priority_class_name: None,
        });
        placed += replicas;
        i += 1;
    }
    Scenario {
        api_version: "sim.theseus.io/v1alpha1".into(),
        kind: "Scenario".into(),
        metadata: ScenarioMeta {
            name: format!("synthetic-{}-nodes", opts.nodes),
            description: format!(
                "{} workers, about {} pods per worker, seed {}",
                opts.nodes, opts.pods_per_node, opts.seed
            ),
        },
        seed: opts.seed,
        kubernetes_version: default_version(),
        timing: Timing::default(),
        node_pools,
        workloads,
        manifests: vec![],
        faults: vec![],
        probes: vec![],
    }
}

#[cfg(test)]
mod scenario_tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
metadata: {name: sample}
seed: 7
nodePools:
- {name: masters, count: 3, namePattern: "master{index}", roles: [control-plane], ipStart: 10.6.0.11, zones: [a, b]}
- {name: workers, count: 2, namePattern: "worker{index}", ipStart: 10.6.0.21, osImage: "CentOS Linux 7 (Core)"}
workloads:
- {kind: Deployment, name: web, namespace: shop, replicas: 3, cpu: 100m, antiAffinity: hostname,
   pdb: {minAvailable: 2}, service: {port: 8080, probeRate: 10}}
- {kind: Pod, name: hr-app, nodeName: worker1}
"#;

    #[test]
    fn expands_pools_workloads_and_probes() {
        let s = Scenario::parse("sample.yaml", SAMPLE).unwrap();
        let e = s.expand("sample.yaml").unwrap();
        let names: Vec<&str> = e.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["master1", "master2", "master3", "worker1", "worker2"]
        );
        assert_eq!(e.nodes[2].ip, "10.6.0.13");
        assert_eq!(e.nodes[2].zone.as_deref(), Some("a"));
        assert_eq!(e.nodes[3].os_image, "CentOS Linux 7 (Core)");
        assert_eq!(e.nodes[0].kubelet_version, "v1.33.4");
        let kinds: Vec<String> = e
            .manifests
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["kind"].as_str().unwrap(),
                    m["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace/shop",
                "Deployment/web",
                "PodDisruptionBudget/web",
                "Service/web",
                "Pod/hr-app"
            ]
        );
        assert_eq!(
            e.manifests[1]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(e.manifests[4]["spec"]["nodeName"], "worker1");
        assert!(e.manifests[4]["metadata"].get("ownerReferences").is_none());
        assert_eq!(
            e.probes,
            [ProbeSpec {
                namespace: "shop".into(),
                service: "web".into(),
                rate_per_second: 10.0,
                retries: 1,
            }]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = Scenario::parse(
            "s.yaml",
            "apiVersion: sim.theseus.io/v1alpha1\nkind: Scenario\nnodePool: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown field `nodePool`") && e.contains("line 3"),
            "{e}"
        );
        let s = Scenario::parse("s.yaml", "apiVersion: sim.theseus.io/v1alpha1\nkind: Scenario\nnodePools: [{name: p, count: 2, namePattern: n, ipStart: 10.0.0.1}]\n").unwrap();
        let e = s.expand("s.yaml").unwrap_err().to_string();
        assert!(e.contains("namePattern must contain {index}"), "{e}");
        let s = Scenario::parse("s.yaml", "apiVersion: sim.theseus.io/v1alpha1\nkind: Scenario\nnodePools: [{name: p, count: 1, namePattern: n, ipStart: 10.0.0}]\n").unwrap();
        assert!(
            s.expand("s.yaml")
                .unwrap_err()
                .to_string()
                .contains("ipStart")
        );
        let e = Scenario::parse("s.yaml", "apiVersion: v1\nkind: Pod\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected apiVersion sim.theseus.io/v1alpha1"),
            "{e}"
        );
    }

    #[test]
    fn probes_of_services_given_as_manifests() {
        let text = r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
nodePools:
- {name: db-1, count: 1, namePattern: db-1, ipStart: 10.9.0.7}
manifests:
- {apiVersion: v1, kind: Service, metadata: {name: api, namespace: prod},
   spec: {selector: {tier: api}, ports: [{port: 443}]}}
probes:
- {namespace: prod, service: api, ratePerSecond: 5}
"#;
        let s = Scenario::parse("p.yaml", text).unwrap();
        let e = s.expand("p.yaml").unwrap();
        assert_eq!(e.nodes[0].name, "db-1");
        assert_eq!(e.nodes[0].ip, "10.9.0.7");
        assert_eq!(
            e.probes,
            [ProbeSpec {
                namespace: "prod".into(),
                service: "api".into(),
                rate_per_second: 5.0,
                retries: 1,
            }]
        );
        // Round trip through YAML.
        let again = Scenario::parse("p.yaml", &serde_yaml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        // A probe of a Service the scenario does not have, a zero rate, a second probe.
        let missing = text.replace("service: api, ratePerSecond", "service: web, ratePerSecond");
        let e = Scenario::parse("p.yaml", &missing)
            .unwrap()
            .expand("p.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("probes[0] (prod/web): no Service prod/web"),
            "{e}"
        );
        let zero = text.replace("ratePerSecond: 5", "ratePerSecond: 0");
        let e = Scenario::parse("p.yaml", &zero)
            .unwrap()
            .expand("p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ratePerSecond must be more than 0"), "{e}");
        let twice = format!("{text}- {{namespace: prod, service: api, ratePerSecond: 1}}\n");
        let e = Scenario::parse("p.yaml", &twice)
            .unwrap()
            .expand("p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("probed twice"), "{e}");
    }

    #[test]
    fn shipped_runbook_scenarios_expand() {
        let shipped = [
            (
                "dce-000",
                include_str!("../../../scenarios/dce-000-centos-to-ubuntu.yaml"),
                9,
                "centos-master1",
            ),
            (
                "cka-002",
                include_str!("../../../scenarios/cka-002-lab.yaml"),
                2,
                "controlplane",
            ),
            (
                "kubeadm-003",
                include_str!("../../../scenarios/kubeadm-003-arm.yaml"),
                4,
                "c2-master0",
            ),
            (
                "domeos-001",
                include_str!("../../../scenarios/domeos-001-master-etcd.yaml"),
                4,
                "domeos-master",
            ),
        ];
        for (name, text, nodes, first) in shipped {
            let s = Scenario::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let e = s.expand(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(e.nodes.len(), nodes, "{name}");
            assert_eq!(e.nodes[0].name, first, "{name}");
            assert!(!e.probes.is_empty(), "{name}");
        }
    }

    #[test]
    fn generator_is_deterministic_and_sized() {
        let o = GenerateOptions {
            nodes: 100,
            pods_per_node: 30,
            zones: 3,
            seed: 42,
        };
        let a = generate(&o);
        assert_eq!(a, generate(&o));
        let e = a.expand("gen").unwrap();
        assert_eq!(e.nodes.len(), 103);
        let pods: usize = a.workloads.iter().map(|w| w.replicas).sum();
        assert_eq!(pods, 3000);
        assert!(
            a.workloads.iter().any(|w| w.replicas == 1)
                && a.workloads.iter().any(|w| w.pdb.is_some())
        );
        assert_ne!(generate(&GenerateOptions { seed: 43, ..o }), a);
    }
}

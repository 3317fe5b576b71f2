//! Kubernetes objects (k8s-openapi types) to snapshot records. Pure functions; the owner chain
//! of a pod is resolved by the caller and passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use theseus_model::IntOrPercent;
use theseus_model::quantity::{parse_bytes, parse_count, parse_cpu_millis};
use theseus_model::selector::{
    LabelSelector, LabelSelectorRequirement, NodeSelector, NodeSelectorOperator,
    NodeSelectorRequirement, NodeSelectorTerm, SelectorOperator, Taint, TaintEffect, Toleration,
    TolerationOperator,
};
use theseus_model::snapshot::{
    Affinity, Allocatable, ControllerRef, Namespace, Node, NodeAddress, NodeCondition, PdbStatus,
    Pod, PodAffinityTerm, PodPhase, Resources, Service, ServicePort, Workload, WorkloadKind,
    WorkloadStrategy,
};
use theseus_model::{KubeVersion, snapshot};

use crate::error::CaptureError;

/// Annotation of mirror pods (the API's copy of a static pod).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn invalid(object: String, message: String) -> CaptureError {
    CaptureError::Invalid { object, message }
}

fn name_of(meta: &meta::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn ns_of(meta: &meta::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

/// `Kind namespace/name` of an object, for error messages.
fn describe(kind: &str, meta: &meta::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{kind} {ns}/{}", name_of(meta)),
        None => format!("{kind} {}", name_of(meta)),
    }
}

fn labels(meta: &meta::ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// A label selector. `None` (a null selector, which selects nothing in `policy/v1`) is
/// the caller's business.
pub fn label_selector(
    sel: &meta::LabelSelector,
    object: &dyn Fn() -> String,
) -> Result<LabelSelector, CaptureError> {
    let mut out = LabelSelector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for r in sel.match_expressions.iter().flatten() {
        let operator = match r.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return Err(invalid(
                    object(),
                    format!(
                        "label selector operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ),
                ));
            }
        };
        out.match_expressions.push(LabelSelectorRequirement {
            key: r.key.clone(),
            operator,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A selector that matches no pod: how a PDB without `spec.selector` (which selects nothing
/// in `policy/v1`) is recorded, since the snapshot's selector is not optional.
pub fn match_nothing() -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "theseus.io/pdb-without-selector".into(),
            operator: SelectorOperator::Exists,
            values: Vec::new(),
        }],
    }
}

fn taint_effect(s: &str) -> Option<TaintEffect> {
    match s {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

fn int_or_percent(
    v: &IntOrString,
    object: &dyn Fn() -> String,
    field: &str,
) -> Result<IntOrPercent, CaptureError> {
    match v {
        IntOrString::Int(n) => Ok(IntOrPercent::Int(i64::from(*n))),
        IntOrString::String(s) => IntOrPercent::parse(s).ok_or_else(|| {
            invalid(
                object(),
                format!("{field} {s:?} is neither an integer nor a percentage"),
            )
        }),
    }
}

fn quantity(
    q: &Quantity,
    parse: fn(&str) -> Result<i64, theseus_model::quantity::QuantityError>,
    object: &dyn Fn() -> String,
    field: &str,
) -> Result<i64, CaptureError> {
    parse(&q.0).map_err(|e| invalid(object(), format!("{field}: {e}")))
}

/// A node.
pub fn node(n: &core::Node) -> Result<Node, CaptureError> {
    let object = || describe("Node", &n.metadata);
    let labels = labels(&n.metadata);
    let status = n.status.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let resources = status.allocatable.as_ref().or(status.capacity.as_ref());
    let get = |key: &str, parse, field: &str| -> Result<i64, CaptureError> {
        match resources.and_then(|r| r.get(key)) {
            Some(q) => quantity(q, parse, &object, field),
            None => Ok(0),
        }
    };
    let allocatable = Allocatable {
        cpu_millis: get("cpu", parse_cpu_millis, "status.allocatable.cpu")?,
        memory_bytes: get("memory", parse_bytes, "status.allocatable.memory")?,
        pods: get("pods", parse_count, "status.allocatable.pods")?,
    };
    let info = status.node_info.clone().unwrap_or_default();
    Ok(Node {
        name: name_of(&n.metadata),
        addresses: status
            .addresses
            .iter()
            .flatten()
            .map(|a| NodeAddress {
                kind: a.type_.clone(),
                address: a.address.clone(),
            })
            .collect(),
        roles: Node::roles_from_labels(&labels),
        zone: Node::zone_from_labels(&labels),
        taints: spec
            .taints
            .iter()
            .flatten()
            .filter_map(|t| {
                Some(Taint {
                    key: t.key.clone(),
                    value: t.value.clone().filter(|v| !v.is_empty()),
                    effect: taint_effect(&t.effect)?,
                })
            })
            .collect(),
        labels,
        allocatable,
        os_image: info.os_image,
        kernel_version: info.kernel_version,
        kubelet_version: KubeVersion::parse(&info.kubelet_version).ok(),
        container_runtime_version: info.container_runtime_version,
        architecture: info.architecture,
        conditions: status
            .conditions
            .iter()
            .flatten()
            .map(|c| NodeCondition {
                kind: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
            })
            .collect(),
        unschedulable: spec.unschedulable.unwrap_or(false),
    })
}

fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_add(b.cpu_millis),
        memory_bytes: a.memory_bytes.saturating_add(b.memory_bytes),
    }
}

fn max(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
    }
}

fn requests_of(
    list: Option<&BTreeMap<String, Quantity>>,
    object: &dyn Fn() -> String,
    what: &str,
) -> Result<Resources, CaptureError> {
    let Some(list) = list else {
        return Ok(Resources::default());
    };
    Ok(Resources {
        cpu_millis: match list.get("cpu") {
            Some(q) => quantity(q, parse_cpu_millis, object, &format!("{what}.cpu"))?,
            None => 0,
        },
        memory_bytes: match list.get("memory") {
            Some(q) => quantity(q, parse_bytes, object, &format!("{what}.memory"))?,
            None => 0,
        },
    })
}

/// The requests the scheduler counts for a pod: the larger of the sum over containers (plus
/// restartable init containers, i.e. sidecars) and the largest init container (with the sidecars
/// started before it), plus the pod overhead. This is `PodRequests` of
/// `k8s.io/component-helpers/resource`.
pub fn pod_requests(
    spec: &core::PodSpec,
    object: &dyn Fn() -> String,
) -> Result<Resources, CaptureError> {
    let container = |c: &core::Container| {
        requests_of(
            c.resources.as_ref().and_then(|r| r.requests.as_ref()),
            object,
            &format!("container {} requests", c.name),
        )
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum = add(sum, container(c)?);
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let req = container(c)?;
        let during = if c.restart_policy.as_deref() == Some("Always") {
            sum = add(sum, req);
            sidecars = add(sidecars, req);
            sidecars
        } else {
            add(req, sidecars)
        };
        init_max = max(init_max, during);
    }
    let overhead = requests_of(spec.overhead.as_ref(), object, "overhead")?;
    Ok(add(max(sum, init_max), overhead))
}

fn node_selector(
    sel: &core::NodeSelector,
    object: &dyn Fn() -> String,
) -> Result<NodeSelector, CaptureError> {
    let req = |r: &core::NodeSelectorRequirement| -> Result<NodeSelectorRequirement, CaptureError> {
        let operator = match r.operator.as_str() {
            "In" => NodeSelectorOperator::In,
            "NotIn" => NodeSelectorOperator::NotIn,
            "Exists" => NodeSelectorOperator::Exists,
            "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
            "Gt" => NodeSelectorOperator::Gt,
            "Lt" => NodeSelectorOperator::Lt,
            other => {
                return Err(invalid(
                    object(),
                    format!(
                        "node selector operator {other:?} is not In, NotIn, Exists, DoesNotExist, Gt or Lt"
                    ),
                ));
            }
        };
        Ok(NodeSelectorRequirement {
            key: r.key.clone(),
            operator,
            values: r.values.clone().unwrap_or_default(),
        })
    };
    let mut terms = Vec::new();
    for t in &sel.node_selector_terms {
        terms.push(NodeSelectorTerm {
            match_expressions: t
                .match_expressions
                .iter()
                .flatten()
                .map(req)
                .collect::<Result<_, _>>()?,
            match_fields: t
                .match_fields
                .iter()
                .flatten()
                .map(req)
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(NodeSelector {
        node_selector_terms: terms,
    })
}

fn affinity_terms(
    terms: Option<&Vec<core::PodAffinityTerm>>,
    object: &dyn Fn() -> String,
) -> Result<Vec<PodAffinityTerm>, CaptureError> {
    let mut out = Vec::new();
    for t in terms.into_iter().flatten() {
        out.push(PodAffinityTerm {
            // A term without labelSelector matches no pod.
            label_selector: match &t.label_selector {
                Some(s) => label_selector(s, object)?,
                None => match_nothing(),
            },
            namespaces: t.namespaces.clone().unwrap_or_default(),
            namespace_selector: t
                .namespace_selector
                .as_ref()
                .map(|s| label_selector(s, object))
                .transpose()?,
            topology_key: t.topology_key.clone(),
        });
    }
    Ok(out)
}

fn affinity(
    a: &core::Affinity,
    object: &dyn Fn() -> String,
) -> Result<Option<Affinity>, CaptureError> {
    let out = Affinity {
        node_affinity: a
            .node_affinity
            .as_ref()
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|s| node_selector(s, object))
            .transpose()?,
        pod_affinity: affinity_terms(
            a.pod_affinity.as_ref().and_then(|p| {
                p.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            object,
        )?,
        pod_anti_affinity: affinity_terms(
            a.pod_anti_affinity.as_ref().and_then(|p| {
                p.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            object,
        )?,
    };
    Ok((!out.is_empty()).then_some(out))
}

fn toleration(t: &core::Toleration) -> Option<Toleration> {
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => Some(taint_effect(e)?),
    };
    Some(Toleration {
        key: t.key.clone().filter(|k| !k.is_empty()),
        operator: match t.operator.as_deref() {
            Some("Exists") => TolerationOperator::Exists,
            _ => TolerationOperator::Equal,
        },
        value: t.value.clone().filter(|v| !v.is_empty()),
        effect,
        toleration_seconds: t.toleration_seconds,
    })
}

fn phase(s: Option<&str>) -> PodPhase {
    match s {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
        // No status yet: accepted, not started.
        None => PodPhase::Pending,
    }
}

/// A pod, with its top controller resolved by the caller.
pub fn pod(p: &core::Pod, controller: Option<ControllerRef>) -> Result<Pod, CaptureError> {
    let object = || describe("Pod", &p.metadata);
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let ready_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True");
    let startup_seconds = match (
        &status.start_time,
        ready_condition.and_then(|c| c.last_transition_time.as_ref()),
    ) {
        (Some(start), Some(ready)) => {
            u32::try_from(ready.0.as_second().saturating_sub(start.0.as_second())).ok()
        }
        _ => None,
    };
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
    Ok(Pod {
        namespace: ns_of(&p.metadata),
        name: name_of(&p.metadata),
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        labels: labels(&p.metadata),
        controller,
        requests: pod_requests(&spec, &object)?,
        phase: phase(status.phase.as_deref()),
        ready: ready_condition.is_some(),
        empty_dir: spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.empty_dir.is_some())
            .map(|v| v.name.clone())
            .collect(),
        mirror,
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(toleration)
            .collect(),
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        affinity: match &spec.affinity {
            Some(a) => affinity(a, &object)?,
            None => None,
        },
        priority: spec.priority.unwrap_or(0),
        priority_class_name: spec.priority_class_name.clone().filter(|s| !s.is_empty()),
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        startup_seconds,
    })
}

fn strategy(
    kind: Option<&String>,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    object: &dyn Fn() -> String,
) -> Result<Option<WorkloadStrategy>, CaptureError> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    Ok(Some(WorkloadStrategy {
        kind: kind.clone(),
        max_surge: max_surge
            .map(|v| int_or_percent(v, object, "maxSurge"))
            .transpose()?,
        max_unavailable: max_unavailable
            .map(|v| int_or_percent(v, object, "maxUnavailable"))
            .transpose()?,
    }))
}

fn selector_of(
    sel: &meta::LabelSelector,
    object: &dyn Fn() -> String,
) -> Result<Option<LabelSelector>, CaptureError> {
    label_selector(sel, object).map(Some)
}

/// A Deployment.
pub fn deployment(d: &Deployment) -> Result<Workload, CaptureError> {
    let object = || describe("Deployment", &d.metadata);
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let s = spec.strategy.clone().unwrap_or_default();
    let ru = s.rolling_update.clone().unwrap_or_default();
    Ok(Workload {
        kind: WorkloadKind::Deployment,
        namespace: ns_of(&d.metadata),
        name: name_of(&d.metadata),
        replicas: spec.replicas.unwrap_or(1),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        available_replicas: Some(status.available_replicas.unwrap_or(0)),
        strategy: strategy(
            s.type_.as_ref(),
            ru.max_surge.as_ref(),
            ru.max_unavailable.as_ref(),
            &object,
        )?,
        selector: selector_of(&spec.selector, &object)?,
        min_ready_seconds: spec.min_ready_seconds,
    })
}

/// A ReplicaSet (recorded as a workload only when no Deployment or other controller owns it).
pub fn replicaset(r: &ReplicaSet) -> Result<Workload, CaptureError> {
    let object = || describe("ReplicaSet", &r.metadata);
    let spec = r.spec.clone().unwrap_or_default();
    let status = r.status.clone().unwrap_or_default();
    Ok(Workload {
        kind: WorkloadKind::ReplicaSet,
        namespace: ns_of(&r.metadata),
        name: name_of(&r.metadata),
        replicas: spec.replicas.unwrap_or(1),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        available_replicas: Some(status.available_replicas.unwrap_or(0)),
        strategy: None,
        selector: selector_of(&spec.selector, &object)?,
        min_ready_seconds: spec.min_ready_seconds,
    })
}

/// A StatefulSet.
pub fn statefulset(s: &StatefulSet) -> Result<Workload, CaptureError> {
    let object = || describe("StatefulSet", &s.metadata);
    let spec = s.spec.clone().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    let u = spec.update_strategy.clone().unwrap_or_default();
    let ru = u.rolling_update.clone().unwrap_or_default();
    Ok(Workload {
        kind: WorkloadKind::StatefulSet,
        namespace: ns_of(&s.metadata),
        name: name_of(&s.metadata),
        replicas: spec.replicas.unwrap_or(1),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        available_replicas: status.available_replicas,
        strategy: strategy(u.type_.as_ref(), None, ru.max_unavailable.as_ref(), &object)?,
        selector: selector_of(&spec.selector, &object)?,
        min_ready_seconds: spec.min_ready_seconds,
    })
}

/// A DaemonSet: replicas are the nodes it should run on.
pub fn daemonset(d: &DaemonSet) -> Result<Workload, CaptureError> {
    let object = || describe("DaemonSet", &d.metadata);
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let u = spec.update_strategy.clone().unwrap_or_default();
    let ru = u.rolling_update.clone().unwrap_or_default();
    Ok(Workload {
        kind: WorkloadKind::DaemonSet,
        namespace: ns_of(&d.metadata),
        name: name_of(&d.metadata),
        replicas: status.desired_number_scheduled,
        ready_replicas: status.number_ready,
        available_replicas: status.number_available,
        strategy: strategy(
            u.type_.as_ref(),
            ru.max_surge.as_ref(),
            ru.max_unavailable.as_ref(),
            &object,
        )?,
        selector: selector_of(&spec.selector, &object)?,
        min_ready_seconds: spec.min_ready_seconds,
    })
}

/// A Job (recorded as a workload when no CronJob owns it): replicas are its parallelism.
pub fn job(j: &Job) -> Result<Workload, CaptureError> {
    let object = || describe("Job", &j.metadata);
    let spec = j.spec.clone().unwrap_or_default();
    let status = j.status.clone().unwrap_or_default();
    Ok(Workload {
        kind: WorkloadKind::Job,
        namespace: ns_of(&j.metadata),
        name: name_of(&j.metadata),
        replicas: spec.parallelism.unwrap_or(1),
        ready_replicas: status.ready.unwrap_or(0),
        available_replicas: None,
        strategy: None,
        selector: spec
            .selector
            .as_ref()
            .map(|s| label_selector(s, &object))
            .transpose()?,
        min_ready_seconds: None,
    })
}

/// A PodDisruptionBudget.
pub fn pdb(p: &PodDisruptionBudget) -> Result<snapshot::PodDisruptionBudget, CaptureError> {
    let object = || describe("PodDisruptionBudget", &p.metadata);
    let spec = p.spec.clone().unwrap_or_default();
    Ok(snapshot::PodDisruptionBudget {
        namespace: ns_of(&p.metadata),
        name: name_of(&p.metadata),
        selector: match &spec.selector {
            Some(s) => label_selector(s, &object)?,
            None => match_nothing(),
        },
        min_available: spec
            .min_available
            .as_ref()
            .map(|v| int_or_percent(v, &object, "spec.minAvailable"))
            .transpose()?,
        max_unavailable: spec
            .max_unavailable
            .as_ref()
            .map(|v| int_or_percent(v, &object, "spec.maxUnavailable"))
            .transpose()?,
        unhealthy_pod_eviction_policy: spec.unhealthy_pod_eviction_policy.clone(),
        status: p.status.as_ref().map(|s| PdbStatus {
            current_healthy: s.current_healthy,
            desired_healthy: s.desired_healthy,
            disruptions_allowed: s.disruptions_allowed,
            expected_pods: s.expected_pods,
        }),
    })
}

/// A Service.
pub fn service(s: &core::Service) -> Service {
    let spec = s.spec.clone().unwrap_or_default();
    Service {
        namespace: ns_of(&s.metadata),
        name: name_of(&s.metadata),
        kind: spec.type_.clone(),
        selector: spec.selector.clone().unwrap_or_default(),
        cluster_ip: spec.cluster_ip.clone().filter(|ip| !ip.is_empty()),
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| ServicePort {
                port: p.port,
                protocol: p.protocol.clone(),
            })
            .collect(),
    }
}

/// A namespace from its metadata.
pub fn namespace(meta: &meta::ObjectMeta) -> Namespace {
    Namespace {
        name: name_of(meta),
        labels: labels(meta),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pod_requests_follow_the_scheduler() {
        let spec: core::PodSpec = obj(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_requests(&spec, &|| "Pod x".into()).unwrap();
        // Containers plus sidecar: 350m, 80Mi. Init "migrate" with the sidecar: 1050m, 26Mi.
        assert_eq!(r.cpu_millis, 1050 + 10);
        assert_eq!(r.memory_bytes, 80 << 20);
        let bad: core::PodSpec =
            obj(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "lots"}}}]}));
        let e = pod_requests(&bad, &|| "Pod ns/x".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Pod ns/x") && e.contains("container a requests.cpu"),
            "{e}"
        );
    }

    #[test]
    fn pods_carry_scheduling_constraints() {
        let p: core::Pod = obj(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"kubernetes.io/config.mirror": "abc"}},
            "spec": {
                "nodeName": "w1",
                "containers": [{"name": "c"}],
                "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}],
                "tolerations": [{"operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoSchedule"}],
                "nodeSelector": {"disk": "ssd"},
                "priority": 1000,
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}
                }
            },
            "status": {"phase": "Running", "startTime": "2024-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:07Z"}]}
        }));
        let pod = pod(&p, None).unwrap();
        assert_eq!(pod.node_name.as_deref(), Some("w1"));
        assert!(pod.mirror && pod.ready);
        assert_eq!(pod.phase, PodPhase::Running);
        assert_eq!(pod.empty_dir, ["scratch"]);
        assert_eq!(pod.tolerations.len(), 2);
        assert_eq!(pod.tolerations[0].operator, TolerationOperator::Exists);
        assert_eq!(pod.tolerations[1].effect, Some(TaintEffect::NoSchedule));
        assert_eq!(pod.startup_seconds, Some(7));
        assert_eq!(pod.priority, 1000);
        let a = pod.affinity.unwrap();
        assert_eq!(
            a.pod_anti_affinity[0].topology_key,
            "kubernetes.io/hostname"
        );
        assert!(
            a.node_affinity
                .unwrap()
                .matches(&[("zone".to_string(), "a".to_string())].into(), "w1")
        );
    }

    #[test]
    fn nodes_and_pdbs() {
        let n: core::Node = obj(json!({
            "metadata": {"name": "m1", "labels": {"node-role.kubernetes.io/control-plane": "", "topology.kubernetes.io/zone": "a"}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}], "unschedulable": true},
            "status": {"allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                       "nodeInfo": {"osImage": "CentOS Linux 7 (Core)", "kernelVersion": "3.10", "kubeletVersion": "v1.33.4",
                                    "containerRuntimeVersion": "containerd://1.7", "architecture": "amd64", "bootID": "", "kubeProxyVersion": "",
                                    "machineID": "", "operatingSystem": "linux", "systemUUID": ""},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let node = node(&n).unwrap();
        assert_eq!(node.roles, ["control-plane"]);
        assert_eq!(node.zone.as_deref(), Some("a"));
        assert_eq!(
            node.allocatable,
            Allocatable {
                cpu_millis: 3800,
                memory_bytes: 15 << 30,
                pods: 110
            }
        );
        assert!(node.unschedulable && node.is_ready() && node.is_control_plane());
        assert_eq!(node.kubelet_version.unwrap().minor, 33);

        let p: PodDisruptionBudget = obj(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"minAvailable": "50%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
            "status": {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3}
        }));
        let b = pdb(&p).unwrap();
        assert_eq!(b.min_available, Some(IntOrPercent::Percent(50)));
        assert_eq!(b.status.unwrap().disruptions_allowed, 1);
        assert!(
            b.selector
                .matches(&[("app".to_string(), "web".to_string())].into())
        );
        let none: PodDisruptionBudget = obj(
            json!({"metadata": {"name": "x", "namespace": "shop"}, "spec": {"maxUnavailable": 1}}),
        );
        assert!(!pdb(&none).unwrap().selector.matches(&BTreeMap::new()));
        let bad: PodDisruptionBudget = obj(
            json!({"metadata": {"name": "x", "namespace": "shop"}, "spec": {"maxUnavailable": "half"}}),
        );
        let e = pdb(&bad).unwrap_err().to_string();
        assert!(
            e.contains("PodDisruptionBudget shop/x") && e.contains("spec.maxUnavailable \"half\""),
            "{e}"
        );
    }
}

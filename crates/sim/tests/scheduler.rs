//! The simulator's kube-scheduler: through the in-process Cluster API on a paused clock, and its
//! pure placement logic under property tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use theseus_sim::cluster::Cluster;
use theseus_sim::rest::DeleteOptions;
use theseus_sim::scheduler::{
    self, FitError, NodeInfo, NodeUsage, PodInfo, Reason, SchedulerCache, SchedulerConfig,
    parse_quantity, parse_quantity_milli,
};
use theseus_sim::{ApiServer, ServerConfig};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn start() -> (Arc<ApiServer>, Cluster) {
    start_with(SchedulerConfig::default()).await
}

async fn start_with(config: SchedulerConfig) -> (Arc<ApiServer>, Cluster) {
    let server = ApiServer::new(ServerConfig::default()).await;
    let cluster = Cluster::new(server.clone()).unwrap();
    scheduler::spawn(cluster.clone(), config);
    (server, cluster)
}

/// A Ready node with allocatable cpu/memory/pods and labels (hostname added).
fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> Value {
    let mut l = labels;
    l["kubernetes.io/hostname"] = json!(name);
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": l},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": mem, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(name: &str, cpu: &str, mem: &str) -> Value {
    let mut requests = serde_json::Map::new();
    if !cpu.is_empty() {
        requests.insert("cpu".into(), json!(cpu));
    }
    if !mem.is_empty() {
        requests.insert("memory".into(), json!(mem));
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
            "resources": {"requests": requests}}]}})
}

fn with(mut v: Value, pointer: &str, x: Value) -> Value {
    let mut cur = &mut v;
    for part in pointer.trim_start_matches('/').split('/') {
        if cur.get(part).is_none() {
            cur[part] = json!({});
        }
        cur = &mut cur[part];
    }
    *cur = x;
    v
}

fn owned(v: Value, uid: &str) -> Value {
    with(
        v,
        "/metadata/ownerReferences",
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid,
            "controller": true, "blockOwnerDeletion": true}]),
    )
}

fn anti_affinity(v: Value, app: &str, topology: &str) -> Value {
    let v = with(v, "/metadata/labels", json!({"app": app}));
    with(
        v,
        "/spec/affinity",
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": topology}]}}),
    )
}

async fn add(cluster: &Cluster, v: Value) {
    let r = if v["kind"] == "Node" {
        &cluster.res.nodes
    } else {
        &cluster.res.pods
    };
    cluster.create(r, v).await.unwrap();
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(15)).await;
}

async fn pod_obj(cluster: &Cluster, name: &str) -> Value {
    cluster
        .get(&cluster.res.pods, "default", name)
        .await
        .unwrap()
        .value
        .to_value()
}

async fn node_of(cluster: &Cluster, name: &str) -> Option<String> {
    pod_obj(cluster, name)
        .await
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn placements(cluster: &Cluster) -> BTreeMap<String, Option<String>> {
    let (pods, _) = cluster.list(&cluster.res.pods, None).await.unwrap();
    pods.iter()
        .map(|p| {
            (
                p.value["metadata"]["name"].as_str().unwrap().to_string(),
                p.value
                    .pointer("/spec/nodeName")
                    .and_then(theseus_sim::tree::Tree::as_str)
                    .map(str::to_string),
            )
        })
        .collect()
}

/// The PodScheduled condition: (status, reason, message).
async fn scheduled_condition(cluster: &Cluster, name: &str) -> Option<(String, String, String)> {
    let p = pod_obj(cluster, name).await;
    let c = p
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Some((s("status"), s("reason"), s("message")))
}

async fn failed_scheduling_events(cluster: &Cluster, name: &str) -> Vec<String> {
    let (evs, _) = cluster
        .list(&cluster.res.events, Some("default"))
        .await
        .unwrap();
    evs.iter()
        .filter(|e| {
            e.value["involvedObject"]["name"] == name && e.value["reason"] == "FailedScheduling"
        })
        .map(|e| {
            assert_eq!(e.value["type"], "Warning");
            e.value["message"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn patch_node(cluster: &Cluster, name: &str, sub: Option<&str>, patch: Value) {
    cluster
        .merge_patch(&cluster.res.nodes, "", name, sub, patch)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Through the API
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn pods_land_only_on_feasible_nodes() {
    let (_s, c) = start().await;
    add(&c, node("small", "1", "1Gi", json!({"disk": "ssd"}))).await;
    add(&c, node("big", "4", "8Gi", json!({}))).await;
    let mut not_ready = node("down", "16", "64Gi", json!({"disk": "ssd"}));
    not_ready["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    add(&c, not_ready).await;
    add(&c, pod("needs-2cpu", "2", "1Gi")).await;
    add(&c, pod("needs-4gi", "100m", "4Gi")).await;
    add(
        &c,
        with(
            pod("ssd", "500m", "512Mi"),
            "/spec/nodeSelector",
            json!({"disk": "ssd"}),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "needs-2cpu").await.as_deref(), Some("big"));
    assert_eq!(node_of(&c, "needs-4gi").await.as_deref(), Some("big"));
    assert_eq!(node_of(&c, "ssd").await.as_deref(), Some("small"));
    let (status, reason, _) = scheduled_condition(&c, "ssd").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", ""));

    // A second ssd pod does not fit what is left on `small`; `down` is not Ready.
    add(
        &c,
        with(
            pod("ssd2", "800m", "128Mi"),
            "/spec/nodeSelector",
            json!({"disk": "ssd"}),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "ssd2").await, None);
    let (status, reason, message) = scheduled_condition(&c, "ssd2").await.unwrap();
    assert_eq!(status, "False");
    assert_eq!(reason, "Unschedulable");
    assert_eq!(
        message,
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node \
         affinity/selector, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
}

#[tokio::test(start_paused = true)]
async fn cordoned_node_gets_no_new_pods_but_a_tolerating_daemon_pod_does() {
    let (_s, c) = start().await;
    add(&c, node("n1", "4", "8Gi", json!({}))).await;
    add(&c, node("n2", "4", "8Gi", json!({}))).await;
    patch_node(&c, "n1", None, json!({"spec": {"unschedulable": true}})).await;
    for i in 0..4 {
        add(&c, pod(&format!("web-{i}"), "100m", "64Mi")).await;
    }
    let pinned = |name: &str, tolerate: bool| {
        let mut p = with(
            pod(name, "50m", "32Mi"),
            "/spec/affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}),
        );
        if tolerate {
            p = with(
                p,
                "/spec/tolerations",
                json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                    "effect": "NoSchedule"}]),
            );
        }
        p
    };
    add(&c, pinned("ds-n1", true)).await;
    add(&c, pinned("pinned-n1", false)).await;
    settle().await;
    for i in 0..4 {
        assert_eq!(
            node_of(&c, &format!("web-{i}")).await.as_deref(),
            Some("n2")
        );
    }
    assert_eq!(node_of(&c, "ds-n1").await.as_deref(), Some("n1"));
    assert_eq!(node_of(&c, "pinned-n1").await, None);
    let (_, _, message) = scheduled_condition(&c, "pinned-n1").await.unwrap();
    assert_eq!(
        message,
        "0/2 nodes are available: 1 node(s) didn't satisfy plugin(s) [NodeAffinity], 1 node(s) \
         were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful \
         for scheduling."
    );
    // Uncordoned: the pinned pod is retried and lands.
    patch_node(&c, "n1", None, json!({"spec": {"unschedulable": null}})).await;
    settle().await;
    assert_eq!(node_of(&c, "pinned-n1").await.as_deref(), Some("n1"));
}

#[tokio::test(start_paused = true)]
async fn taints_and_tolerations() {
    let (_s, c) = start().await;
    let tainted = |name: &str, taints: Value| {
        let mut n = node(name, "4", "8Gi", json!({}));
        n["spec"]["taints"] = taints;
        n
    };
    add(
        &c,
        tainted(
            "gpu",
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ),
    )
    .await;
    add(
        &c,
        tainted(
            "cp",
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        ),
    )
    .await;
    add(&c, pod("plain", "100m", "")).await;
    let tol = |p: Value, t: Value| with(p, "/spec/tolerations", t);
    add(
        &c,
        tol(
            pod("gpu-job", "100m", ""),
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]),
        ),
    )
    .await;
    add(
        &c,
        tol(
            pod("wrong-value", "100m", ""),
            json!([{"key": "dedicated", "operator": "Equal", "value": "tpu"}]),
        ),
    )
    .await;
    add(
        &c,
        tol(
            pod("everything", "100m", ""),
            json!([{"operator": "Exists"}]),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "plain").await, None);
    assert_eq!(node_of(&c, "wrong-value").await, None);
    assert_eq!(node_of(&c, "gpu-job").await.as_deref(), Some("gpu"));
    assert!(node_of(&c, "everything").await.is_some());
    let (_, _, message) = scheduled_condition(&c, "plain").await.unwrap();
    assert_eq!(
        message,
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had \
         untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are \
         available: 2 Preemption is not helpful for scheduling."
    );

    // PreferNoSchedule only lowers the score: a bigger, emptier node with it loses, and is still
    // used when nothing else fits.
    add(&c, node("free", "1", "1Gi", json!({}))).await;
    add(
        &c,
        tainted(
            "soft",
            json!([{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]),
        ),
    )
    .await;
    settle().await;
    // `plain` was retried when the nodes were added.
    assert_eq!(node_of(&c, "plain").await.as_deref(), Some("free"));
    add(&c, pod("large", "2", "")).await;
    settle().await;
    assert_eq!(node_of(&c, "large").await.as_deref(), Some("soft"));
}

#[tokio::test(start_paused = true)]
async fn exhausted_resources_leave_pods_pending_until_a_node_is_added() {
    let (_s, c) = start().await;
    add(&c, node("n1", "1", "2Gi", json!({}))).await;
    add(&c, pod("a", "800m", "1Gi")).await;
    settle().await;
    assert_eq!(node_of(&c, "a").await.as_deref(), Some("n1"));
    add(&c, pod("b", "500m", "512Mi")).await;
    add(&c, pod("c", "100m", "1536Mi")).await;
    settle().await;
    assert_eq!(node_of(&c, "b").await, None);
    let expected_b = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                      available: 1 No preemption victims found for incoming pod.";
    assert_eq!(
        scheduled_condition(&c, "b").await.unwrap(),
        ("False".into(), "Unschedulable".into(), expected_b.into())
    );
    let (_, _, mc) = scheduled_condition(&c, "c").await.unwrap();
    assert_eq!(
        mc,
        "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 \
         No preemption victims found for incoming pod."
    );
    // Retried every minute, but the event is recorded once per distinct message.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(node_of(&c, "b").await, None);
    assert_eq!(
        failed_scheduling_events(&c, "b").await,
        vec![expected_b.to_string()]
    );

    add(&c, node("n2", "2", "4Gi", json!({}))).await;
    settle().await;
    assert_eq!(node_of(&c, "b").await.as_deref(), Some("n2"));
    assert_eq!(node_of(&c, "c").await.as_deref(), Some("n2"));
    assert_eq!(scheduled_condition(&c, "b").await.unwrap().0, "True");
}

#[tokio::test(start_paused = true)]
async fn uncordon_and_ready_again_reschedule_pending_pods() {
    let (_s, c) = start().await;
    let mut n = node("n1", "2", "2Gi", json!({}));
    n["spec"]["unschedulable"] = json!(true);
    add(&c, n).await;
    add(&c, pod("p", "100m", "")).await;
    settle().await;
    assert_eq!(
        scheduled_condition(&c, "p").await.unwrap().2,
        "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are \
         available: 1 Preemption is not helpful for scheduling."
    );
    // NotReady and uncordoned: now the not-ready taint keeps it out.
    patch_node(
        &c,
        "n1",
        Some("status"),
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    )
    .await;
    patch_node(&c, "n1", None, json!({"spec": {"unschedulable": false}})).await;
    settle().await;
    assert_eq!(node_of(&c, "p").await, None);
    assert_eq!(
        scheduled_condition(&c, "p").await.unwrap().2,
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: \
         }. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    assert_eq!(failed_scheduling_events(&c, "p").await.len(), 2);
    patch_node(
        &c,
        "n1",
        Some("status"),
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "p").await.as_deref(), Some("n1"));
}

#[tokio::test(start_paused = true)]
async fn terminating_pods_count_until_gone_and_terminal_pods_do_not() {
    let (_s, c) = start().await;
    add(&c, node("n1", "1", "1Gi", json!({}))).await;
    add(&c, pod("a", "1", "")).await;
    settle().await;
    assert_eq!(node_of(&c, "a").await.as_deref(), Some("n1"));
    add(&c, pod("b", "1", "")).await;
    settle().await;
    assert_eq!(node_of(&c, "b").await, None);
    // Graceful deletion of a bound pod: it is terminating (nobody confirms it), still counted.
    let gone = c
        .delete(&c.res.pods, "default", "a", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(!gone);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(node_of(&c, "b").await, None);
    let opts = DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    c.delete(&c.res.pods, "default", "a", &opts).await.unwrap();
    settle().await;
    assert_eq!(node_of(&c, "b").await.as_deref(), Some("n1"));

    // A pod placed by someone else is counted; once Succeeded it is not.
    add(&c, node("n2", "1", "1Gi", json!({}))).await;
    add(
        &c,
        with(pod("preset", "600m", ""), "/spec/nodeName", json!("n2")),
    )
    .await;
    add(&c, pod("d", "600m", "")).await;
    settle().await;
    assert_eq!(node_of(&c, "d").await, None);
    c.merge_patch(
        &c.res.pods,
        "default",
        "preset",
        Some("status"),
        json!({"status": {"phase": "Succeeded"}}),
    )
    .await
    .unwrap();
    settle().await;
    assert_eq!(node_of(&c, "d").await.as_deref(), Some("n2"));
}

#[tokio::test(start_paused = true)]
async fn unschedulable_pods_are_retried_by_the_periodic_flush() {
    let (_s, c) = start().await;
    let mut n = node("n1", "1", "1Gi", json!({}));
    n["status"]["allocatable"]["pods"] = json!("2");
    add(&c, n).await;
    add(&c, pod("a", "800m", "")).await;
    add(&c, pod("p", "500m", "")).await;
    settle().await;
    let cpu_only = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are \
                    available: 1 No preemption victims found for incoming pod.";
    assert_eq!(scheduled_condition(&c, "p").await.unwrap().2, cpu_only);
    // A pod placed by someone else fills the last pod slot. Adding an assigned pod cannot make
    // room, so `p` is not retried for it; the periodic flush (every 60 s) retries it anyway.
    add(&c, with(pod("q", "", ""), "/spec/nodeName", json!("n1"))).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(scheduled_condition(&c, "p").await.unwrap().2, cpu_only);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let both = "0/1 nodes are available: 1 Insufficient cpu, 1 Too many pods. preemption: 0/1 \
                nodes are available: 1 No preemption victims found for incoming pod.";
    assert_eq!(scheduled_condition(&c, "p").await.unwrap().2, both);
    assert_eq!(
        failed_scheduling_events(&c, "p").await,
        vec![cpu_only, both]
    );
}

#[tokio::test(start_paused = true)]
async fn pod_affinity_to_a_pod_the_scheduler_places() {
    let (_s, c) = start().await;
    for n in ["n1", "n2", "n3"] {
        add(&c, node(n, "4", "8Gi", json!({}))).await;
    }
    let follower = with(
        pod("follower", "100m", ""),
        "/spec/affinity",
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "leader"}},
             "topologyKey": "kubernetes.io/hostname"}]}}),
    );
    add(&c, follower).await;
    settle().await;
    assert_eq!(node_of(&c, "follower").await, None);
    add(
        &c,
        with(
            pod("leader", "100m", ""),
            "/metadata/labels",
            json!({"app": "leader"}),
        ),
    )
    .await;
    settle().await;
    let leader = node_of(&c, "leader").await;
    assert!(leader.is_some());
    assert_eq!(node_of(&c, "follower").await, leader);
}

#[tokio::test(start_paused = true)]
async fn pods_per_node_limit() {
    let (_s, c) = start().await;
    let mut n = node("n1", "8", "8Gi", json!({}));
    n["status"]["allocatable"]["pods"] = json!("2");
    add(&c, n).await;
    for i in 0..3 {
        add(&c, pod(&format!("p{i}"), "", "")).await;
    }
    settle().await;
    assert_eq!(node_of(&c, "p0").await.as_deref(), Some("n1"));
    assert_eq!(node_of(&c, "p1").await.as_deref(), Some("n1"));
    assert_eq!(node_of(&c, "p2").await, None);
    assert_eq!(
        scheduled_condition(&c, "p2").await.unwrap().2,
        "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No \
         preemption victims found for incoming pod."
    );
}

#[tokio::test(start_paused = true)]
async fn anti_affinity_by_hostname() {
    let (_s, c) = start().await;
    for n in ["n1", "n2", "n3"] {
        add(&c, node(n, "4", "8Gi", json!({}))).await;
    }
    for i in 0..4 {
        let p = anti_affinity(
            pod(&format!("web-{i}"), "100m", ""),
            "web",
            "kubernetes.io/hostname",
        );
        add(&c, p).await;
    }
    settle().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node_of(&c, &format!("web-{i}")).await.unwrap());
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    assert_eq!(node_of(&c, "web-3").await, None);
    assert_eq!(
        scheduled_condition(&c, "web-3").await.unwrap().2,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: \
         0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // One replica goes away: the fourth takes its place.
    let opts = DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    let freed = node_of(&c, "web-1").await;
    c.delete(&c.res.pods, "default", "web-1", &opts)
        .await
        .unwrap();
    settle().await;
    assert_eq!(node_of(&c, "web-3").await, freed);
}

/// The scheduler keeps what it derived from a pod while metadata and spec stay the same (status
/// writes): a change of labels alone must still reach its view.
#[tokio::test(start_paused = true)]
async fn a_relabeled_pod_counts_with_its_new_labels() {
    let (_s, c) = start().await;
    add(&c, node("n1", "4", "8Gi", json!({}))).await;
    add(
        &c,
        with(
            pod("db-0", "100m", ""),
            "/metadata/labels",
            json!({"app": "cache"}),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "db-0").await.as_deref(), Some("n1"));
    // Status writes in between (the scheduler sees new versions with the same labels).
    c.merge_patch(
        &c.res.pods,
        "default",
        "db-0",
        Some("status"),
        json!({"status": {"phase": "Running"}}),
    )
    .await
    .unwrap();
    settle().await;
    c.merge_patch(
        &c.res.pods,
        "default",
        "db-0",
        None,
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await
    .unwrap();
    settle().await;
    // A pod that refuses to share a node with app=db now has nowhere to go.
    add(
        &c,
        anti_affinity(pod("db-1", "100m", ""), "db", "kubernetes.io/hostname"),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "db-1").await, None);
    // And one that avoids app=cache fits: the old label is gone from the scheduler's view.
    add(
        &c,
        anti_affinity(
            pod("cache-1", "100m", ""),
            "cache",
            "kubernetes.io/hostname",
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "cache-1").await.as_deref(), Some("n1"));
}

#[tokio::test(start_paused = true)]
async fn anti_affinity_by_zone_and_existing_pods_anti_affinity() {
    let (_s, c) = start().await;
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
        add(
            &c,
            node(n, "4", "8Gi", json!({"topology.kubernetes.io/zone": z})),
        )
        .await;
    }
    for i in 0..4 {
        let p = anti_affinity(
            pod(&format!("db-{i}"), "100m", ""),
            "db",
            "topology.kubernetes.io/zone",
        );
        add(&c, p).await;
    }
    settle().await;
    let mut zones = Vec::new();
    for i in 0..3 {
        let n = node_of(&c, &format!("db-{i}")).await.unwrap();
        zones.push(n[..1].to_string());
    }
    zones.sort();
    assert_eq!(zones, ["a", "b", "c"]);
    assert_eq!(node_of(&c, "db-3").await, None);
    assert_eq!(
        scheduled_condition(&c, "db-3").await.unwrap().2,
        "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules. preemption: \
         0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );
    // A pod without affinity but labelled app=db is kept out of every zone by the existing pods'
    // anti-affinity.
    add(
        &c,
        with(
            pod("intruder", "100m", ""),
            "/metadata/labels",
            json!({"app": "db"}),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "intruder").await, None);
    assert_eq!(
        scheduled_condition(&c, "intruder").await.unwrap().2,
        "0/4 nodes are available: 4 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );
    // Another namespace is not selected by the terms.
    let other = with(
        with(
            pod("other-ns", "100m", ""),
            "/metadata/labels",
            json!({"app": "db"}),
        ),
        "/metadata/namespace",
        json!("kube-system"),
    );
    add(&c, other).await;
    settle().await;
    let p = c.get(&c.res.pods, "kube-system", "other-ns").await.unwrap();
    assert!(p.value.pointer("/spec/nodeName").is_some());
}

#[tokio::test(start_paused = true)]
async fn required_pod_affinity() {
    let (_s, c) = start().await;
    for n in ["n1", "n2", "n3"] {
        add(&c, node(n, "4", "8Gi", json!({}))).await;
    }
    let affine = |name: &str| {
        with(
            pod(name, "100m", ""),
            "/spec/affinity",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "cache"}},
                 "topologyKey": "kubernetes.io/hostname"}]}}),
        )
    };
    add(&c, affine("follower")).await;
    settle().await;
    assert_eq!(node_of(&c, "follower").await, None);
    assert_eq!(
        scheduled_condition(&c, "follower").await.unwrap().2,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 \
         nodes are available: 3 Preemption is not helpful for scheduling."
    );
    let cache = with(
        with(
            pod("cache", "100m", ""),
            "/metadata/labels",
            json!({"app": "cache"}),
        ),
        "/spec/nodeName",
        json!("n2"),
    );
    add(&c, cache).await;
    settle().await;
    assert_eq!(node_of(&c, "follower").await.as_deref(), Some("n2"));
    // The first pod of a group with affinity to itself may go anywhere.
    let mut selfish = with(
        affine("first-cache"),
        "/metadata/labels",
        json!({"app": "cache2"}),
    );
    selfish["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        [0]["labelSelector"] = json!({"matchLabels": {"app": "cache2"}});
    add(&c, selfish).await;
    settle().await;
    assert!(node_of(&c, "first-cache").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn replicas_of_one_owner_are_spread_over_nodes_and_zones() {
    let (_s, c) = start().await;
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        add(
            &c,
            node(n, "8", "16Gi", json!({"topology.kubernetes.io/zone": z})),
        )
        .await;
    }
    for i in 0..4 {
        add(&c, owned(pod(&format!("r-{i}"), "100m", "128Mi"), "uid-rs")).await;
    }
    settle().await;
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let n = node_of(&c, &format!("r-{i}")).await.unwrap();
        *per_zone.entry(n[..1].to_string()).or_default() += 1;
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
    assert!(per_node.values().all(|c| *c == 1));

    // Without zones: 6 replicas on 3 nodes are 2, 2, 2.
    let (_s, c) = start().await;
    for n in ["n1", "n2", "n3"] {
        add(&c, node(n, "8", "16Gi", json!({}))).await;
    }
    for i in 0..6 {
        add(
            &c,
            owned(pod(&format!("r-{i}"), "100m", "128Mi"), "uid-rs2"),
        )
        .await;
    }
    settle().await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(node_of(&c, &format!("r-{i}")).await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
}

#[tokio::test(start_paused = true)]
async fn other_schedulers_gated_and_deleting_pods_are_left_alone() {
    let (_s, c) = start().await;
    add(&c, node("n1", "4", "8Gi", json!({}))).await;
    add(
        &c,
        with(
            pod("other", "", ""),
            "/spec/schedulerName",
            json!("my-scheduler"),
        ),
    )
    .await;
    add(
        &c,
        with(
            pod("gated", "", ""),
            "/spec/schedulingGates",
            json!([{"name": "wait"}]),
        ),
    )
    .await;
    settle().await;
    assert_eq!(node_of(&c, "other").await, None);
    assert_eq!(node_of(&c, "gated").await, None);
    assert_eq!(scheduled_condition(&c, "other").await, None);
    c.merge_patch(
        &c.res.pods,
        "default",
        "gated",
        None,
        json!({"spec": {"schedulingGates": null}}),
    )
    .await
    .ok();
    settle().await;
    // Whether the API allows removing the gate decides; if it did, the pod is scheduled.
    let gated = pod_obj(&c, "gated").await;
    if gated.pointer("/spec/schedulingGates").is_none() {
        assert_eq!(node_of(&c, "gated").await.as_deref(), Some("n1"));
    }
}

#[tokio::test(start_paused = true)]
async fn later_kubernetes_wording_hides_taint_values() {
    let config = SchedulerConfig {
        hide_taint_values: true,
        ..Default::default()
    };
    let (_s, c) = start_with(config).await;
    let mut n = node("n1", "4", "8Gi", json!({}));
    n["spec"]["taints"] = json!([{"key": "k", "value": "v", "effect": "NoExecute"}]);
    add(&c, n).await;
    add(&c, pod("p", "", "")).await;
    settle().await;
    assert_eq!(
        scheduled_condition(&c, "p").await.unwrap().2,
        "0/1 nodes are available: 1 node(s) had untolerated taint(s). preemption: 0/1 nodes are \
         available: 1 Preemption is not helpful for scheduling."
    );
}

#[tokio::test(start_paused = true)]
async fn no_nodes_at_all() {
    let (_s, c) = start().await;
    add(&c, pod("p", "", "")).await;
    settle().await;
    assert_eq!(
        scheduled_condition(&c, "p").await.unwrap(),
        (
            "False".into(),
            "Unschedulable".into(),
            "no nodes available to schedule pods".into()
        )
    );
    add(&c, node("n1", "1", "1Gi", json!({}))).await;
    settle().await;
    assert_eq!(node_of(&c, "p").await.as_deref(), Some("n1"));
}

async fn scenario() -> BTreeMap<String, Option<String>> {
    let (_s, c) = start().await;
    for i in 0..7 {
        let zone = ["a", "b", "c"][i % 3];
        let cpu = ["2", "4", "3"][i % 3];
        add(
            &c,
            node(
                &format!("node-{i}"),
                cpu,
                "8Gi",
                json!({"topology.kubernetes.io/zone": zone}),
            ),
        )
        .await;
    }
    for i in 0..40 {
        let mut p = owned(
            pod(&format!("p-{i}"), ["100m", "250m", "500m"][i % 3], "256Mi"),
            ["o1", "o2", "o3", "o4"][i % 4],
        );
        if i % 5 == 0 {
            p = anti_affinity(p, &format!("g{}", i % 2), "kubernetes.io/hostname");
        }
        add(&c, p).await;
    }
    settle().await;
    placements(&c).await
}

#[tokio::test(start_paused = true)]
async fn same_inputs_same_placement() {
    let first = scenario().await;
    let second = scenario().await;
    assert_eq!(first.len(), 40);
    assert!(first.values().all(Option::is_some));
    assert_eq!(first, second);
}

// ---------------------------------------------------------------------------------------------
// Pure logic
// ---------------------------------------------------------------------------------------------

#[test]
fn quantities() {
    let cases: &[(&str, Option<i64>, Option<i64>)] = &[
        ("100m", Some(1), Some(100)),
        ("1", Some(1), Some(1000)),
        ("1.5", Some(2), Some(1500)),
        ("0.1", Some(1), Some(100)),
        ("128Mi", Some(134_217_728), Some(134_217_728_000)),
        ("1Gi", Some(1 << 30), Some(1_073_741_824_000)),
        ("1G", Some(1_000_000_000), Some(1_000_000_000_000)),
        ("500k", Some(500_000), Some(500_000_000)),
        ("2e3", Some(2000), Some(2_000_000)),
        ("1E", Some(1_000_000_000_000_000_000), Some(i64::MAX)),
        ("1.5Gi", Some(1_610_612_736), Some(1_610_612_736_000)),
        ("250u", Some(1), Some(1)),
        ("0", Some(0), Some(0)),
        ("-100m", Some(0), Some(-100)),
        ("+2", Some(2), Some(2000)),
        (".5", Some(1), Some(500)),
        ("1e-3", Some(1), Some(1)),
        ("", None, None),
        ("abc", None, None),
        ("1Qi", None, None),
        ("1.2.3", None, None),
        ("1e", None, None),
    ];
    for (s, v, m) in cases {
        assert_eq!(parse_quantity(s), *v, "value of {s:?}");
        assert_eq!(parse_quantity_milli(s), *m, "milli value of {s:?}");
    }
}

#[test]
fn pod_requests_follow_the_real_rules() {
    let p = PodInfo::from_json(&json!({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "300m", "memory": "1Gi"}}},
                {"name": "c"}],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
                {"name": "sidecar", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}}}],
            "overhead": {"cpu": "10m"}}}));
    // cpu: max(200 + 300 + 100 sidecar, 2000) + 10 overhead; memory: 100Mi + 1Gi + 50Mi.
    assert_eq!(p.requests.milli_cpu, 2010);
    assert_eq!(p.requests.memory, (100 + 1024 + 50) << 20);
    // Scoring substitutes 100m / 200Mi for the container that requests nothing.
    assert_eq!(p.non_zero.milli_cpu, 2010);
    assert_eq!(p.non_zero.memory, (100 + 1024 + 200 + 50) << 20);
}

#[test]
fn fit_error_messages_sort_like_the_real_histogram() {
    let mut cache = SchedulerCache::default();
    let mut names = Vec::new();
    for i in 0..12 {
        let mut n = node(&format!("n{i:02}"), "1", "1Gi", json!({}));
        if i < 10 {
            n["spec"]["taints"] = json!([{"key": "x", "effect": "NoSchedule"}]);
        }
        names.push(n["metadata"]["name"].as_str().unwrap().to_string());
        cache.set_node(NodeInfo::from_json(&n));
    }
    let p = PodInfo::from_json(&pod("p", "2", ""));
    let err = cache.schedule(&p).unwrap_err();
    // "10 ..." sorts before "2 ..." as strings, as in Go.
    assert_eq!(
        err.message(),
        "0/12 nodes are available: 10 node(s) had untolerated taint {x: }, 2 Insufficient cpu. \
         preemption: 0/12 nodes are available: 12 Preemption is not helpful for scheduling."
    );
    // The request exceeds allocatable: unresolvable. A smaller one that does not fit right now is
    // resolvable; preemptionPolicy Never changes the second part.
    let big = PodInfo::from_json(&pod("q", "700m", ""));
    cache.add_pod(Arc::new(big.clone()), "n10");
    cache.add_pod(Arc::new(PodInfo::from_json(&pod("r", "700m", ""))), "n11");
    let err = cache.schedule(&big).unwrap_err();
    assert_eq!(
        err.message(),
        "0/12 nodes are available: 10 node(s) had untolerated taint {x: }, 2 Insufficient cpu. \
         preemption: 0/12 nodes are available: 10 Preemption is not helpful for scheduling, 2 No \
         preemption victims found for incoming pod."
    );
    let never = PodInfo {
        preemption_never: true,
        ..big
    };
    assert!(
        cache.schedule(&never).unwrap_err().message().ends_with(
            "2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        )
    );
}

#[test]
fn node_affinity_operators() {
    let n = NodeInfo::from_json(&node("n1", "1", "1Gi", json!({"gen": "5", "disk": "ssd"})));
    let usage = NodeUsage::default();
    let fits = |affinity: Value| {
        let p = with(pod("p", "", ""), "/spec/affinity", affinity);
        scheduler::feasible(&PodInfo::from_json(&p), &n, &usage)
    };
    let term = |exprs: Value| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs}]}}})
    };
    let e = |k: &str, op: &str, v: Value| json!([{"key": k, "operator": op, "values": v}]);
    assert!(fits(term(e("gen", "Gt", json!(["4"])))).is_ok());
    assert!(fits(term(e("gen", "Gt", json!(["5"])))).is_err());
    assert!(fits(term(e("gen", "Lt", json!(["6"])))).is_ok());
    assert!(fits(term(e("disk", "In", json!(["ssd", "nvme"])))).is_ok());
    assert!(fits(term(e("disk", "NotIn", json!(["ssd"])))).is_err());
    assert!(fits(term(e("zone", "NotIn", json!(["a"])))).is_ok());
    assert!(fits(term(e("disk", "Exists", json!(null)))).is_ok());
    assert!(fits(term(e("zone", "DoesNotExist", json!(null)))).is_ok());
    assert_eq!(
        fits(term(e("zone", "Exists", json!(null)))),
        Err(vec![Reason::NodeAffinity])
    );
    // Terms are ORed; an empty term matches nothing.
    let two = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{}, {"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}});
    assert!(fits(two).is_ok());
    let empty = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{}]}}});
    assert!(fits(empty).is_err());
}

// ----- property tests -----

#[derive(Clone, Debug)]
struct GenNode {
    cpu: i64,
    mem_mi: i64,
    pods: i64,
    taints: Vec<(String, String, String)>,
    zone: String,
    disk: Option<String>,
    unschedulable: bool,
    ready: bool,
}

#[derive(Clone, Debug)]
struct GenPod {
    cpu: i64,
    mem_mi: i64,
    app: String,
    tolerations: Vec<Value>,
    ssd: bool,
    anti: Option<(String, String)>,
    owner: Option<String>,
}

const TAINTS: &[(&str, &str, &str)] = &[
    ("dedicated", "gpu", "NoSchedule"),
    ("maintenance", "", "NoExecute"),
    ("spot", "true", "PreferNoSchedule"),
];

fn gen_node() -> impl Strategy<Value = GenNode> {
    (
        0i64..4000,
        0i64..4096,
        1i64..6,
        proptest::sample::subsequence(TAINTS.to_vec(), 0..=2),
        prop_oneof![Just("a"), Just("b"), Just("c")],
        prop_oneof![Just(None), Just(Some("ssd")), Just(Some("hdd"))],
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.9),
    )
        .prop_map(
            |(cpu, mem_mi, pods, taints, zone, disk, unschedulable, ready)| GenNode {
                cpu,
                mem_mi,
                pods,
                taints: taints
                    .into_iter()
                    .map(|(k, v, e)| (k.to_string(), v.to_string(), e.to_string()))
                    .collect(),
                zone: zone.to_string(),
                disk: disk.map(str::to_string),
                unschedulable,
                ready,
            },
        )
}

fn gen_pod() -> impl Strategy<Value = GenPod> {
    let toleration = prop_oneof![
        Just(
            json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"})
        ),
        Just(json!({"key": "dedicated", "operator": "Equal", "value": "tpu"})),
        Just(json!({"key": "maintenance", "operator": "Exists"})),
        Just(
            json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"})
        ),
        Just(json!({"operator": "Exists"})),
        Just(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
    ];
    (
        prop_oneof![Just(0i64), 1i64..1500],
        prop_oneof![Just(0i64), 1i64..1500],
        prop_oneof![Just("x"), Just("y"), Just("z")],
        proptest::collection::vec(toleration, 0..3),
        proptest::bool::weighted(0.2),
        proptest::option::weighted(
            0.4,
            (
                prop_oneof![Just("x"), Just("y")],
                prop_oneof![
                    Just("kubernetes.io/hostname"),
                    Just("topology.kubernetes.io/zone")
                ],
            ),
        ),
        proptest::option::of(prop_oneof![Just("o1"), Just("o2")]),
    )
        .prop_map(|(cpu, mem_mi, app, tolerations, ssd, anti, owner)| GenPod {
            cpu,
            mem_mi,
            app: app.to_string(),
            tolerations,
            ssd,
            anti: anti.map(|(a, t)| (a.to_string(), t.to_string())),
            owner: owner.map(str::to_string),
        })
}

fn node_json(i: usize, g: &GenNode) -> Value {
    let mut labels = json!({"topology.kubernetes.io/zone": g.zone});
    if let Some(d) = &g.disk {
        labels["disk"] = json!(d);
    }
    let mut n = node(
        &format!("n{i}"),
        &format!("{}m", g.cpu),
        &format!("{}Mi", g.mem_mi),
        labels,
    );
    n["status"]["allocatable"]["pods"] = json!(g.pods.to_string());
    n["spec"]["unschedulable"] = json!(g.unschedulable);
    n["spec"]["taints"] = json!(
        g.taints
            .iter()
            .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
            .collect::<Vec<_>>()
    );
    if !g.ready {
        n["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    }
    n
}

fn pod_json(i: usize, g: &GenPod) -> Value {
    let mut p = pod(
        &format!("p{i}"),
        &if g.cpu > 0 {
            format!("{}m", g.cpu)
        } else {
            String::new()
        },
        &if g.mem_mi > 0 {
            format!("{}Mi", g.mem_mi)
        } else {
            String::new()
        },
    );
    p["metadata"]["uid"] = json!(format!("uid-{i}"));
    p["metadata"]["labels"] = json!({"app": g.app});
    p["spec"]["tolerations"] = json!(g.tolerations);
    if g.ssd {
        p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    }
    if let Some((app, topo)) = &g.anti {
        p["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": topo}]}});
    }
    if let Some(o) = &g.owner {
        p = owned(p, o);
    }
    p
}

/// An independent, brute-force statement of the filters for the generated shapes.
fn oracle_tolerates(p: &GenPod, key: &str, value: &str, effect: &str) -> bool {
    p.tolerations.iter().any(|t| {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
        (s("effect").is_empty() || s("effect") == effect)
            && (s("key").is_empty() || s("key") == key)
            && match s("operator") {
                "Exists" => true,
                _ => s("value") == value,
            }
    })
}

fn oracle_node_ok(p: &GenPod, n: &GenNode) -> bool {
    (!n.unschedulable || oracle_tolerates(p, "node.kubernetes.io/unschedulable", "", "NoSchedule"))
        && (n.ready || oracle_tolerates(p, "node.kubernetes.io/not-ready", "", "NoSchedule"))
        && n.taints
            .iter()
            .filter(|(_, _, e)| e != "PreferNoSchedule")
            .all(|(k, v, e)| oracle_tolerates(p, k, v, e))
        && (!p.ssd || n.disk.as_deref() == Some("ssd"))
}

fn topo(nodes: &[GenNode], n: usize, key: &str) -> String {
    if key == "kubernetes.io/hostname" {
        format!("n{n}")
    } else {
        nodes[n].zone.clone()
    }
}

/// Whether pods `a` on node `na` and `b` on node `nb` violate a's anti-affinity.
fn oracle_conflict(nodes: &[GenNode], a: &GenPod, na: usize, b: &GenPod, nb: usize) -> bool {
    a.anti
        .as_ref()
        .is_some_and(|(app, key)| b.app == *app && topo(nodes, na, key) == topo(nodes, nb, key))
}

fn oracle_fits(
    nodes: &[GenNode],
    placed: &[(usize, usize)],
    pods: &[GenPod],
    p: &GenPod,
    n: usize,
) -> bool {
    let on: Vec<&GenPod> = placed
        .iter()
        .filter(|(_, pn)| *pn == n)
        .map(|(i, _)| &pods[*i])
        .collect();
    let cpu: i64 = on.iter().map(|q| q.cpu).sum();
    let mem: i64 = on.iter().map(|q| q.mem_mi).sum();
    oracle_node_ok(p, &nodes[n])
        && (on.len() as i64) < nodes[n].pods
        && (p.cpu == 0 || cpu + p.cpu <= nodes[n].cpu)
        && (p.mem_mi == 0 || mem + p.mem_mi <= nodes[n].mem_mi)
        && placed.iter().all(|(i, pn)| {
            !oracle_conflict(nodes, p, n, &pods[*i], *pn)
                && !oracle_conflict(nodes, &pods[*i], *pn, p, n)
        })
}

/// Schedules the pods in order through the pure logic; returns each pod's node index.
fn run_pure(nodes: &[GenNode], pods: &[GenPod]) -> (Vec<Option<usize>>, Vec<FitError>) {
    let mut cache = SchedulerCache::default();
    for (i, n) in nodes.iter().enumerate() {
        cache.set_node(NodeInfo::from_json(&node_json(i, n)));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let info = PodInfo::from_json(&pod_json(i, p));
        match cache.schedule(&info) {
            Ok(node) => {
                cache.add_pod(Arc::new(info), &node);
                out.push(Some(node[1..].parse::<usize>().unwrap()));
            }
            Err(e) => {
                errors.push(e);
                out.push(None);
            }
        }
    }
    (out, errors)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn placements_respect_every_filter(
        nodes in proptest::collection::vec(gen_node(), 1..8),
        pods in proptest::collection::vec(gen_pod(), 1..40),
    ) {
        let (placement, errors) = run_pure(&nodes, &pods);
        let mut placed: Vec<(usize, usize)> = Vec::new();
        for (i, (p, at)) in pods.iter().zip(&placement).enumerate() {
            match at {
                Some(n) => {
                    // Never on a tainted, cordoned, not-ready or unselected node, never over
                    // capacity, never against anyone's anti-affinity.
                    prop_assert!(oracle_fits(&nodes, &placed, &pods, p, *n),
                        "pod {i} {p:?} on n{n} {:?}", nodes[*n]);
                    placed.push((i, *n));
                }
                None => {
                    // And never left pending while some node fits.
                    for n in 0..nodes.len() {
                        prop_assert!(!oracle_fits(&nodes, &placed, &pods, p, n),
                            "pod {i} {p:?} fits n{n} {:?}", nodes[n]);
                    }
                }
            }
        }
        for e in &errors {
            prop_assert_eq!(e.num_all_nodes, nodes.len());
            prop_assert_eq!(e.resolvable_nodes + e.unresolvable_nodes, nodes.len());
            let prefix = format!("0/{} nodes are available: ", nodes.len());
            prop_assert!(e.message().starts_with(&prefix), "{}", e.message());
        }
        // Totals per node, from scratch.
        for (n, g) in nodes.iter().enumerate() {
            let on: Vec<&GenPod> = placed.iter().filter(|(_, pn)| *pn == n).map(|(i, _)| &pods[*i]).collect();
            prop_assert!(on.iter().map(|p| p.cpu).sum::<i64>() <= g.cpu);
            prop_assert!(on.iter().map(|p| p.mem_mi).sum::<i64>() <= g.mem_mi);
            prop_assert!(on.len() as i64 <= g.pods);
        }
    }

    #[test]
    fn same_inputs_same_placements(
        nodes in proptest::collection::vec(gen_node(), 1..8),
        pods in proptest::collection::vec(gen_pod(), 1..30),
    ) {
        let a = run_pure(&nodes, &pods);
        let b = run_pure(&nodes, &pods);
        prop_assert_eq!(a.0, b.0);
        prop_assert_eq!(a.1, b.1);
    }

    #[test]
    fn quantity_parser_never_panics(s in "[-+]?[0-9.]{0,12}([eE][-+]?[0-9]{1,3}|[numkMGTPE]|[KMGTPE]i)?") {
        let _ = parse_quantity(&s);
        let _ = parse_quantity_milli(&s);
    }

    #[test]
    fn integer_quantities_round_trip(v in 0i64..1_000_000_000, suffix in 0usize..4) {
        let (s, want) = match suffix {
            0 => (format!("{v}"), v),
            1 => (format!("{v}k"), v * 1000),
            2 => (format!("{v}Ki"), v * 1024),
            _ => (format!("{v}m"), (v + 999) / 1000),
        };
        prop_assert_eq!(parse_quantity(&s), Some(want));
    }
}

/// A large cluster: scheduling a burst of pods stays fast, and placement only uses indices.
#[test]
fn scales_to_thousands_of_nodes() {
    let mut cache = SchedulerCache::default();
    for i in 0..5000 {
        let n = node(
            &format!("node-{i:05}"),
            "16",
            "64Gi",
            json!({"topology.kubernetes.io/zone": format!("z{}", i % 3)}),
        );
        cache.set_node(NodeInfo::from_json(&n));
    }
    // 100,000 bound pods.
    for i in 0..100_000 {
        let mut p = owned(
            pod(&format!("bound-{i}"), "100m", "256Mi"),
            &format!("o{}", i % 500),
        );
        p["metadata"]["labels"] = json!({"app": format!("a{}", i % 500)});
        if i % 10 == 0 {
            p = anti_affinity(p, &format!("a{}", i % 500), "kubernetes.io/hostname");
        }
        cache.add_pod(
            Arc::new(PodInfo::from_json(&p)),
            &format!("node-{:05}", i % 5000),
        );
    }
    for i in 0..300 {
        let mut p = owned(pod(&format!("new-{i}"), "200m", "512Mi"), "new-owner");
        p = anti_affinity(p, "new", "kubernetes.io/hostname");
        let info = PodInfo::from_json(&p);
        let n = cache.schedule(&info).unwrap();
        cache.add_pod(Arc::new(info), &n);
    }
    // Every node now holds at most one "new" pod.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..300 {
        let key = format!("default/new-{i}");
        let (_, n) = cache.counted(&key).unwrap();
        assert!(seen.insert(n.to_string()));
    }
}

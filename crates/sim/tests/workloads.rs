//! Workload controllers (ReplicaSet, Deployment, StatefulSet, DaemonSet, Job) on a paused clock.
//! The tests play the scheduler and the kubelets themselves: they bind pending pods and mark
//! bound pods Running and, after a while, Ready. A watcher checks invariants after every single
//! pod change (every revision of the store), not only at the points where the test looks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams};
use serde_json::{Value, json};
use theseus_sim::cluster::{Change, Cluster};
use theseus_sim::controllers::deployment::{DeploymentConfig, spawn_deployment};
use theseus_sim::controllers::workloads::{
    DaemonSetConfig, JobConfig, ReplicaSetConfig, StatefulSetConfig, spawn_daemonset, spawn_job,
    spawn_replicaset, spawn_statefulset,
};
use theseus_sim::kubelet::{TerminationPolicy, spawn_termination_confirmer};
use theseus_sim::rest::DeleteOptions;
use theseus_sim::store::EventType;
use theseus_sim::{ApiServer, ServerConfig};
use tokio::time::Instant;

// ----------------------------------------------------------------------------------------------
// Harness

async fn start() -> (Arc<ApiServer>, Cluster) {
    let server = ApiServer::new(ServerConfig::default()).await;
    let cluster = Cluster::new(server.clone()).unwrap();
    spawn_termination_confirmer(server.clone(), TerminationPolicy::default());
    (server, cluster)
}

/// Lets everything run for `ms` of virtual time.
async fn run_for(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn add_node(c: &Cluster, name: &str, labels: Value, spec: Value) {
    c.create(
        &c.res.nodes,
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .await
    .unwrap();
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn name(v: &Value) -> String {
    s(v, "/metadata/name").to_string()
}

fn terminating(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some()
}

fn active(p: &Value) -> bool {
    !terminating(p) && !matches!(s(p, "/status/phase"), "Succeeded" | "Failed")
}

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn owner_uid(p: &Value) -> &str {
    s(p, "/metadata/ownerReferences/0/uid")
}

fn label<'a>(v: &'a Value, k: &str) -> &'a str {
    v.pointer("/metadata/labels")
        .and_then(|l| l.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn pods(c: &Cluster) -> Vec<Value> {
    c.list(&c.res.pods, None)
        .await
        .unwrap()
        .0
        .iter()
        .map(|o| o.value.to_value())
        .collect()
}

async fn get(c: &Cluster, r: &theseus_sim::registry::ResourceInfo, name: &str) -> Value {
    c.get(r, "default", name).await.unwrap().value.to_value()
}

async fn events(c: &Cluster) -> Vec<String> {
    c.list(&c.res.events, None)
        .await
        .unwrap()
        .0
        .iter()
        .map(|e| s(&e.value.to_value(), "/message").to_string())
        .collect()
}

/// The scheduler and the kubelets, played by the test: binds pending pods (a DaemonSet pod to the
/// node its affinity names, others round-robin), starts bound pods, marks them Ready after
/// `ready_after`.
struct Fake {
    nodes: Vec<String>,
    next: usize,
    ready_after: Duration,
    running: BTreeMap<String, Instant>,
}

impl Fake {
    fn new(nodes: &[&str], ready_after: Duration) -> Self {
        Fake {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            next: 0,
            ready_after,
            running: BTreeMap::new(),
        }
    }

    async fn step(&mut self, c: &Cluster) {
        let now = c.server.clock.timestamp();
        for p in pods(c).await {
            if terminating(&p) || matches!(s(&p, "/status/phase"), "Succeeded" | "Failed") {
                continue;
            }
            let (ns, pn) = (s(&p, "/metadata/namespace"), name(&p));
            let uid = s(&p, "/metadata/uid").to_string();
            if s(&p, "/spec/nodeName").is_empty() {
                let target = p
                    .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let node = match target {
                    Some(t) => t,
                    None if self.nodes.is_empty() => continue,
                    None => {
                        self.next += 1;
                        self.nodes[self.next % self.nodes.len()].clone()
                    }
                };
                let _ = c.bind(ns, &pn, &node).await;
            } else if s(&p, "/status/phase") == "Pending" {
                let ip = format!("10.0.0.{}", self.running.len() % 250 + 1);
                let st = json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
                if c.merge_patch(&c.res.pods, ns, &pn, Some("status"), st)
                    .await
                    .is_ok()
                {
                    self.running.insert(uid, Instant::now());
                }
            } else if !ready(&p)
                && self
                    .running
                    .get(&uid)
                    .is_none_or(|t| t.elapsed() >= self.ready_after)
            {
                let st = json!({"status": {"conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = c
                    .merge_patch(&c.res.pods, ns, &pn, Some("status"), st)
                    .await;
            }
        }
    }

    /// Steps every `every_ms` until `done` holds (or `max` steps).
    async fn until<F, Fut>(&mut self, c: &Cluster, every_ms: u64, max: usize, mut done: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..max {
            self.step(c).await;
            run_for(every_ms).await;
            if done().await {
                return true;
            }
        }
        false
    }
}

type Check = Box<dyn Fn(&BTreeMap<String, Value>) -> Option<String> + Send>;

/// Checks `check` over all pods after every pod change; returns the violations seen.
fn watch_pods(c: &Cluster, check: Check) -> Arc<Mutex<Vec<String>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let mut rx = c.informer_channel(&c.res.pods);
    tokio::spawn(async move {
        let mut state: BTreeMap<String, Value> = BTreeMap::new();
        while let Some(change) = rx.recv().await {
            match change {
                Change::Sync(items) => {
                    state = items
                        .iter()
                        .map(|o| (name(&o.value.to_value()), o.value.to_value()))
                        .collect();
                }
                Change::Event(e) => {
                    let k = name(&e.object.value.to_value());
                    if e.kind == EventType::Deleted {
                        state.remove(&k);
                    } else {
                        state.insert(k, e.object.value.to_value());
                    }
                }
            }
            if let Some(v) = check(&state) {
                let mut o = sink.lock().unwrap();
                if o.len() < 20 {
                    o.push(v);
                }
            }
        }
    });
    out
}

fn container() -> Value {
    json!([{"name": "c", "image": "nginx:1.27"}])
}

fn rs_manifest(name: &str, replicas: i64, min_ready: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": container()}}}})
}

// ----------------------------------------------------------------------------------------------
// ReplicaSet

#[tokio::test(start_paused = true)]
async fn replicaset_keeps_replicas_and_replaces_deleted_and_evicted_pods() {
    let (server, c) = start().await;
    spawn_replicaset(c.clone(), ReplicaSetConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    add_node(&c, "n2", json!({}), json!({})).await;
    let violations = watch_pods(
        &c,
        Box::new(|pods| {
            let a = pods
                .values()
                .filter(|p| label(p, "app") == "web" && active(p))
                .count();
            (a > 3).then(|| format!("{a} active pods for 3 replicas"))
        }),
    );
    let rs = c
        .create(&c.res.replicasets, rs_manifest("web", 3, 0))
        .await
        .unwrap();
    let uid = s(&rs.value.to_value(), "/metadata/uid").to_string();
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 3);
    for p in &ps {
        assert!(name(p).starts_with("web-"), "{}", name(p));
        assert_eq!(owner_uid(p), uid);
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(label(p, "app"), "web");
    }

    let mut fake = Fake::new(&["n1", "n2"], Duration::from_secs(1));
    for _ in 0..4 {
        fake.step(&c).await;
        run_for(600).await;
    }
    let rs = get(&c, &c.res.replicasets, "web").await;
    assert_eq!(n(&rs, "/status/replicas"), 3);
    assert_eq!(n(&rs, "/status/readyReplicas"), 3);
    assert_eq!(n(&rs, "/status/availableReplicas"), 3);
    assert_eq!(n(&rs, "/status/fullyLabeledReplicas"), 3);
    assert_eq!(n(&rs, "/status/observedGeneration"), 1);

    // A deleted (running) pod terminates gracefully; the replacement comes at once.
    let victim = name(&pods(&c).await[0]);
    assert!(
        !c.delete(&c.res.pods, "default", &victim, &DeleteOptions::default())
            .await
            .unwrap()
    );
    run_for(10).await;
    let ps = pods(&c).await;
    let old = ps
        .iter()
        .find(|p| name(p) == victim)
        .expect("still terminating");
    assert!(terminating(old));
    assert_eq!(ps.iter().filter(|p| active(p)).count(), 3);
    assert_eq!(ps.len(), 4);

    // So does an evicted one (what `kubectl drain` does).
    let client = kube::Client::new(server.router(), "default");
    let api: Api<Pod> = Api::default_namespaced(client);
    let evicted = pods(&c)
        .await
        .into_iter()
        .find(|p| active(p) && !s(p, "/spec/nodeName").is_empty())
        .map(|p| name(&p))
        .unwrap();
    api.evict(&evicted, &EvictParams::default()).await.unwrap();
    run_for(10).await;
    let ps = pods(&c).await;
    assert!(terminating(ps.iter().find(|p| name(p) == evicted).unwrap()));
    assert_eq!(ps.iter().filter(|p| active(p)).count(), 3);

    // Once the old containers exit, three pods are left.
    for _ in 0..6 {
        fake.step(&c).await;
        run_for(500).await;
    }
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 3, "{:?}", ps.iter().map(name).collect::<Vec<_>>());
    assert!(ps.iter().all(|p| active(p) && ready(p)));
    assert_eq!(
        n(
            &get(&c, &c.res.replicasets, "web").await,
            "/status/readyReplicas"
        ),
        3
    );
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(start_paused = true)]
async fn replicaset_scales_up_and_down_deleting_unscheduled_pods_first() {
    let (_server, c) = start().await;
    spawn_replicaset(c.clone(), ReplicaSetConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    c.create(&c.res.replicasets, rs_manifest("web", 2, 0))
        .await
        .unwrap();
    run_for(100).await;
    let mut fake = Fake::new(&["n1"], Duration::ZERO);
    for _ in 0..3 {
        fake.step(&c).await;
        run_for(100).await;
    }
    let first: Vec<String> = pods(&c).await.iter().map(name).collect();
    assert_eq!(first.len(), 2);

    let scale = |r: i64| json!({"spec": {"replicas": r}});
    c.merge_patch(&c.res.replicasets, "default", "web", None, scale(5))
        .await
        .unwrap();
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 5);
    assert_eq!(
        ps.iter()
            .filter(|p| s(p, "/spec/nodeName").is_empty())
            .count(),
        3
    );
    assert_eq!(
        n(
            &get(&c, &c.res.replicasets, "web").await,
            "/status/replicas"
        ),
        5
    );

    // Scale down: the three pods never scheduled go first.
    c.merge_patch(&c.res.replicasets, "default", "web", None, scale(2))
        .await
        .unwrap();
    run_for(100).await;
    let mut left: Vec<String> = pods(&c).await.iter().map(name).collect();
    left.sort();
    let mut first = first;
    first.sort();
    assert_eq!(left, first);
    let rs = get(&c, &c.res.replicasets, "web").await;
    assert_eq!(n(&rs, "/status/replicas"), 2);
    assert_eq!(n(&rs, "/status/observedGeneration"), 3);

    c.merge_patch(&c.res.replicasets, "default", "web", None, scale(0))
        .await
        .unwrap();
    run_for(3000).await;
    assert!(pods(&c).await.is_empty());
    let rs = get(&c, &c.res.replicasets, "web").await;
    assert_eq!(n(&rs, "/status/replicas"), 0);
    assert!(rs.pointer("/status/readyReplicas").is_none());
}

#[tokio::test(start_paused = true)]
async fn replicaset_counts_availability_after_min_ready_seconds() {
    let (_server, c) = start().await;
    spawn_replicaset(c.clone(), ReplicaSetConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    c.create(&c.res.replicasets, rs_manifest("web", 2, 10))
        .await
        .unwrap();
    run_for(100).await;
    let mut fake = Fake::new(&["n1"], Duration::ZERO);
    for _ in 0..3 {
        fake.step(&c).await;
        run_for(100).await;
    }
    let rs = get(&c, &c.res.replicasets, "web").await;
    assert_eq!(n(&rs, "/status/readyReplicas"), 2);
    assert_eq!(n(&rs, "/status/availableReplicas"), 0);
    run_for(12_000).await;
    let rs = get(&c, &c.res.replicasets, "web").await;
    assert_eq!(n(&rs, "/status/availableReplicas"), 2);
}

#[tokio::test(start_paused = true)]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() {
    let (_server, c) = start().await;
    spawn_replicaset(c.clone(), ReplicaSetConfig::default());
    c.create(
        &c.res.pods,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": container()}}),
    )
    .await
    .unwrap();
    let rs = c
        .create(&c.res.replicasets, rs_manifest("web", 2, 0))
        .await
        .unwrap();
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 2, "one adopted, one created");
    let stray = ps.iter().find(|p| name(p) == "stray").unwrap();
    assert_eq!(owner_uid(stray), s(&rs.value.to_value(), "/metadata/uid"));

    // Relabel it: released, and replaced.
    c.merge_patch(
        &c.res.pods,
        "default",
        "stray",
        None,
        json!({"metadata": {"labels": {"app": "other"}}}),
    )
    .await
    .unwrap();
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 3);
    let stray = ps.iter().find(|p| name(p) == "stray").unwrap();
    assert!(stray.pointer("/metadata/ownerReferences").is_none());
    assert_eq!(ps.iter().filter(|p| label(p, "app") == "web").count(), 2);
}

// ----------------------------------------------------------------------------------------------
// Deployment

fn deployment(name: &str, replicas: i64, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": container()}}}})
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

async fn start_deployments() -> (Arc<ApiServer>, Cluster) {
    let (server, c) = start().await;
    spawn_deployment(c.clone(), DeploymentConfig::default());
    spawn_replicaset(c.clone(), ReplicaSetConfig::default());
    for node in ["n1", "n2", "n3"] {
        add_node(&c, node, json!({}), json!({})).await;
    }
    (server, c)
}

async fn replicasets(c: &Cluster) -> Vec<Value> {
    c.list(&c.res.replicasets, Some("default"))
        .await
        .unwrap()
        .0
        .iter()
        .map(|o| o.value.to_value())
        .collect()
}

async fn complete(c: &Cluster, d: &str, generation: i64) -> bool {
    let d = get(c, &c.res.deployments, d).await;
    let r = n(&d, "/spec/replicas");
    n(&d, "/status/observedGeneration") >= generation
        && n(&d, "/status/updatedReplicas") == r
        && n(&d, "/status/replicas") == r
        && n(&d, "/status/availableReplicas") == r
}

fn condition<'a>(v: &'a Value, t: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

#[tokio::test(start_paused = true)]
async fn deployment_creates_a_replicaset_and_pods() {
    let (_server, c) = start_deployments().await;
    c.create(
        &c.res.deployments,
        deployment("web", 4, rolling(json!(1), json!(1))),
    )
    .await
    .unwrap();
    run_for(100).await;
    let sets = replicasets(&c).await;
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = label(rs, "pod-template-hash").to_string();
    assert!(!hash.is_empty());
    assert_eq!(name(rs), format!("web-{hash}"));
    assert_eq!(s(rs, "/spec/selector/matchLabels/pod-template-hash"), hash);
    assert_eq!(
        s(rs, "/spec/template/metadata/labels/pod-template-hash"),
        hash
    );
    let ann = |k: &str| {
        s(
            rs,
            &format!("/metadata/annotations/{}", k.replace('/', "~1")),
        )
        .to_string()
    };
    assert_eq!(ann("deployment.kubernetes.io/revision"), "1");
    assert_eq!(ann("deployment.kubernetes.io/desired-replicas"), "4");
    assert_eq!(ann("deployment.kubernetes.io/max-replicas"), "5");
    assert_eq!(n(rs, "/spec/replicas"), 4);
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 4);
    assert!(
        ps.iter()
            .all(|p| name(p).starts_with(&format!("web-{hash}-"))
                && label(p, "pod-template-hash") == hash)
    );

    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::from_secs(2));
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    let d = get(&c, &c.res.deployments, "web").await;
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "1"
    );
    assert_eq!(n(&d, "/status/readyReplicas"), 4);
    assert!(d.pointer("/status/unavailableReplicas").is_none());
    let avail = condition(&d, "Available").unwrap();
    assert_eq!(
        (avail["status"].as_str(), avail["reason"].as_str()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    let prog = condition(&d, "Progressing").unwrap();
    assert_eq!(
        (prog["status"].as_str(), prog["reason"].as_str()),
        (Some("True"), Some("NewReplicaSetAvailable"))
    );
    assert_eq!(
        prog["message"].as_str().unwrap(),
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );

    // Scaling propagates to the replica set.
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"replicas": 6}}),
    )
    .await
    .unwrap();
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 2)).await);
    let sets = replicasets(&c).await;
    assert_eq!(sets.len(), 1);
    assert_eq!(n(&sets[0], "/spec/replicas"), 6);
    assert_eq!(pods(&c).await.len(), 6);
}

/// `kubectl rollout restart` with the given fenceposts on 4 replicas: after every pod change
/// at most 4 + surge pods are active and at least 4 - unavailable are active and ready.
async fn rollout_restart_respects(surge: i64, unavailable: i64) {
    let (_server, c) = start_deployments().await;
    c.create(
        &c.res.deployments,
        deployment("web", 4, rolling(json!(surge), json!(unavailable))),
    )
    .await
    .unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::from_secs(3));
    run_for(100).await;
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    let old_hash = label(&replicasets(&c).await[0], "pod-template-hash").to_string();

    let armed = Arc::new(AtomicBool::new(true));
    let (max_active, min_ready) = (
        4 + surge,
        4 - unavailable.max(if surge == 0 { 1 } else { 0 }),
    );
    let flag = armed.clone();
    let violations = watch_pods(
        &c,
        Box::new(move |pods| {
            if !flag.load(Ordering::SeqCst) {
                return None;
            }
            let live: Vec<&Value> = pods.values().filter(|p| active(p)).collect();
            let ready_n = live.iter().filter(|p| ready(p)).count() as i64;
            if live.len() as i64 > max_active {
                return Some(format!("{} active pods (max {max_active})", live.len()));
            }
            (ready_n < min_ready).then(|| format!("{ready_n} ready pods (min {min_ready})"))
        }),
    );
    let restarted = c.server.clock.timestamp();
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"template": {"metadata": {"annotations":
            {"kubectl.kubernetes.io/restartedAt": restarted}}}}}),
    )
    .await
    .unwrap();
    // Sample as the kubelet plays, too.
    let mut samples = 0;
    for _ in 0..120 {
        fake.step(&c).await;
        run_for(250).await;
        let ps = pods(&c).await;
        let live: Vec<&Value> = ps.iter().filter(|p| active(p)).collect();
        assert!(
            live.len() as i64 <= max_active,
            "sampled {} active",
            live.len()
        );
        assert!(live.iter().filter(|p| ready(p)).count() as i64 >= min_ready);
        samples += 1;
        if complete(&c, "web", 2).await {
            break;
        }
    }
    assert!(
        complete(&c, "web", 2).await,
        "rollout did not finish in {samples} samples"
    );
    armed.store(false, Ordering::SeqCst);

    let sets = replicasets(&c).await;
    assert_eq!(sets.len(), 2);
    let new = sets
        .iter()
        .find(|r| label(r, "pod-template-hash") != old_hash)
        .unwrap();
    let old = sets
        .iter()
        .find(|r| label(r, "pod-template-hash") == old_hash)
        .unwrap();
    assert_eq!(n(new, "/spec/replicas"), 4);
    assert_eq!(n(old, "/spec/replicas"), 0);
    assert_eq!(
        s(
            new,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );
    let new_hash = label(new, "pod-template-hash");
    run_for(3000).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 4);
    assert!(ps.iter().all(|p| label(p, "pod-template-hash") == new_hash));
    let d = get(&c, &c.res.deployments, "web").await;
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );
    let ev = events(&c).await;
    let first_up = surge.clamp(0, 4);
    if first_up > 0 {
        let m = format!("Scaled up replica set {} from 0 to {first_up}", name(new));
        assert!(ev.contains(&m), "{m} not in {ev:?}");
    }
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(start_paused = true)]
async fn rollout_restart_with_surge_and_unavailable() {
    rollout_restart_respects(1, 1).await;
}

#[tokio::test(start_paused = true)]
async fn rollout_restart_with_surge_only() {
    rollout_restart_respects(1, 0).await;
}

#[tokio::test(start_paused = true)]
async fn rollout_restart_with_unavailable_only() {
    rollout_restart_respects(0, 1).await;
}

#[tokio::test(start_paused = true)]
async fn rollout_restart_with_default_percentages() {
    // 25% of 4: surge 1, unavailable 1.
    let (_server, c) = start_deployments().await;
    let mut d = deployment("web", 4, json!({"type": "RollingUpdate"}));
    d["spec"].as_object_mut().unwrap().remove("strategy");
    c.create(&c.res.deployments, d).await.unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::from_secs(1));
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}}}}),
    )
    .await
    .unwrap();
    assert!(fake.until(&c, 500, 80, || complete(&c, "web", 2)).await);
    let ps = pods(&c).await;
    assert!(
        ps.iter()
            .filter(|p| active(p))
            .all(|p| s(p, "/spec/containers/0/image") == "nginx:1.28")
    );
}

#[tokio::test(start_paused = true)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let (_server, c) = start_deployments().await;
    c.create(
        &c.res.deployments,
        deployment("web", 3, json!({"type": "Recreate"})),
    )
    .await
    .unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::from_secs(1));
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    let violations = watch_pods(
        &c,
        Box::new(|pods| {
            let hashes: std::collections::BTreeSet<&str> = pods
                .values()
                .map(|p| label(p, "pod-template-hash"))
                .collect();
            (hashes.len() > 1).then(|| format!("pods of two templates at once: {hashes:?}"))
        }),
    );
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}}}}),
    )
    .await
    .unwrap();
    run_for(200).await;
    // Old pods are terminating (30 s grace, containers exit after 1 s); nothing new yet.
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 3);
    assert!(ps.iter().all(terminating));
    assert!(fake.until(&c, 500, 60, || complete(&c, "web", 2)).await);
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 3);
    assert!(
        ps.iter()
            .all(|p| s(p, "/spec/containers/0/image") == "nginx:1.28")
    );
    let d = get(&c, &c.res.deployments, "web").await;
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(start_paused = true)]
async fn old_replicasets_beyond_the_history_limit_are_deleted() {
    let (_server, c) = start_deployments().await;
    let mut d = deployment("web", 2, rolling(json!(1), json!(0)));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    c.create(&c.res.deployments, d).await.unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::ZERO);
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    for (generation, image) in [(2, "nginx:1.28"), (3, "nginx:1.29"), (4, "nginx:1.30")] {
        c.merge_patch(
            &c.res.deployments,
            "default",
            "web",
            None,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}),
        )
        .await
        .unwrap();
        assert!(
            fake.until(&c, 500, 60, || complete(&c, "web", generation))
                .await
        );
    }
    run_for(2000).await;
    fake.step(&c).await;
    run_for(2000).await;
    let sets = replicasets(&c).await;
    let mut revs: Vec<String> = sets
        .iter()
        .map(|r| {
            s(
                r,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .to_string()
        })
        .collect();
    revs.sort();
    assert_eq!(revs, vec!["3", "4"], "the new set and one old one are kept");
}

#[tokio::test(start_paused = true)]
async fn rolling_back_reuses_the_old_replicaset_with_a_new_revision() {
    let (_server, c) = start_deployments().await;
    c.create(
        &c.res.deployments,
        deployment("web", 2, rolling(json!(1), json!(0))),
    )
    .await
    .unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::ZERO);
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    let first = name(&replicasets(&c).await[0]);
    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        image("nginx:1.28"),
    )
    .await
    .unwrap();
    assert!(fake.until(&c, 500, 60, || complete(&c, "web", 2)).await);
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        image("nginx:1.27"),
    )
    .await
    .unwrap();
    assert!(fake.until(&c, 500, 60, || complete(&c, "web", 3)).await);
    let sets = replicasets(&c).await;
    assert_eq!(sets.len(), 2);
    let back = sets.iter().find(|r| name(r) == first).unwrap();
    assert_eq!(n(back, "/spec/replicas"), 2);
    assert_eq!(
        s(
            back,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "3"
    );
    assert_eq!(
        s(
            back,
            "/metadata/annotations/deployment.kubernetes.io~1revision-history"
        ),
        "1"
    );
}

#[tokio::test(start_paused = true)]
async fn scaling_a_stuck_rollout_is_proportional() {
    // The example of the Deployment documentation: 10 replicas, maxSurge 3, maxUnavailable 2,
    // an update whose pods never start, then a scale to 15.
    let (_server, c) = start_deployments().await;
    c.create(
        &c.res.deployments,
        deployment("web", 10, rolling(json!(3), json!(2))),
    )
    .await
    .unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::ZERO);
    assert!(fake.until(&c, 500, 40, || complete(&c, "web", 1)).await);
    let old = name(&replicasets(&c).await[0]);
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:nope"}]}}}}),
    )
    .await
    .unwrap();
    run_for(2000).await;
    let sizes = |sets: &[Value]| {
        let o = sets
            .iter()
            .find(|r| name(r) == old)
            .map(|r| n(r, "/spec/replicas"));
        let nw = sets
            .iter()
            .find(|r| name(r) != old)
            .map(|r| n(r, "/spec/replicas"));
        (o, nw)
    };
    assert_eq!(sizes(&replicasets(&c).await), (Some(8), Some(5)));
    c.merge_patch(
        &c.res.deployments,
        "default",
        "web",
        None,
        json!({"spec": {"replicas": 15}}),
    )
    .await
    .unwrap();
    run_for(1000).await;
    assert_eq!(sizes(&replicasets(&c).await), (Some(11), Some(7)));
    let d = get(&c, &c.res.deployments, "web").await;
    assert_eq!(n(&d, "/status/availableReplicas"), 8);
    assert_eq!(condition(&d, "Available").unwrap()["status"], "False");
    assert_eq!(
        condition(&d, "Progressing").unwrap()["reason"],
        "ReplicaSetUpdated"
    );
    // No progress for progressDeadlineSeconds (600 s): the rollout is reported as failed.
    run_for(620_000).await;
    let d = get(&c, &c.res.deployments, "web").await;
    let p = condition(&d, "Progressing").unwrap();
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
}

// ----------------------------------------------------------------------------------------------
// StatefulSet

fn statefulset(name: &str, replicas: i64, policy: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": container()}}}})
}

async fn pod_names(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = pods(c).await.iter().map(name).collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn statefulset_creates_ordinals_in_order_and_replaces_under_the_same_name() {
    let (_server, c) = start().await;
    spawn_statefulset(c.clone(), StatefulSetConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    c.create(&c.res.statefulsets, statefulset("db", 3, "OrderedReady"))
        .await
        .unwrap();
    run_for(5000).await;
    assert_eq!(pod_names(&c).await, vec!["db-0"]);

    // Running but not Ready: still waiting.
    let mut fake = Fake::new(&["n1"], Duration::from_secs(3600));
    fake.step(&c).await;
    run_for(100).await;
    fake.step(&c).await;
    run_for(5000).await;
    assert_eq!(pod_names(&c).await, vec!["db-0"]);

    let mut fake = Fake::new(&["n1"], Duration::from_secs(1));
    let mut seen = vec![pod_names(&c).await];
    for _ in 0..30 {
        fake.step(&c).await;
        run_for(500).await;
        let names = pod_names(&c).await;
        if seen.last() != Some(&names) {
            seen.push(names);
        }
    }
    assert_eq!(
        seen,
        vec![
            vec!["db-0"],
            vec!["db-0", "db-1"],
            vec!["db-0", "db-1", "db-2"]
        ]
    );
    for (i, p) in pods(&c).await.iter().enumerate() {
        let pn = format!("db-{i}");
        assert_eq!(name(p), pn);
        assert_eq!(label(p, "statefulset.kubernetes.io/pod-name"), pn);
        assert_eq!(label(p, "apps.kubernetes.io/pod-index"), i.to_string());
        assert_eq!(s(p, "/spec/hostname"), pn);
        assert_eq!(s(p, "/spec/subdomain"), "db");
        assert!(label(p, "controller-revision-hash").starts_with("db-"));
    }
    let sts = get(&c, &c.res.statefulsets, "db").await;
    for f in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "currentReplicas",
        "updatedReplicas",
    ] {
        assert_eq!(n(&sts, &format!("/status/{f}")), 3, "{f}");
    }
    assert_eq!(
        s(&sts, "/status/currentRevision"),
        s(&sts, "/status/updateRevision")
    );
    assert_eq!(n(&sts, "/status/observedGeneration"), 1);

    // A deleted pod comes back with its name, once the old one is gone.
    let old = get(&c, &c.res.pods, "db-1").await;
    c.delete(&c.res.pods, "default", "db-1", &DeleteOptions::default())
        .await
        .unwrap();
    run_for(100).await;
    let still = get(&c, &c.res.pods, "db-1").await;
    assert_eq!(s(&still, "/metadata/uid"), s(&old, "/metadata/uid"));
    assert!(terminating(&still));
    run_for(2000).await;
    let again = get(&c, &c.res.pods, "db-1").await;
    assert_ne!(s(&again, "/metadata/uid"), s(&old, "/metadata/uid"));
    assert!(!terminating(&again));

    for _ in 0..4 {
        fake.step(&c).await;
        run_for(500).await;
    }
    // Scale down from the highest ordinal, one at a time.
    c.merge_patch(
        &c.res.statefulsets,
        "default",
        "db",
        None,
        json!({"spec": {"replicas": 1}}),
    )
    .await
    .unwrap();
    run_for(100).await;
    assert!(terminating(&get(&c, &c.res.pods, "db-2").await));
    assert!(!terminating(&get(&c, &c.res.pods, "db-1").await));
    run_for(1500).await;
    assert!(terminating(&get(&c, &c.res.pods, "db-1").await));
    run_for(1500).await;
    assert_eq!(pod_names(&c).await, vec!["db-0"]);
    assert_eq!(
        n(
            &get(&c, &c.res.statefulsets, "db").await,
            "/status/replicas"
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_statefulset_creates_all_pods_at_once() {
    let (_server, c) = start().await;
    spawn_statefulset(c.clone(), StatefulSetConfig::default());
    c.create(&c.res.statefulsets, statefulset("db", 3, "Parallel"))
        .await
        .unwrap();
    run_for(100).await;
    assert_eq!(pod_names(&c).await, vec!["db-0", "db-1", "db-2"]);
}

#[tokio::test(start_paused = true)]
async fn statefulset_rolls_a_new_template_from_the_highest_ordinal() {
    let (_server, c) = start().await;
    spawn_statefulset(c.clone(), StatefulSetConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    c.create(&c.res.statefulsets, statefulset("db", 3, "OrderedReady"))
        .await
        .unwrap();
    let mut fake = Fake::new(&["n1"], Duration::from_secs(1));
    for _ in 0..20 {
        fake.step(&c).await;
        run_for(500).await;
    }
    let before: BTreeMap<String, String> = pods(&c)
        .await
        .iter()
        .map(|p| (name(p), s(p, "/metadata/uid").to_string()))
        .collect();
    c.merge_patch(
        &c.res.statefulsets,
        "default",
        "db",
        None,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}}}}),
    )
    .await
    .unwrap();
    // Order of replacement: the first pod to get a new uid is db-2.
    let mut order = Vec::new();
    for _ in 0..40 {
        fake.step(&c).await;
        run_for(500).await;
        for p in pods(&c).await {
            let pn = name(&p);
            if before.get(&pn).is_some_and(|u| u != s(&p, "/metadata/uid")) && !order.contains(&pn)
            {
                order.push(pn);
            }
        }
    }
    assert_eq!(order, vec!["db-2", "db-1", "db-0"]);
    let sts = get(&c, &c.res.statefulsets, "db").await;
    assert_eq!(
        s(&sts, "/status/currentRevision"),
        s(&sts, "/status/updateRevision")
    );
    assert_eq!(n(&sts, "/status/updatedReplicas"), 3);
    assert!(
        pods(&c)
            .await
            .iter()
            .all(|p| s(p, "/spec/containers/0/image") == "nginx:1.28")
    );
}

// ----------------------------------------------------------------------------------------------
// DaemonSet

fn daemonset(name: &str, node_selector: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": container(), "nodeSelector": node_selector}}}})
}

fn target(p: &Value) -> String {
    let pinned = s(
        p,
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0",
    );
    if pinned.is_empty() {
        s(p, "/spec/nodeName").to_string()
    } else {
        pinned.to_string()
    }
}

async fn ds_nodes(c: &Cluster, app: &str) -> Vec<String> {
    let mut v: Vec<String> = pods(c)
        .await
        .iter()
        .filter(|p| label(p, "app") == app && active(p))
        .map(target)
        .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn daemonset_runs_one_pod_per_eligible_node_and_follows_nodes() {
    let (_server, c) = start().await;
    spawn_daemonset(c.clone(), DaemonSetConfig::default());
    add_node(&c, "n1", json!({"role": "edge"}), json!({})).await;
    add_node(
        &c,
        "n2",
        json!({}),
        json!({"unschedulable": true, "taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
    )
    .await;
    add_node(
        &c,
        "n3",
        json!({}),
        json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}),
    )
    .await;
    c.create(&c.res.daemonsets, daemonset("agent", json!({})))
        .await
        .unwrap();
    c.create(
        &c.res.daemonsets,
        daemonset("edge", json!({"role": "edge"})),
    )
    .await
    .unwrap();
    run_for(100).await;
    // The cordoned node gets one (DaemonSet pods tolerate unschedulable); the tainted one not.
    assert_eq!(ds_nodes(&c, "agent").await, vec!["n1", "n2"]);
    assert_eq!(ds_nodes(&c, "edge").await, vec!["n1"]);
    let p = pods(&c)
        .await
        .into_iter()
        .find(|p| label(p, "app") == "agent")
        .unwrap();
    assert!(s(&p, "/spec/nodeName").is_empty(), "left to the scheduler");
    assert_eq!(
        p.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/key"),
        Some(&json!("metadata.name"))
    );
    let tols = p["spec"]["tolerations"].as_array().unwrap().clone();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let t = tols
            .iter()
            .find(|t| t["key"] == key && t["effect"] == effect)
            .unwrap_or_else(|| panic!("no toleration for {key}"));
        assert_eq!(t["operator"], "Exists");
        assert!(t.get("tolerationSeconds").is_none(), "{t}");
    }
    assert!(!label(&p, "controller-revision-hash").is_empty());
    let ds = get(&c, &c.res.daemonsets, "agent").await;
    assert_eq!(n(&ds, "/status/desiredNumberScheduled"), 2);
    assert_eq!(n(&ds, "/status/currentNumberScheduled"), 2);
    assert_eq!(n(&ds, "/status/numberReady"), 0);
    assert_eq!(n(&ds, "/status/numberUnavailable"), 2);

    let mut fake = Fake::new(&[], Duration::from_secs(1));
    for _ in 0..4 {
        fake.step(&c).await;
        run_for(500).await;
    }
    let ds = get(&c, &c.res.daemonsets, "agent").await;
    assert_eq!(n(&ds, "/status/numberReady"), 2);
    assert_eq!(n(&ds, "/status/numberAvailable"), 2);
    assert_eq!(n(&ds, "/status/updatedNumberScheduled"), 2);
    assert_eq!(n(&ds, "/status/numberMisscheduled"), 0);
    assert_eq!(n(&ds, "/status/observedGeneration"), 1);
    assert!(ds.pointer("/status/numberUnavailable").is_none());

    // A new node gets a pod; a node that goes away loses it.
    add_node(&c, "n4", json!({}), json!({})).await;
    run_for(100).await;
    assert_eq!(ds_nodes(&c, "agent").await, vec!["n1", "n2", "n4"]);
    c.delete(&c.res.nodes, "", "n1", &DeleteOptions::default())
        .await
        .unwrap();
    run_for(100).await;
    assert_eq!(ds_nodes(&c, "agent").await, vec!["n2", "n4"]);
    assert_eq!(ds_nodes(&c, "edge").await, Vec::<String>::new());
    // An untolerated NoExecute taint evicts the daemon pod; labels decide for the selector.
    c.merge_patch(
        &c.res.nodes,
        "",
        "n4",
        None,
        json!({"metadata": {"labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}}),
    )
    .await
    .unwrap();
    run_for(100).await;
    assert_eq!(ds_nodes(&c, "agent").await, vec!["n2"]);
    assert_eq!(ds_nodes(&c, "edge").await, Vec::<String>::new());
    c.merge_patch(
        &c.res.nodes,
        "",
        "n4",
        None,
        json!({"spec": {"taints": null}}),
    )
    .await
    .unwrap();
    run_for(100).await;
    assert_eq!(ds_nodes(&c, "agent").await, vec!["n2", "n4"]);
    assert_eq!(ds_nodes(&c, "edge").await, vec!["n4"]);
    for _ in 0..6 {
        fake.step(&c).await;
        run_for(500).await;
    }
    let ds = get(&c, &c.res.daemonsets, "agent").await;
    assert_eq!(n(&ds, "/status/desiredNumberScheduled"), 2);
    assert_eq!(n(&ds, "/status/numberReady"), 2);
}

#[tokio::test(start_paused = true)]
async fn daemonset_rolling_update_replaces_one_node_at_a_time() {
    let (_server, c) = start().await;
    spawn_daemonset(c.clone(), DaemonSetConfig::default());
    for node in ["n1", "n2", "n3", "n4"] {
        add_node(&c, node, json!({}), json!({})).await;
    }
    c.create(&c.res.daemonsets, daemonset("agent", json!({})))
        .await
        .unwrap();
    let mut fake = Fake::new(&[], Duration::from_secs(2));
    for _ in 0..8 {
        fake.step(&c).await;
        run_for(500).await;
    }
    let armed = Arc::new(AtomicBool::new(true));
    let flag = armed.clone();
    let violations = watch_pods(
        &c,
        Box::new(move |pods| {
            let ready_nodes: std::collections::BTreeSet<String> = pods
                .values()
                .filter(|p| active(p) && ready(p))
                .map(target)
                .collect();
            (flag.load(Ordering::SeqCst) && ready_nodes.len() < 3)
                .then(|| format!("only {} nodes with a ready pod", ready_nodes.len()))
        }),
    );
    c.merge_patch(
        &c.res.daemonsets,
        "default",
        "agent",
        None,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}}}}),
    )
    .await
    .unwrap();
    for _ in 0..60 {
        fake.step(&c).await;
        run_for(500).await;
    }
    armed.store(false, Ordering::SeqCst);
    let ps: Vec<Value> = pods(&c).await.into_iter().filter(active).collect();
    assert_eq!(ps.len(), 4);
    assert!(
        ps.iter()
            .all(|p| s(p, "/spec/containers/0/image") == "nginx:1.28")
    );
    let ds = get(&c, &c.res.daemonsets, "agent").await;
    assert_eq!(n(&ds, "/status/updatedNumberScheduled"), 4);
    assert_eq!(n(&ds, "/status/numberAvailable"), 4);
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{v:?}");
}

// ----------------------------------------------------------------------------------------------
// Job

fn job(name: &str, completions: i64, parallelism: i64, backoff: i64) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
            "template": {"spec": {"restartPolicy": "Never", "containers": container()}}}})
}

/// Ends the job's active pods with `phase` (the kubelet's part).
async fn finish_pods(c: &Cluster, phase: &str) -> usize {
    let mut done = 0;
    for p in pods(c).await.into_iter().filter(active) {
        let pn = name(&p);
        if s(&p, "/spec/nodeName").is_empty() {
            c.bind("default", &pn, "n1").await.unwrap();
        }
        c.merge_patch(
            &c.res.pods,
            "default",
            &pn,
            Some("status"),
            json!({"status": {"phase": phase}}),
        )
        .await
        .unwrap();
        done += 1;
    }
    done
}

#[tokio::test(start_paused = true)]
async fn job_runs_pods_until_completions_succeed() {
    let (_server, c) = start().await;
    spawn_job(c.clone(), JobConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    let j = c.create(&c.res.jobs, job("once", 2, 1, 6)).await.unwrap();
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 1);
    assert!(name(&ps[0]).starts_with("once-"));
    assert_eq!(label(&ps[0], "batch.kubernetes.io/job-name"), "once");
    assert_eq!(
        label(&ps[0], "batch.kubernetes.io/controller-uid"),
        s(&j.value.to_value(), "/metadata/uid")
    );
    let jv = get(&c, &c.res.jobs, "once").await;
    assert_eq!(n(&jv, "/status/active"), 1);
    assert!(jv.pointer("/status/startTime").is_some());

    assert_eq!(finish_pods(&c, "Succeeded").await, 1);
    run_for(100).await;
    let ps = pods(&c).await;
    assert_eq!(ps.len(), 2, "the second completion");
    assert_eq!(ps.iter().filter(|p| active(p)).count(), 1);
    assert_eq!(
        n(&get(&c, &c.res.jobs, "once").await, "/status/succeeded"),
        1
    );

    assert_eq!(finish_pods(&c, "Succeeded").await, 1);
    run_for(100).await;
    assert_eq!(pods(&c).await.len(), 2, "no more pods");
    let jv = get(&c, &c.res.jobs, "once").await;
    assert_eq!(n(&jv, "/status/succeeded"), 2);
    assert!(jv.pointer("/status/active").is_none());
    let done = condition(&jv, "Complete").unwrap();
    assert_eq!(done["status"], "True");
    assert!(jv.pointer("/status/completionTime").is_some());
    assert_eq!(
        condition(&jv, "SuccessCriteriaMet").unwrap()["status"],
        "True"
    );
}

#[tokio::test(start_paused = true)]
async fn job_fails_after_backoff_limit() {
    let (_server, c) = start().await;
    spawn_job(c.clone(), JobConfig::default());
    add_node(&c, "n1", json!({}), json!({})).await;
    c.create(&c.res.jobs, job("flaky", 1, 1, 1)).await.unwrap();
    run_for(100).await;
    assert_eq!(finish_pods(&c, "Failed").await, 1);
    run_for(2000).await;
    // Back-off: no new pod for 10 s after the failure.
    assert_eq!(pods(&c).await.iter().filter(|p| active(p)).count(), 0);
    run_for(10_000).await;
    assert_eq!(pods(&c).await.iter().filter(|p| active(p)).count(), 1);
    assert_eq!(finish_pods(&c, "Failed").await, 1);
    run_for(100).await;
    let jv = get(&c, &c.res.jobs, "flaky").await;
    assert_eq!(n(&jv, "/status/failed"), 2);
    let failed = condition(&jv, "Failed").unwrap();
    assert_eq!(
        (failed["status"].as_str(), failed["reason"].as_str()),
        (Some("True"), Some("BackoffLimitExceeded"))
    );
    run_for(60_000).await;
    assert_eq!(pods(&c).await.len(), 2, "no pods after failure");
}

// ----------------------------------------------------------------------------------------------
// Scale

/// 5,000 nodes, a DaemonSet and 1,450 Deployments of 100 replicas: 150,000 pods. Slow in a debug
/// build; run with `cargo test --release -p theseus-sim --test workloads -- --ignored scale`.
/// `THESEUS_SCALE=<n>` divides the cluster by n.
#[tokio::test(start_paused = true)]
#[ignore]
async fn scale_150k_pods() {
    let div: usize = std::env::var("THESEUS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (nodes, deployments) = (5_000 / div, 1_450 / div);
    let config = ServerConfig {
        history_limit: 200_000,
        ..ServerConfig::default()
    };
    let server = ApiServer::new(config).await;
    let c = Cluster::new(server.clone()).unwrap();
    let wall = std::time::Instant::now();
    let virt = Instant::now();
    let quiet = |events| ReplicaSetConfig {
        events,
        ..Default::default()
    };
    spawn_deployment(c.clone(), DeploymentConfig { events: false });
    spawn_replicaset(c.clone(), quiet(false));
    spawn_daemonset(
        c.clone(),
        DaemonSetConfig {
            events: false,
            ..Default::default()
        },
    );
    for i in 0..nodes {
        add_node(&c, &format!("node-{i:05}"), json!({}), json!({})).await;
    }
    c.create(&c.res.daemonsets, daemonset("agent", json!({})))
        .await
        .unwrap();
    for i in 0..deployments {
        c.create(
            &c.res.deployments,
            deployment(
                &format!("app-{i:04}"),
                100,
                rolling(json!("25%"), json!("25%")),
            ),
        )
        .await
        .unwrap();
    }
    let want = nodes + deployments * 100;
    let mut got = 0;
    for _ in 0..600 {
        run_for(1000).await;
        got = c.list(&c.res.pods, None).await.unwrap().0.len();
        if got >= want {
            break;
        }
    }
    eprintln!(
        "{got} pods of {want} after {:?} wall, {:?} virtual",
        wall.elapsed(),
        virt.elapsed()
    );
    assert_eq!(got, want);
    run_for(5000).await;
    assert_eq!(
        c.list(&c.res.pods, None).await.unwrap().0.len(),
        want,
        "no duplicates"
    );
    let ds = get(&c, &c.res.daemonsets, "agent").await;
    assert_eq!(n(&ds, "/status/desiredNumberScheduled") as usize, nodes);
    assert_eq!(n(&ds, "/status/currentNumberScheduled") as usize, nodes);
    // One pod status change: work stays proportional to it.
    let t = std::time::Instant::now();
    let p = c.list(&c.res.pods, None).await.unwrap().0[0]
        .value
        .to_value();
    c.merge_patch(
        &c.res.pods,
        "default",
        &name(&p),
        Some("status"),
        json!({"status": {"phase": "Running"}}),
    )
    .await
    .unwrap();
    run_for(100).await;
    eprintln!("one pod update settled in {:?} wall", t.elapsed());
}

// ----------------------------------------------------------------------------------------------
// Determinism

/// Every pod change of a run with all five controllers: a Deployment rollout, a StatefulSet, a
/// DaemonSet and a Job.
async fn trace() -> Vec<String> {
    let (_server, c) = start().await;
    theseus_sim::controllers::workloads::spawn_all(c.clone());
    for node in ["n1", "n2", "n3"] {
        add_node(&c, node, json!({}), json!({})).await;
    }
    let mut rx = c.informer_channel(&c.res.pods);
    c.create(
        &c.res.deployments,
        deployment("web", 3, rolling(json!(1), json!(1))),
    )
    .await
    .unwrap();
    c.create(&c.res.statefulsets, statefulset("db", 2, "OrderedReady"))
        .await
        .unwrap();
    c.create(&c.res.daemonsets, daemonset("agent", json!({})))
        .await
        .unwrap();
    c.create(&c.res.jobs, job("once", 1, 1, 1)).await.unwrap();
    let mut fake = Fake::new(&["n1", "n2", "n3"], Duration::from_secs(1));
    for i in 0..40 {
        if i == 10 {
            c.merge_patch(
                &c.res.deployments,
                "default",
                "web",
                None,
                json!({"spec": {"template": {"metadata": {"annotations": {"r": "1"}}}}}),
            )
            .await
            .unwrap();
        }
        fake.step(&c).await;
        run_for(300).await;
    }
    let mut out = Vec::new();
    while let Ok(change) = rx.try_recv() {
        if let Change::Event(e) = change {
            let v = &e.object.value.to_value();
            out.push(format!(
                "{} {:?} {} {} {}",
                e.revision,
                e.kind,
                name(v),
                s(v, "/spec/nodeName"),
                s(v, "/status/phase")
            ));
        }
    }
    out
}

#[test]
fn same_run_same_trace() {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(trace())
    };
    let a = run();
    let b = run();
    assert!(a.len() > 30, "{a:?}");
    assert_eq!(a, b);
}

//! The cluster-wide controllers of kube-controller-manager in the simulator: disruption (PDB
//! status), endpoints, garbage collector, namespace, node lifecycle with taint eviction. The
//! tests play the scheduler, workload controllers and kubelets themselves through the in-process
//! [`Cluster`] API, on a paused clock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams};
use serde_json::{Value, json};
use theseus_sim::cluster::{Change, Cluster};
use theseus_sim::controllers::{disruption, endpoints, gc, namespace, nodelifecycle};
use theseus_sim::registry::ResourceInfo;
use theseus_sim::rest::DeleteOptions;
use theseus_sim::store::EventType;
use theseus_sim::{ApiServer, ServerConfig};
use tokio::time::{Instant, sleep};

const NS: &str = "default";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls `$body` (an expression yielding `Option<T>`) every 200 ms of virtual time until it is
/// `Some`, failing after `$limit`.
macro_rules! eventually {
    ($limit:expr, $what:expr, $body:expr) => {{
        let deadline = Instant::now() + $limit;
        loop {
            if let Some(v) = $body {
                break v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            sleep(Duration::from_millis(200)).await;
        }
    }};
}

async fn setup() -> (Arc<ApiServer>, Cluster, kube::Client) {
    let server = ApiServer::new(ServerConfig::default()).await;
    let cluster = Cluster::new(server.clone()).unwrap();
    let client = kube::Client::new(server.router(), NS);
    (server, cluster, client)
}

async fn get(c: &Cluster, r: &ResourceInfo, ns: &str, name: &str) -> Option<Value> {
    c.get(r, ns, name).await.ok().map(|o| o.value.to_value())
}

fn now(c: &Cluster) -> DateTime<Utc> {
    c.server.clock.now()
}

fn ts(t: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// Sleeps until the simulated clock shows `t`.
async fn sleep_until_clock(c: &Cluster, t: DateTime<Utc>) {
    if let Ok(d) = (t - now(c)).to_std() {
        sleep(d).await;
    }
}

fn owner(kind: &str, api_version: &str, obj: &Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
}

async fn deployment(c: &Cluster, ns: &str, name: &str, app: &str, replicas: i64) -> Value {
    c.create(
        &c.res.deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                "template": template(app)}}),
    )
    .await
    .unwrap()
    .value
    .to_value()
}

async fn replicaset(
    c: &Cluster,
    ns: &str,
    name: &str,
    app: &str,
    replicas: i64,
    owner_ref: Option<Value>,
) -> Value {
    let mut meta = json!({"name": name, "namespace": ns, "labels": {"app": app}});
    if let Some(o) = owner_ref {
        meta["ownerReferences"] = json!([o]);
    }
    c.create(
        &c.res.replicasets,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                "template": template(app)}}),
    )
    .await
    .unwrap()
    .value
    .to_value()
}

/// A pod bound to `node`, with a named container port `http` (8080).
async fn pod(
    c: &Cluster,
    ns: &str,
    name: &str,
    app: &str,
    node: &str,
    owner_ref: Option<Value>,
    extra_spec: Value,
) -> Value {
    let mut meta = json!({"name": name, "namespace": ns, "labels": {"app": app}});
    if let Some(o) = owner_ref {
        meta["ownerReferences"] = json!([o]);
    }
    let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "nginx:1.27",
        "ports": [{"name": "http", "containerPort": 8080}]}]});
    if let Value::Object(m) = extra_spec {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    c.create(
        &c.res.pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
    )
    .await
    .unwrap()
    .value
    .to_value()
}

/// Sets a pod's phase, readiness and IP as its kubelet would.
async fn set_pod(c: &Cluster, ns: &str, name: &str, ready: bool, ip: Option<&str>) {
    let r = if ready { "True" } else { "False" };
    let mut status = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": r}, {"type": "ContainersReady", "status": r}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    c.merge_patch(
        &c.res.pods,
        ns,
        name,
        Some("status"),
        json!({"status": status}),
    )
    .await
    .unwrap();
}

/// Plays the kubelet's part in graceful deletion: a terminating pod's containers exit after
/// `after`, then the pod is removed (delete with grace 0).
fn spawn_confirmer(c: Cluster, after: Duration) {
    tokio::spawn(async move {
        let mut rx = c.informer_channel(&c.res.pods);
        while let Some(ch) = rx.recv().await {
            let pods: Vec<Value> = match ch {
                Change::Sync(items) => items.iter().map(|o| o.value.to_value()).collect(),
                Change::Event(ev) if ev.kind != EventType::Deleted => {
                    vec![ev.object.value.to_value()]
                }
                Change::Event(_) => Vec::new(),
            };
            for p in pods {
                if p["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    sleep(after).await;
                    let opts = DeleteOptions {
                        grace_period: Some(0),
                        ..Default::default()
                    };
                    let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
                    let name = p["metadata"]["name"].as_str().unwrap_or_default();
                    let _ = c.delete(&c.res.pods, ns, name, &opts).await;
                });
            }
        }
    });
}

// ----------------------------------------------------------------------------------------------
// disruption

async fn create_pdb(c: &Cluster, ns: &str, name: &str, spec: Value) {
    c.create(
        &c.res.pdbs,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .await
    .unwrap();
}

/// The PDB's status once the controller has observed its generation and the predicate holds.
async fn pdb_status(
    c: &Cluster,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually!(secs(30), what, {
        get(c, &c.res.pdbs, ns, name).await.and_then(|p| {
            let observed = p["status"]["observedGeneration"] == p["metadata"]["generation"];
            (observed && pred(&p["status"])).then(|| p["status"].clone())
        })
    })
}

fn counts(s: &Value) -> (i64, i64, i64, i64) {
    let f = |k: &str| s[k].as_i64().unwrap_or(-1);
    (
        f("expectedPods"),
        f("desiredHealthy"),
        f("currentHealthy"),
        f("disruptionsAllowed"),
    )
}

fn condition(s: &Value, ty: &str) -> Value {
    s["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(start_paused = true)]
async fn pdb_status_follows_pods_and_guards_evictions() {
    let (_s, c, client) = setup().await;
    disruption::spawn(c.clone(), Default::default());
    spawn_confirmer(c.clone(), secs(1));
    let d = deployment(&c, NS, "web", "web", 3).await;
    let rs = replicaset(
        &c,
        NS,
        "web-5d8f",
        "web",
        3,
        Some(owner("Deployment", "apps/v1", &d)),
    )
    .await;
    let rs_ref = owner("ReplicaSet", "apps/v1", &rs);
    for i in 0..3 {
        let name = format!("web-{i}");
        pod(&c, NS, &name, "web", "n1", Some(rs_ref.clone()), json!({})).await;
        set_pod(&c, NS, &name, true, Some(&format!("10.244.0.{}", 10 + i))).await;
    }

    // Integer minAvailable: expected = matching pods.
    create_pdb(
        &c,
        NS,
        "budget",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let s = pdb_status(&c, NS, "budget", "minAvailable 2", |s| {
        s["expectedPods"] == 3
    })
    .await;
    assert_eq!(counts(&s), (3, 2, 3, 1));
    let cond = condition(&s, "DisruptionAllowed");
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("True"), Some("SufficientPods"))
    );
    c.delete(&c.res.pdbs, NS, "budget", &DeleteOptions::default())
        .await
        .unwrap();

    // Percentage minAvailable: from the Deployment's scale, rounded up.
    create_pdb(
        &c,
        NS,
        "pct",
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let s = pdb_status(&c, NS, "pct", "minAvailable 50%", |s| {
        s["expectedPods"] == 3
    })
    .await;
    assert_eq!(counts(&s), (3, 2, 3, 1));
    c.delete(&c.res.pdbs, NS, "pct", &DeleteOptions::default())
        .await
        .unwrap();

    // maxUnavailable, integer and percentage; follows the Deployment's replicas.
    create_pdb(
        &c,
        NS,
        "mu",
        json!({"maxUnavailable": "34%", "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let s = pdb_status(&c, NS, "mu", "maxUnavailable 34%", |s| {
        s["expectedPods"] == 3
    })
    .await;
    assert_eq!(counts(&s), (3, 1, 3, 2));
    c.merge_patch(
        &c.res.pdbs,
        NS,
        "mu",
        None,
        json!({"spec": {"maxUnavailable": 1}}),
    )
    .await
    .unwrap();
    let s = pdb_status(&c, NS, "mu", "maxUnavailable 1", |s| {
        s["desiredHealthy"] == 2
    })
    .await;
    assert_eq!(counts(&s), (3, 2, 3, 1));
    assert_eq!(s["observedGeneration"], 2);
    c.merge_patch(
        &c.res.deployments,
        NS,
        "web",
        None,
        json!({"spec": {"replicas": 5}}),
    )
    .await
    .unwrap();
    let s = pdb_status(&c, NS, "mu", "scaled deployment", |s| {
        s["expectedPods"] == 5
    })
    .await;
    assert_eq!(counts(&s), (5, 4, 3, 0));
    c.merge_patch(
        &c.res.deployments,
        NS,
        "web",
        None,
        json!({"spec": {"replicas": 3}}),
    )
    .await
    .unwrap();
    pdb_status(&c, NS, "mu", "scaled back", |s| s["expectedPods"] == 3).await;
    c.delete(&c.res.pdbs, NS, "mu", &DeleteOptions::default())
        .await
        .unwrap();

    // A budget whose pods' controller cannot be found fails safe.
    c.create(
        &c.res.namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lost"}}),
    )
    .await
    .unwrap();
    let ghost = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "0000-ghost", "controller": true});
    pod(&c, "lost", "stray", "stray", "n1", Some(ghost), json!({})).await;
    set_pod(&c, "lost", "stray", true, Some("10.244.9.9")).await;
    create_pdb(
        &c,
        "lost",
        "stray",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "stray"}}}),
    )
    .await;
    let p = eventually!(secs(30), "SyncFailed", {
        get(&c, &c.res.pdbs, "lost", "stray")
            .await
            .filter(|p| condition(&p["status"], "DisruptionAllowed")["reason"] == "SyncFailed")
    });
    assert_eq!(p["status"]["disruptionsAllowed"], 0);
    assert!(
        condition(&p["status"], "DisruptionAllowed")["message"]
            .as_str()
            .unwrap()
            .contains("found no controllers for pod \"stray\"")
    );

    // Readiness moves the budget.
    create_pdb(
        &c,
        NS,
        "budget",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    pdb_status(&c, NS, "budget", "budget", |s| s["disruptionsAllowed"] == 1).await;
    set_pod(&c, NS, "web-2", false, Some("10.244.0.12")).await;
    let s = pdb_status(&c, NS, "budget", "unready pod", |s| {
        s["currentHealthy"] == 2
    })
    .await;
    assert_eq!(counts(&s), (3, 2, 2, 0));
    let cond = condition(&s, "DisruptionAllowed");
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("InsufficientPods"))
    );
    set_pod(&c, NS, "web-2", true, Some("10.244.0.12")).await;
    pdb_status(&c, NS, "budget", "ready again", |s| {
        s["disruptionsAllowed"] == 1
    })
    .await;

    // Evictions through kube-rs respect the budget.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ep = EvictParams::default();
    pods.evict("web-0", &ep).await.unwrap();
    let err = pods.evict("web-1", &ep).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // The evicted pod terminates and goes; the budget counts what is left.
    let s = pdb_status(&c, NS, "budget", "after eviction", |s| {
        s["expectedPods"] == 2
    })
    .await;
    assert_eq!(counts(&s), (2, 2, 2, 0));
    assert!(
        s.get("disruptedPods")
            .is_none_or(|d| d.as_object().unwrap().is_empty())
    );
    assert!(pods.evict("web-1", &ep).await.is_err());
    // The ReplicaSet (played here) replaces it: one disruption allowed again.
    pod(
        &c,
        NS,
        "web-3",
        "web",
        "n2",
        Some(rs_ref.clone()),
        json!({}),
    )
    .await;
    set_pod(&c, NS, "web-3", true, Some("10.244.1.13")).await;
    pdb_status(&c, NS, "budget", "replacement ready", |s| {
        s["disruptionsAllowed"] == 1
    })
    .await;
    pods.evict("web-1", &ep).await.unwrap();

    // A recorded disruption whose pod is not deleted expires after 2 minutes.
    pdb_status(&c, NS, "budget", "settled", |s| {
        s["expectedPods"] == 2 && s["currentHealthy"] == 2
    })
    .await;
    pod(&c, NS, "web-4", "web", "n2", Some(rs_ref), json!({})).await;
    set_pod(&c, NS, "web-4", true, Some("10.244.1.14")).await;
    pdb_status(&c, NS, "budget", "three healthy", |s| {
        s["currentHealthy"] == 3
    })
    .await;
    let stamp = c.server.clock.timestamp();
    c.merge_patch(
        &c.res.pdbs,
        NS,
        "budget",
        Some("status"),
        json!({"status": {"disruptedPods": {"web-4": stamp}, "disruptionsAllowed": 0}}),
    )
    .await
    .unwrap();
    let recorded_at = now(&c);
    let s = pdb_status(&c, NS, "budget", "recorded disruption", |s| {
        s["currentHealthy"] == 2
    })
    .await;
    assert!(s["disruptedPods"]["web-4"].is_string());
    sleep_until_clock(&c, recorded_at + chrono::Duration::seconds(115)).await;
    let s = get(&c, &c.res.pdbs, NS, "budget").await.unwrap()["status"].clone();
    assert_eq!(s["currentHealthy"], 2, "still within the deletion timeout");
    sleep_until_clock(&c, recorded_at + chrono::Duration::seconds(125)).await;
    let s = get(&c, &c.res.pdbs, NS, "budget").await.unwrap()["status"].clone();
    assert_eq!(
        counts(&s),
        (3, 2, 3, 1),
        "expired disruption no longer counts"
    );
    assert!(s.get("disruptedPods").is_none());
}

#[tokio::test(start_paused = true)]
async fn pdb_with_empty_selector_matches_nothing() {
    let (_s, c, _client) = setup().await;
    disruption::spawn(c.clone(), Default::default());
    pod(&c, NS, "a", "web", "n1", None, json!({})).await;
    set_pod(&c, NS, "a", true, Some("10.244.0.2")).await;
    create_pdb(&c, NS, "all", json!({"minAvailable": 0, "selector": {}})).await;
    let s = pdb_status(&c, NS, "all", "empty selector", |_| true).await;
    assert_eq!(counts(&s), (0, 0, 0, 0));
    c.delete(&c.res.pdbs, NS, "all", &DeleteOptions::default())
        .await
        .unwrap();

    // A selector of expressions only follows its pods as well.
    create_pdb(
        &c,
        NS,
        "expr",
        json!({"minAvailable": 0, "selector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]}]}}),
    )
    .await;
    let s = pdb_status(&c, NS, "expr", "expression selector", |s| {
        s["expectedPods"] == 1
    })
    .await;
    assert_eq!(counts(&s), (1, 0, 1, 1));
    set_pod(&c, NS, "a", false, Some("10.244.0.2")).await;
    let s = pdb_status(&c, NS, "expr", "pod unready", |s| s["currentHealthy"] == 0).await;
    assert_eq!(counts(&s), (1, 0, 0, 0));
}

// ----------------------------------------------------------------------------------------------
// endpoints

fn ips(ep: &Value, field: &str) -> BTreeSet<String> {
    ep["subsets"]
        .as_array()
        .map(|ss| {
            ss.iter()
                .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
                .map(|a| a["ip"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

async fn endpoints_where(
    c: &Cluster,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually!(secs(10), what, {
        get(c, &c.res.endpoints, NS, name).await.filter(|e| pred(e))
    })
}

#[tokio::test(start_paused = true)]
async fn endpoints_follow_readiness_and_termination() {
    let (_s, c, _client) = setup().await;
    endpoints::spawn(c.clone(), Default::default());
    c.create(
        &c.res.services,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS, "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090}]}}),
    )
    .await
    .unwrap();
    for (name, ready, ip) in [
        ("a", true, Some("10.244.0.2")),
        ("b", true, Some("10.244.0.3")),
        ("c", false, Some("10.244.0.4")),
        ("d", false, None),
    ] {
        pod(&c, NS, name, "web", "n1", None, json!({})).await;
        set_pod(&c, NS, name, ready, ip).await;
    }
    pod(&c, NS, "other", "db", "n1", None, json!({})).await;
    set_pod(&c, NS, "other", true, Some("10.244.0.9")).await;

    let ep = endpoints_where(&c, "web", "initial endpoints", |e| {
        ips(e, "addresses").len() == 2
    })
    .await;
    assert_eq!(ips(&ep, "addresses"), set(&["10.244.0.2", "10.244.0.3"]));
    assert_eq!(ips(&ep, "notReadyAddresses"), set(&["10.244.0.4"]));
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    let subset = &ep["subsets"][0];
    assert_eq!(
        subset["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "protocol": "TCP"}])
    );
    let a = subset["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ip"] == "10.244.0.2")
        .unwrap()
        .clone();
    assert_eq!(a["nodeName"], "n1");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["name"], "a");

    // An irrelevant pod change does not rewrite the object.
    let rv = ep["metadata"]["resourceVersion"].clone();
    c.merge_patch(
        &c.res.pods,
        NS,
        "a",
        None,
        json!({"metadata": {"annotations": {"x": "y"}}}),
    )
    .await
    .unwrap();
    sleep(secs(2)).await;
    assert_eq!(
        get(&c, &c.res.endpoints, NS, "web").await.unwrap()["metadata"]["resourceVersion"],
        rv
    );

    // Readiness moves addresses between the lists.
    set_pod(&c, NS, "c", true, Some("10.244.0.4")).await;
    set_pod(&c, NS, "a", false, Some("10.244.0.2")).await;
    let ep = endpoints_where(&c, "web", "readiness change", |e| {
        ips(e, "addresses").contains("10.244.0.4")
    })
    .await;
    assert_eq!(ips(&ep, "addresses"), set(&["10.244.0.3", "10.244.0.4"]));
    assert_eq!(ips(&ep, "notReadyAddresses"), set(&["10.244.0.2"]));

    // A terminating pod leaves at once (no kubelet confirms here, so it stays terminating).
    c.delete(&c.res.pods, NS, "b", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(
        get(&c, &c.res.pods, NS, "b").await.unwrap()["metadata"]["deletionTimestamp"].is_string()
    );
    let ep = endpoints_where(&c, "web", "terminating pod removed", |e| {
        !ips(e, "addresses").contains("10.244.0.3")
    })
    .await;
    assert_eq!(ips(&ep, "addresses"), set(&["10.244.0.4"]));

    // publishNotReadyAddresses: terminating and unready pods are listed, all as ready.
    c.merge_patch(
        &c.res.services,
        NS,
        "web",
        None,
        json!({"spec": {"publishNotReadyAddresses": true}}),
    )
    .await
    .unwrap();
    let ep = endpoints_where(&c, "web", "publishNotReadyAddresses", |e| {
        ips(e, "addresses").len() == 3
    })
    .await;
    assert_eq!(
        ips(&ep, "addresses"),
        set(&["10.244.0.2", "10.244.0.3", "10.244.0.4"])
    );
    assert!(ips(&ep, "notReadyAddresses").is_empty());

    // A Service without selector: its Endpoints are someone else's.
    c.create(
        &c.res.services,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "manual", "namespace": NS}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await
    .unwrap();
    let manual = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual", "namespace": NS},
        "subsets": [{"addresses": [{"ip": "192.168.1.5"}], "ports": [{"port": 5432, "protocol": "TCP"}]}]});
    let created = c.create(&c.res.endpoints, manual).await.unwrap();
    sleep(secs(3)).await;
    let still = get(&c, &c.res.endpoints, NS, "manual").await.unwrap();
    assert_eq!(
        still["metadata"]["resourceVersion"],
        created.value["metadata"]["resourceVersion"]
    );

    // The Service goes: so does its Endpoints object.
    c.delete(&c.res.services, NS, "web", &DeleteOptions::default())
        .await
        .unwrap();
    eventually!(secs(10), "endpoints deleted", {
        get(&c, &c.res.endpoints, NS, "web")
            .await
            .is_none()
            .then_some(())
    });
}

#[tokio::test(start_paused = true)]
async fn headless_service_without_ports_lists_addresses() {
    let (_s, c, _client) = setup().await;
    endpoints::spawn(c.clone(), Default::default());
    c.create(
        &c.res.services,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
    )
    .await
    .unwrap();
    pod(
        &c,
        NS,
        "db-0",
        "db",
        "n1",
        None,
        json!({"hostname": "db-0", "subdomain": "db"}),
    )
    .await;
    set_pod(&c, NS, "db-0", true, Some("10.244.3.3")).await;
    let ep = endpoints_where(&c, "db", "headless endpoints", |e| {
        ips(e, "addresses").len() == 1
    })
    .await;
    assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "db-0");
    assert!(ep["subsets"][0].get("ports").is_none());
    assert_eq!(
        ep["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
}

// ----------------------------------------------------------------------------------------------
// garbage collector

/// A Deployment → ReplicaSet → 2 pods chain (plus a ConfigMap owned by the Deployment).
async fn owned_chain(c: &Cluster, prefix: &str) -> (Value, Value) {
    let d = deployment(c, NS, prefix, prefix, 2).await;
    let rs = replicaset(
        c,
        NS,
        &format!("{prefix}-rs"),
        prefix,
        2,
        Some(owner("Deployment", "apps/v1", &d)),
    )
    .await;
    for i in 0..2 {
        let name = format!("{prefix}-{i}");
        pod(
            c,
            NS,
            &name,
            prefix,
            "n1",
            Some(owner("ReplicaSet", "apps/v1", &rs)),
            json!({}),
        )
        .await;
        set_pod(c, NS, &name, true, None).await;
    }
    c.create(
        &c.res.endpoints,
        json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": format!("{prefix}-ep"), "namespace": NS,
            "ownerReferences": [owner("Deployment", "apps/v1", &d)]}}),
    )
    .await
    .unwrap();
    let cms = c.server.registry.lookup("", "v1", "configmaps").unwrap();
    c.create(
        &cms,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{prefix}-cm"), "namespace": NS,
            "ownerReferences": [owner("Deployment", "apps/v1", &d)]}, "data": {"k": "v"}}),
    )
    .await
    .unwrap();
    (d, rs)
}

async fn exists(c: &Cluster, r: &ResourceInfo, name: &str) -> bool {
    get(c, r, NS, name).await.is_some()
}

#[tokio::test(start_paused = true)]
async fn garbage_collector_background_foreground_orphan() {
    let (_s, c, _client) = setup().await;
    gc::spawn(c.clone(), Default::default());
    spawn_confirmer(c.clone(), secs(2));
    let cms = c.server.registry.lookup("", "v1", "configmaps").unwrap();

    // Background: the owner goes at once, its dependents after it.
    owned_chain(&c, "bg").await;
    sleep(secs(2)).await;
    assert!(
        exists(&c, &c.res.replicasets, "bg-rs").await,
        "owned objects with live owners stay"
    );
    assert!(
        c.delete(&c.res.deployments, NS, "bg", &DeleteOptions::default())
            .await
            .unwrap()
    );
    eventually!(secs(30), "background cascade", {
        let left = exists(&c, &c.res.replicasets, "bg-rs").await
            || exists(&c, &c.res.pods, "bg-0").await
            || exists(&c, &c.res.pods, "bg-1").await
            || exists(&c, &cms, "bg-cm").await
            || exists(&c, &c.res.endpoints, "bg-ep").await;
        (!left).then_some(())
    });

    // Foreground: the owner waits, marked, until its blocking dependents are gone.
    owned_chain(&c, "fg").await;
    sleep(secs(1)).await;
    let fg = DeleteOptions {
        propagation: Some("Foreground".into()),
        ..Default::default()
    };
    assert!(!c.delete(&c.res.deployments, NS, "fg", &fg).await.unwrap());
    let d = get(&c, &c.res.deployments, NS, "fg").await.unwrap();
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    // The ReplicaSet is deleted in the foreground too, since it has dependents.
    let rs = eventually!(secs(10), "rs in foreground deletion", {
        get(&c, &c.res.replicasets, NS, "fg-rs")
            .await
            .filter(|r| r["metadata"]["deletionTimestamp"].is_string())
    });
    assert_eq!(rs["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let mut saw_owner_while_pods = false;
    eventually!(secs(60), "foreground cascade", {
        let pods_left =
            exists(&c, &c.res.pods, "fg-0").await || exists(&c, &c.res.pods, "fg-1").await;
        let d_left = exists(&c, &c.res.deployments, "fg").await;
        assert!(d_left || !pods_left, "the owner went before its dependents");
        saw_owner_while_pods |= pods_left && d_left;
        (!d_left).then_some(())
    });
    assert!(saw_owner_while_pods);
    assert!(!exists(&c, &c.res.replicasets, "fg-rs").await);
    assert!(!exists(&c, &cms, "fg-cm").await);

    // Orphan: dependents lose the reference and stay.
    owned_chain(&c, "or").await;
    sleep(secs(1)).await;
    let orphan = DeleteOptions {
        propagation: Some("Orphan".into()),
        ..Default::default()
    };
    c.delete(&c.res.deployments, NS, "or", &orphan)
        .await
        .unwrap();
    eventually!(secs(30), "orphaning owner gone", {
        (!exists(&c, &c.res.deployments, "or").await).then_some(())
    });
    sleep(secs(5)).await;
    let rs = get(&c, &c.res.replicasets, NS, "or-rs")
        .await
        .expect("orphaned rs stays");
    assert!(rs["metadata"].get("ownerReferences").is_none());
    let cm = get(&c, &cms, NS, "or-cm")
        .await
        .expect("orphaned configmap stays");
    assert!(cm["metadata"].get("ownerReferences").is_none());
    let p = get(&c, &c.res.pods, NS, "or-0")
        .await
        .expect("pods of the orphaned rs stay");
    assert_eq!(p["metadata"]["ownerReferences"][0]["name"], "or-rs");

    // Two owners, one gone: only the dangling reference is removed.
    let a = c.create(&cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-a", "namespace": NS}})).await.unwrap();
    let b = c.create(&cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-b", "namespace": NS}})).await.unwrap();
    let refs = json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-a", "uid": a.value["metadata"]["uid"]},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-b", "uid": b.value["metadata"]["uid"]}]);
    let secrets = c.server.registry.lookup("", "v1", "secrets").unwrap();
    c.create(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared", "namespace": NS, "ownerReferences": refs}}),
    )
    .await
    .unwrap();
    c.delete(&cms, NS, "owner-a", &DeleteOptions::default())
        .await
        .unwrap();
    let s = eventually!(secs(10), "dangling reference removed", {
        get(&c, &secrets, NS, "shared").await.filter(|s| {
            s["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        })
    });
    assert_eq!(s["metadata"]["ownerReferences"][0]["name"], "owner-b");
    c.delete(&cms, NS, "owner-b", &DeleteOptions::default())
        .await
        .unwrap();
    eventually!(secs(10), "last owner gone", {
        get(&c, &secrets, NS, "shared")
            .await
            .is_none()
            .then_some(())
    });

    // A dependent whose owner reference names a uid that never existed is collected too.
    c.create(&cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stale", "namespace": NS,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "or", "uid": "never-was"}]}}))
        .await
        .unwrap();
    eventually!(secs(10), "stale dependent collected", {
        get(&c, &cms, NS, "stale").await.is_none().then_some(())
    });
}

// ----------------------------------------------------------------------------------------------
// namespace

#[tokio::test(start_paused = true)]
async fn namespace_deletion_empties_and_removes_the_namespace() {
    let (_s, c, _client) = setup().await;
    namespace::spawn(c.clone(), Default::default());
    gc::spawn(c.clone(), Default::default());
    spawn_confirmer(c.clone(), secs(1));
    let ns = "team";
    c.create(
        &c.res.namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .unwrap();
    let cms = c.server.registry.lookup("", "v1", "configmaps").unwrap();
    let secrets = c.server.registry.lookup("", "v1", "secrets").unwrap();
    c.create(&cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns}})).await.unwrap();
    c.create(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": ns}}),
    )
    .await
    .unwrap();
    c.create(
        &c.res.services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": ns},
        "spec": {"ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    let d = deployment(&c, ns, "app", "app", 1).await;
    replicaset(
        &c,
        ns,
        "app-rs",
        "app",
        1,
        Some(owner("Deployment", "apps/v1", &d)),
    )
    .await;
    pod(&c, ns, "app-0", "app", "n1", None, json!({})).await;
    set_pod(&c, ns, "app-0", true, Some("10.244.0.5")).await;

    assert!(
        !c.delete(&c.res.namespaces, "", ns, &DeleteOptions::default())
            .await
            .unwrap()
    );
    let deleted_at = Instant::now();
    // While the pod terminates, the namespace reports what remains.
    let nso = eventually!(secs(10), "content remaining condition", {
        get(&c, &c.res.namespaces, "", ns)
            .await
            .filter(|n| condition(&n["status"], "NamespaceContentRemaining")["status"] == "True")
    });
    assert_eq!(nso["status"]["phase"], "Terminating");
    let cond = condition(&nso["status"], "NamespaceContentRemaining");
    assert_eq!(cond["reason"], "SomeResourcesRemain");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("pods. has 1 resource instances"),
        "{cond}"
    );
    assert_eq!(
        condition(&nso["status"], "NamespaceDeletionDiscoveryFailure")["status"],
        "False"
    );
    assert!(get(&c, &cms, ns, "cfg").await.is_none());
    assert!(get(&c, &c.res.deployments, ns, "app").await.is_none());
    // New content is refused meanwhile (the API server's rule).
    let refused = c.create(&cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": ns}})).await;
    assert_eq!(refused.unwrap_err().code, 403);

    eventually!(secs(90), "namespace gone", {
        get(&c, &c.res.namespaces, "", ns)
            .await
            .is_none()
            .then_some(())
    });
    // It waited for the pod's grace period estimate, as the real controller does.
    assert!(Instant::now() - deleted_at >= secs(29));
    for r in c.server.registry.all().into_iter().filter(|r| r.namespaced) {
        let (items, _) = c.list(&r, Some(ns)).await.unwrap();
        assert!(items.is_empty(), "{} left in the namespace", r.resource);
    }
    // Other namespaces are untouched.
    assert!(get(&c, &c.res.namespaces, "", NS).await.is_some());
}

// ----------------------------------------------------------------------------------------------
// node lifecycle

/// The kubelets of a set of nodes: renew each alive node's Lease every 10 s.
#[derive(Clone)]
struct Kubelets {
    c: Cluster,
    alive: Arc<Mutex<BTreeSet<String>>>,
}

impl Kubelets {
    fn start(c: &Cluster) -> Self {
        let k = Kubelets {
            c: c.clone(),
            alive: Arc::new(Mutex::new(BTreeSet::new())),
        };
        let me = k.clone();
        tokio::spawn(async move {
            loop {
                let alive: Vec<String> = me.alive.lock().unwrap().iter().cloned().collect();
                for n in alive {
                    me.renew(&n).await;
                }
                sleep(secs(10)).await;
            }
        });
        k
    }

    async fn renew(&self, node: &str) {
        let c = &self.c;
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                "renewTime": c.server.clock.micro_timestamp()}});
        c.update(&c.res.leases, lease).await.unwrap();
    }

    /// Registers (or revives) a node: Ready=True with a fresh heartbeat, lease renewed.
    async fn up(&self, node: &str, labels: Value) {
        let c = &self.c;
        let now = c.server.clock.timestamp();
        let conds: Vec<Value> = [
            ("Ready", "True", "KubeletReady"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]
        .iter()
        .map(|(t, s, r)| {
            json!({"type": t, "status": s, "reason": r, "message": "",
                "lastHeartbeatTime": now, "lastTransitionTime": now})
        })
        .collect();
        match c.get(&c.res.nodes, "", node).await {
            Err(_) => {
                c.create(
                    &c.res.nodes,
                    json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node, "labels": labels}, "spec": {},
                    "status": {"conditions": conds}}),
                )
                .await
                .unwrap();
            }
            Ok(cur) => {
                let mut v = cur.value.to_value();
                v["status"]["conditions"] = json!(conds);
                c.update_status(&c.res.nodes, v).await.unwrap();
            }
        }
        self.alive.lock().unwrap().insert(node.to_string());
        self.renew(node).await;
    }

    fn stop(&self, node: &str) {
        self.alive.lock().unwrap().remove(node);
    }
}

fn taint_keys(node: &Value, effect: &str) -> BTreeSet<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["effect"] == effect)
                .map(|t| t["key"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn node_condition(node: &Value, ty: &str) -> Value {
    condition(&node["status"], ty)
}

fn deleting(p: &Option<Value>) -> bool {
    p.as_ref()
        .is_none_or(|p| p["metadata"]["deletionTimestamp"].is_string())
}

#[tokio::test(start_paused = true)]
async fn unreachable_node_is_tainted_and_its_pods_evicted_after_the_toleration() {
    let (_s, c, _client) = setup().await;
    let k = Kubelets::start(&c);
    for n in ["n1", "n2", "n3"] {
        k.up(n, json!({})).await;
    }
    // Default tolerations (300 s), a short one (60 s), and one tolerating forever.
    pod(&c, NS, "default-tol", "a", "n1", None, json!({})).await;
    pod(&c, NS, "short-tol", "a", "n1", None, json!({"tolerations": [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]})).await;
    pod(
        &c,
        NS,
        "forever",
        "a",
        "n1",
        None,
        json!({"tolerations": [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]}),
    )
    .await;
    pod(&c, NS, "elsewhere", "a", "n2", None, json!({})).await;
    for p in ["default-tol", "short-tol", "forever", "elsewhere"] {
        set_pod(&c, NS, p, true, None).await;
    }
    nodelifecycle::spawn(c.clone(), Default::default());
    sleep(secs(30)).await;
    for n in ["n1", "n2", "n3"] {
        let node = get(&c, &c.res.nodes, "", n).await.unwrap();
        assert_eq!(node_condition(&node, "Ready")["status"], "True");
        assert!(
            node["spec"].get("taints").is_none(),
            "healthy node tainted: {node}"
        );
    }

    // n1's kubelet stops right after a renewal.
    sleep(secs(1)).await;
    k.stop("n1");
    let last_renewal = now(&c) - chrono::Duration::seconds(1);
    sleep_until_clock(&c, last_renewal + chrono::Duration::seconds(39)).await;
    let node = get(&c, &c.res.nodes, "", "n1").await.unwrap();
    assert_eq!(
        node_condition(&node, "Ready")["status"],
        "True",
        "grace period not over yet"
    );
    let node = eventually!(secs(20), "n1 Ready=Unknown", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| node_condition(n, "Ready")["status"] == "Unknown")
    });
    assert!(now(&c) - last_renewal <= chrono::Duration::seconds(51));
    let ready = node_condition(&node, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(node_condition(&node, ty)["status"], "Unknown", "{ty}");
    }
    let node = eventually!(secs(10), "unreachable taints", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| taint_keys(n, "NoExecute").contains("node.kubernetes.io/unreachable"))
    });
    assert_eq!(
        taint_keys(&node, "NoSchedule"),
        set(&["node.kubernetes.io/unreachable"])
    );
    let taint = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .unwrap()
        .clone();
    let tainted_at = ts(&taint["timeAdded"]);
    // The pods on the node are no longer ready; the others are untouched.
    let p = get(&c, &c.res.pods, NS, "default-tol").await.unwrap();
    assert_eq!(condition(&p["status"], "Ready")["status"], "False");
    let p = get(&c, &c.res.pods, NS, "elsewhere").await.unwrap();
    assert_eq!(condition(&p["status"], "Ready")["status"], "True");
    for n in ["n2", "n3"] {
        let node = get(&c, &c.res.nodes, "", n).await.unwrap();
        assert_eq!(node_condition(&node, "Ready")["status"], "True");
        assert!(node["spec"].get("taints").is_none());
    }

    // tolerationSeconds 60: evicted a minute after the taint.
    sleep_until_clock(&c, tainted_at + chrono::Duration::seconds(58)).await;
    assert!(!deleting(&get(&c, &c.res.pods, NS, "short-tol").await));
    sleep_until_clock(&c, tainted_at + chrono::Duration::seconds(62)).await;
    assert!(deleting(&get(&c, &c.res.pods, NS, "short-tol").await));
    // Default 300 s: the "5 minute pod eviction timeout".
    sleep_until_clock(&c, tainted_at + chrono::Duration::seconds(298)).await;
    assert!(!deleting(&get(&c, &c.res.pods, NS, "default-tol").await));
    sleep_until_clock(&c, tainted_at + chrono::Duration::seconds(302)).await;
    let p = get(&c, &c.res.pods, NS, "default-tol").await;
    assert!(deleting(&p));
    let p = p.unwrap();
    let dt = condition(&p["status"], "DisruptionTarget");
    assert_eq!(dt["reason"], "DeletionByTaintManager");
    // Tolerating forever: stays; pods elsewhere stay.
    sleep_until_clock(&c, tainted_at + chrono::Duration::seconds(600)).await;
    assert!(!deleting(&get(&c, &c.res.pods, NS, "forever").await));
    assert!(!deleting(&get(&c, &c.res.pods, NS, "elsewhere").await));

    // The kubelet comes back: taints go.
    k.up("n1", json!({})).await;
    let node = eventually!(secs(10), "taints removed", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| n["spec"].get("taints").is_none())
    });
    assert_eq!(node_condition(&node, "Ready")["status"], "True");
    sleep(secs(60)).await;
    let node = get(&c, &c.res.nodes, "", "n1").await.unwrap();
    assert!(node["spec"].get("taints").is_none());
    assert_eq!(node_condition(&node, "Ready")["status"], "True");
}

#[tokio::test(start_paused = true)]
async fn not_ready_node_gets_not_ready_taints() {
    let (_s, c, _client) = setup().await;
    let k = Kubelets::start(&c);
    for n in ["n1", "n2", "n3"] {
        k.up(n, json!({})).await;
    }
    pod(&c, NS, "p", "a", "n1", None, json!({"tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]})).await;
    nodelifecycle::spawn(c.clone(), Default::default());
    sleep(secs(10)).await;
    // The kubelet keeps renewing but reports Ready=False (e.g. the network plugin is down).
    let mut node = get(&c, &c.res.nodes, "", "n1").await.unwrap();
    for cond in node["status"]["conditions"].as_array_mut().unwrap() {
        if cond["type"] == "Ready" {
            cond["status"] = json!("False");
            cond["reason"] = json!("KubeletNotReady");
        }
    }
    c.update_status(&c.res.nodes, node).await.unwrap();
    let node = eventually!(secs(15), "not-ready taints", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| taint_keys(n, "NoExecute").contains("node.kubernetes.io/not-ready"))
    });
    assert_eq!(
        taint_keys(&node, "NoSchedule"),
        set(&["node.kubernetes.io/not-ready"])
    );
    assert_eq!(
        node_condition(&node, "Ready")["status"],
        "False",
        "lease renewals keep the kubelet's status"
    );
    eventually!(secs(40), "pod evicted after its 30 s toleration", {
        deleting(&get(&c, &c.res.pods, NS, "p").await).then_some(())
    });
}

#[tokio::test(start_paused = true)]
async fn all_nodes_unreachable_is_a_control_plane_problem_no_evictions() {
    let (_s, c, _client) = setup().await;
    let k = Kubelets::start(&c);
    for n in ["n1", "n2", "n3"] {
        k.up(n, json!({})).await;
        pod(&c, NS, &format!("p-{n}"), "a", n, None, json!({})).await;
    }
    nodelifecycle::spawn(c.clone(), Default::default());
    sleep(secs(20)).await;
    for n in ["n1", "n2", "n3"] {
        k.stop(n);
    }
    eventually!(secs(70), "all nodes Unknown", {
        let mut all = true;
        for n in ["n1", "n2", "n3"] {
            let node = get(&c, &c.res.nodes, "", n).await.unwrap();
            all &= node_condition(&node, "Ready")["status"] == "Unknown";
        }
        all.then_some(())
    });
    sleep(secs(400)).await;
    for n in ["n1", "n2", "n3"] {
        let node = get(&c, &c.res.nodes, "", n).await.unwrap();
        assert!(
            taint_keys(&node, "NoExecute").is_empty(),
            "master disruption mode: no NoExecute taint on {n}"
        );
        assert_eq!(
            taint_keys(&node, "NoSchedule"),
            set(&["node.kubernetes.io/unreachable"])
        );
        assert!(!deleting(
            &get(&c, &c.res.pods, NS, &format!("p-{n}")).await
        ));
    }
    // One node comes back: the others are tainted again, at the zone's rate (one per 10 s).
    k.up("n1", json!({})).await;
    let first = eventually!(secs(30), "a dead node tainted", {
        let mut hit = None;
        for n in ["n2", "n3"] {
            let node = get(&c, &c.res.nodes, "", n).await.unwrap();
            if taint_keys(&node, "NoExecute").contains("node.kubernetes.io/unreachable") {
                hit = Some(n);
            }
        }
        hit
    });
    let other = if first == "n2" { "n3" } else { "n2" };
    let node = get(&c, &c.res.nodes, "", other).await.unwrap();
    assert!(
        taint_keys(&node, "NoExecute").is_empty(),
        "rate limited: one node per 10 s"
    );
    eventually!(secs(15), "second dead node tainted", {
        let node = get(&c, &c.res.nodes, "", other).await.unwrap();
        taint_keys(&node, "NoExecute")
            .contains("node.kubernetes.io/unreachable")
            .then_some(())
    });
}

#[tokio::test(start_paused = true)]
async fn cordon_adds_the_unschedulable_taint() {
    let (_s, c, _client) = setup().await;
    let k = Kubelets::start(&c);
    k.up("n1", json!({})).await;
    nodelifecycle::spawn(c.clone(), Default::default());
    c.merge_patch(
        &c.res.nodes,
        "",
        "n1",
        None,
        json!({"spec": {"unschedulable": true}}),
    )
    .await
    .unwrap();
    let node = eventually!(secs(5), "unschedulable taint", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| taint_keys(n, "NoSchedule").contains("node.kubernetes.io/unschedulable"))
    });
    assert!(node["spec"]["taints"][0]["timeAdded"].is_string());
    c.merge_patch(
        &c.res.nodes,
        "",
        "n1",
        None,
        json!({"spec": {"unschedulable": null}}),
    )
    .await
    .unwrap();
    eventually!(secs(5), "taint removed on uncordon", {
        get(&c, &c.res.nodes, "", "n1")
            .await
            .filter(|n| n["spec"].get("taints").is_none())
            .map(|_| ())
    });
}

#[tokio::test(start_paused = true)]
async fn node_that_never_reported_is_marked_after_the_startup_grace() {
    let (_s, c, _client) = setup().await;
    c.create(
        &c.res.nodes,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "silent"}, "spec": {}}),
    )
    .await
    .unwrap();
    let k = Kubelets::start(&c);
    k.up("n1", json!({})).await;
    nodelifecycle::spawn(c.clone(), Default::default());
    sleep(secs(55)).await;
    let node = get(&c, &c.res.nodes, "", "silent").await.unwrap();
    assert!(node["status"].get("conditions").is_none());
    let node = eventually!(secs(15), "never-updated conditions", {
        get(&c, &c.res.nodes, "", "silent")
            .await
            .filter(|n| node_condition(n, "Ready")["status"] == "Unknown")
    });
    assert_eq!(
        node_condition(&node, "Ready")["reason"],
        "NodeStatusNeverUpdated"
    );
    assert_eq!(
        node_condition(&node, "Ready")["message"],
        "Kubelet never posted node status."
    );
}

#[tokio::test(start_paused = true)]
async fn events_expire_after_the_event_ttl_unless_updated() {
    let (server, c, _) = setup().await;
    let involved = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NS, "uid": "u"}});
    c.event(&involved, "Normal", "Old", "first", "test").await;
    c.event(&involved, "Normal", "Touched", "updated later", "test")
        .await;
    sleep(secs(1800)).await;
    c.event(&involved, "Normal", "New", "half an hour later", "test")
        .await;
    let reasons = |c: Cluster| async move {
        let (items, _) = c.list(&c.res.events, Some(NS)).await.unwrap();
        let mut r: Vec<String> = items
            .iter()
            .map(|e| e.value["reason"].as_str().unwrap_or("").to_string())
            .collect();
        r.sort();
        r
    };
    // Touch one: an updated Event starts its TTL again.
    let (items, _) = c.list(&c.res.events, Some(NS)).await.unwrap();
    let mut touched = items
        .iter()
        .find(|e| e.value["reason"] == "Touched")
        .unwrap()
        .value
        .to_value();
    touched["count"] = json!(2);
    c.update(&c.res.events, touched).await.unwrap();
    assert_eq!(
        server.expire_events().await,
        0,
        "nothing is an hour old yet"
    );
    sleep(secs(1801)).await;
    assert_eq!(server.expire_events().await, 1);
    assert_eq!(reasons(c.clone()).await, ["New", "Touched"]);
    // "New" goes an hour after its creation; the touched one lives another hour from when the
    // expiry found it updated (t = 3601 s).
    sleep(secs(1800)).await;
    assert_eq!(server.expire_events().await, 1);
    assert_eq!(reasons(c.clone()).await, ["Touched"]);
    sleep(secs(1800)).await;
    assert_eq!(server.expire_events().await, 1);
    assert!(reasons(c.clone()).await.is_empty());
}

//! The living cluster end to end, in-process on virtual time: scenarios settle, drains move pods,
//! a powered-off machine's pods are evicted after the default tolerations expire, the probes show
//! downtime where there is some, and runs are deterministic.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use theseus_sim::cluster::ns_name;
use theseus_sim::rest::DeleteOptions;
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

const POWER: &str = r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
seed: 3
timing: {bootSeconds: 30, reimageSeconds: 60, jitterSeconds: 0, podStartupSeconds: 5, podExitSeconds: 1, endpointPropagationSeconds: 1}
nodePools:
- {name: workers, count: 3, namePattern: "w{index}", ipStart: 10.1.0.1, zones: [a, b]}
workloads:
- {kind: Deployment, name: single, replicas: 1, cpu: 100m, service: {port: 80, probeRate: 10}}
- {kind: Deployment, name: triple, replicas: 3, cpu: 100m, antiAffinity: hostname, pdb: {minAvailable: 2},
   service: {port: 80, probeRate: 10}}
"#;

async fn start(text: &str) -> Simulation {
    let s = Scenario::parse("test", text).unwrap();
    let e = s.expand("test").unwrap();
    let sim = Simulation::start(&e).await.unwrap();
    sim.wait_steady(Duration::from_secs(600)).await.unwrap();
    sim
}

async fn pods_of(sim: &Simulation, app: &str) -> Vec<Value> {
    let (pods, _) = sim.cluster.list(&sim.cluster.res.pods, None).await.unwrap();
    pods.iter()
        .filter(|p| {
            p.value
                .pointer("/metadata/labels/app")
                .and_then(theseus_sim::tree::Tree::as_str)
                == Some(app)
        })
        .map(|p| p.value.to_value())
        .collect()
}

fn node_of(p: &Value) -> String {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn ready(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

#[tokio::test(start_paused = true)]
async fn a_powered_off_worker_loses_its_pods_after_the_toleration_and_only_single_replicas_see_a_gap()
 {
    let sim = start(POWER).await;
    let single = pods_of(&sim, "single").await;
    assert_eq!(single.len(), 1);
    let victim = node_of(&single[0]);
    let triple_nodes: std::collections::BTreeSet<String> =
        pods_of(&sim, "triple").await.iter().map(node_of).collect();
    assert_eq!(
        triple_nodes.len(),
        3,
        "anti-affinity spreads the three replicas"
    );

    sim.machines.power_off(&victim).unwrap();
    // ~40 s without a lease renewal: NotReady (Unknown).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let node = sim
        .cluster
        .get(&sim.cluster.res.nodes, "", &victim)
        .await
        .unwrap();
    assert!(
        ready(&node.value.to_value()),
        "still Ready 30 s after power-off"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let node = sim
        .cluster
        .get(&sim.cluster.res.nodes, "", &victim)
        .await
        .unwrap();
    assert!(
        !ready(&node.value.to_value()),
        "not Ready 60 s after power-off"
    );
    // The pods stay bound to it until the 300 s default toleration expires...
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(
        pods_of(&sim, "single")
            .await
            .iter()
            .any(|p| node_of(p) == victim)
    );
    // ...and then run elsewhere.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let now = pods_of(&sim, "single").await;
    // As on a real cluster, the evicted pod stays Terminating on the unreachable node (its kubelet
    // cannot confirm) while the ReplicaSet's replacement runs elsewhere.
    assert!(
        now.iter()
            .filter(|p| node_of(p) == victim)
            .all(|p| p.pointer("/metadata/deletionTimestamp").is_some()),
        "evicted from {victim}: {now:?}"
    );
    assert!(
        now.iter().any(|p| node_of(p) != victim && ready(p)),
        "replacement Ready elsewhere"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    sim.machines.power_on(&victim).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;

    let reports = sim.probes.reports();
    let single = reports.iter().find(|r| r.service == "single").unwrap();
    let triple = reports.iter().find(|r| r.service == "triple").unwrap();
    assert!(
        single.failures > 0 && single.longest_gap_seconds > 300.0,
        "{single:?}"
    );
    assert!(triple.requests > 3000);
    assert_eq!(triple.failures, 0, "{triple:?}");
    assert!(
        triple.retried > 0,
        "the dead backend was tried and retried: {triple:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cka_lab_drains_like_runbook_002() {
    let sim = start(include_str!("../../../scenarios/cka-002-lab.yaml")).await;
    let c = &sim.cluster;
    // Cordon node01, then evict what a drain would evict (controller-owned, non-DaemonSet pods).
    c.merge_patch(
        &c.res.nodes,
        "",
        "node01",
        None,
        json!({"spec": {"unschedulable": true}}),
    )
    .await
    .unwrap();
    let before = pods_of(&sim, "blue").await;
    assert_eq!(before.len(), 3);
    for p in before.iter().filter(|p| node_of(p) == "node01") {
        let (ns, name) = ns_name(p);
        c.delete(&c.res.pods, ns, name, &DeleteOptions::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = pods_of(&sim, "blue").await;
    assert_eq!(after.len(), 3);
    assert!(
        after
            .iter()
            .all(|p| node_of(p) == "controlplane" && ready(p)),
        "blue runs on the control plane"
    );
    // The unmanaged pod stays where it is (cordon keeps it running).
    let hr = c.get(&c.res.pods, "default", "hr-app").await.unwrap();
    assert_eq!(node_of(&hr.value.to_value()), "node01");
    assert!(ready(&hr.value.to_value()));
    // After uncordon nothing moves back by itself.
    c.merge_patch(
        &c.res.nodes,
        "",
        "node01",
        None,
        json!({"spec": {"unschedulable": null}}),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        pods_of(&sim, "blue")
            .await
            .iter()
            .all(|p| node_of(p) == "controlplane")
    );
    assert!(sim.invariants.final_check(c).await.is_empty());
}

/// A trace of every pod and node change: (revision, type, kind, namespace/name, node, phase).
async fn trace(text: &str) -> Vec<String> {
    let sim = start(text).await;
    let c = &sim.cluster;
    let mut stream = c
        .server
        .store
        .watch(&c.res.pods.key(), None, 0)
        .await
        .unwrap();
    let victim = node_of(&pods_of(&sim, "single").await[0]);
    sim.machines.power_off(&victim).unwrap();
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(500);
    loop {
        tokio::select! {
            batch = stream.next() => {
                for e in batch.unwrap().unwrap() {
                    let v = &e.object.value.to_value();
                    let (ns, name) = ns_name(v);
                    out.push(format!("{} {:?} {ns}/{name} {} {}", e.revision, e.kind, node_of(v),
                        v.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")));
                }
            }
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    out
}

#[test]
fn same_scenario_same_trace() {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(trace(POWER))
    };
    let a = run();
    let b = run();
    assert!(a.len() > 20, "{a:?}");
    assert_eq!(a, b);
}

const BUDGETS: &str = r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
seed: 5
timing: {bootSeconds: 30, reimageSeconds: 60, jitterSeconds: 0, podStartupSeconds: 20, podExitSeconds: 30, endpointPropagationSeconds: 1}
nodePools:
- {name: workers, count: 4, namePattern: "w{index}", ipStart: 10.1.0.1, zones: [a, b]}
workloads:
- {kind: Deployment, name: half, replicas: 10, cpu: 100m, pdb: {minAvailable: "50%"}}
- {kind: Deployment, name: one-off, replicas: 5, cpu: 100m, pdb: {maxUnavailable: 1}}
- {kind: Deployment, name: pair, replicas: 3, cpu: 100m, pdb: {minAvailable: 2}}
"#;

fn pdb_violations(sim: &Simulation) -> Vec<theseus_sim::invariants::Violation> {
    sim.invariants
        .violations()
        .into_iter()
        .filter(|v| v.kind == "PdbBelowMinimum")
        .collect()
}

fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

#[tokio::test(start_paused = true)]
async fn the_recorder_reports_pods_deleted_below_the_budget() {
    let sim = start(BUDGETS).await;
    let c = &sim.cluster;
    // Deleting directly (no eviction API): the second deletion leaves 1 of the 2 pods needed.
    for p in pods_of(&sim, "pair").await.iter().take(2) {
        let (ns, name) = ns_name(p);
        c.delete(&c.res.pods, ns, name, &DeleteOptions::default())
            .await
            .unwrap();
    }
    // maxUnavailable 1 of 5 replicas: the second deletion leaves 3 of the 4 needed.
    for p in pods_of(&sim, "one-off").await.iter().take(2) {
        let (ns, name) = ns_name(p);
        c.delete(&c.res.pods, ns, name, &DeleteOptions::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = pdb_violations(&sim);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].object, "poddisruptionbudget/default/pair");
    assert!(
        v[0].message
            .ends_with("while 1 healthy pods remained and the budget needs 2"),
        "{v:?}"
    );
    assert_eq!(v[1].object, "poddisruptionbudget/default/one-off");
    assert!(
        v[1].message
            .ends_with("while 3 healthy pods remained and the budget needs 4"),
        "{v:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_recorder_accepts_what_the_eviction_api_allowed_while_replacements_are_pending() {
    let sim = start(BUDGETS).await;
    let c = &sim.cluster;
    let none = std::collections::HashMap::new();
    let mut evicted = std::collections::BTreeMap::<String, usize>::new();
    let mut refused = 0;
    // Evict every pod of every budget as fast as the API lets us, for two minutes: the evicted
    // pods take 30 s to exit and their replacements 20 s to become ready, so the budgets hold
    // terminating pods and pending replacements most of the time.
    for _ in 0..120 {
        for app in ["half", "one-off", "pair"] {
            for p in pods_of(&sim, app).await {
                if terminating(&p) || !ready(&p) {
                    continue;
                }
                let (ns, name) = ns_name(&p);
                let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": name, "namespace": ns}});
                match theseus_sim::eviction::evict(&sim.server, &c.res.pods, ns, name, body, &none)
                    .await
                {
                    Ok(_) => *evicted.entry(app.to_string()).or_default() += 1,
                    Err(e) if e.code == 429 => refused += 1,
                    Err(e) => panic!("eviction of {name}: {e:?}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // More evictions than any budget allows at once, and refusals in between.
    assert!(evicted.get("half").is_some_and(|n| *n > 5), "{evicted:?}");
    assert!(
        evicted.get("one-off").is_some_and(|n| *n > 1),
        "{evicted:?}"
    );
    assert!(evicted.get("pair").is_some_and(|n| *n > 1), "{evicted:?}");
    assert!(refused > 0);
    let v = pdb_violations(&sim);
    assert!(v.is_empty(), "{v:?}");
}

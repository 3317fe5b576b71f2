//! Two drains at once on nodes that share a PodDisruptionBudget take turns: the second eviction
//! is refused (429) until the first one's replacement is Ready, and then goes through within
//! about a second, because a refused eviction watches its budget instead of waiting kubectl's
//! fixed 5 s; the budget is never exceeded (the simulator's own recorder says so). This is what
//! lets the planner put several pods of one PDB into one wave (drain rounds).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use theseus_cluster::Ops;
use theseus_engine::{DrainEvent, Drainer};
use theseus_model::spec::{DrainPolicy, SpecDuration};
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;
use tokio::time::Instant;

async fn dce() -> Simulation {
    let path = format!(
        "{}/../../scenarios/dce-000-centos-to-ubuntu.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let s = Scenario::parse("dce", &text).unwrap();
    let sim = Simulation::start(&s.expand("test").unwrap()).await.unwrap();
    sim.wait_steady(Duration::from_secs(3600)).await.unwrap();
    sim
}

/// What two drains at once did.
struct Drained {
    sim: Simulation,
    /// Instants at which pods whose names start with the workload's name were evicted.
    evicted: Vec<Instant>,
    events: Vec<DrainEvent>,
    refused: u64,
}

/// Cordons the first two nodes (by name) running pods of `workload` in namespace shop and
/// drains both at once, with or without the protectUnbudgeted guard.
async fn drain_two_nodes_of(workload: &str, guarded: bool) -> Drained {
    let sim = dce().await;
    let ops = Ops::new(theseus_cluster::in_process(sim.router()));
    let prefix = format!("{workload}-");
    let (pods, _) = sim
        .cluster
        .list(&sim.cluster.res.pods, Some("shop"))
        .await
        .unwrap();
    let mut nodes: Vec<String> = pods
        .iter()
        .filter(|p| {
            p.value["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .filter_map(|p| p.value["spec"]["nodeName"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes.dedup();
    assert!(nodes.len() >= 2, "{workload} runs on {nodes:?}");
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    ops.cordon(&a, "test").await.unwrap();
    ops.cordon(&b, "test").await.unwrap();
    let policy = DrainPolicy {
        ignore_daemon_sets: true,
        delete_empty_dir_data: true,
        force: true,
        timeout: SpecDuration(300),
        ..DrainPolicy::default()
    };
    let seen: Arc<Mutex<Vec<(Instant, DrainEvent)>>> = Arc::default();
    let s = seen.clone();
    let on_event = move |e: DrainEvent| s.lock().unwrap().push((Instant::now(), e));
    let guard = theseus_engine::guard::UnbudgetedGuard::default();
    let d = Drainer {
        ops: &ops,
        policy: &policy,
        surge_single_replica: true,
        run_id: "test",
        poll: Duration::from_secs(1),
        pods_ready_timeout: Duration::from_secs(300),
        endpoint_settle: Duration::from_secs(5),
        on_event: &on_event,
        guard: guarded.then_some(&guard),
    };
    let (ra, rb) = tokio::join!(d.drain(&a), d.drain(&b));
    let refused = ra.unwrap().refused + rb.unwrap().refused;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let evicted = seen
        .iter()
        .filter(|(_, e)| matches!(e, DrainEvent::Evicted { pod } if pod.contains(&prefix)))
        .map(|(t, _)| *t)
        .collect();
    Drained {
        sim,
        evicted,
        events: seen.into_iter().map(|(_, e)| e).collect(),
        refused,
    }
}

#[tokio::test(start_paused = true)]
async fn drains_sharing_a_budget_take_turns_and_retry_as_soon_as_it_allows() {
    // storefront: 4 replicas, one per worker (anti-affinity), minAvailable 3: one disruption
    // at a time; its pods take 8 s to start.
    let d = drain_two_nodes_of("storefront", false).await;
    assert!(
        d.refused >= 1,
        "the second storefront eviction must have been refused at first"
    );
    assert_eq!(d.evicted.len(), 2, "{:?}", d.events);
    assert!(d.events.iter().any(|e| matches!(e,
        DrainEvent::Blocked { pdbs, .. } if pdbs.iter().any(|p| p == "storefront"))));
    let gap = d.evicted[1] - d.evicted[0];
    // Not before the first replacement is Ready (8 s start-up)...
    assert!(
        gap >= Duration::from_secs(8),
        "second eviction {gap:?} after the first"
    );
    // ...and within a second or so after: a fixed 5 s retry would have made it 10 s.
    assert!(
        gap < Duration::from_secs(10),
        "second eviction {gap:?} after the first"
    );
    // Nothing went below the budget, by the simulator's own account.
    let violations = d.sim.invariants.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_unbudgeted_workload_keeps_a_ready_replica_while_two_drains_run() {
    // cache-warmer: 2 replicas, no PDB. Without the guard both go at once (nothing in the API
    // stops it)...
    let unguarded = drain_two_nodes_of("cache-warmer", false).await.evicted;
    assert_eq!(unguarded.len(), 2);
    assert!(unguarded[1] - unguarded[0] < Duration::from_secs(1));
    // ...with it, the second waits until the first one's replacement is Ready (5 s start-up).
    let guarded = drain_two_nodes_of("cache-warmer", true).await.evicted;
    assert_eq!(guarded.len(), 2);
    let gap = guarded[1] - guarded[0];
    assert!(
        gap >= Duration::from_secs(5),
        "second eviction {gap:?} after the first"
    );
}

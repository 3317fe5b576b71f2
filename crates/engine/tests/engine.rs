//! The engine end to end against the in-process simulator on virtual time: the runbook-000 OS
//! migration with zero downtime, the same without surge (the probe must show the gap),
//! add-before-remove, a PDB that never allows a disruption, abort, and crash safety (the run
//! dropped at many instants and resumed: every machine reimaged exactly once).
//!
//! Nothing here trusts the engine's own report alone: the simulator's probes, invariant
//! recorder and machine counters are read directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use theseus_engine::twin;
use theseus_engine::{EngineOptions, Event, EventSink, Stamped};
use theseus_journal::{Journal, Request};
use theseus_model::Migration;
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

fn file(name: &str) -> String {
    let path = format!("{}/../../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn dce() -> Simulation {
    let s = Scenario::parse("dce", &file("dce-000-centos-to-ubuntu.yaml")).unwrap();
    let e = s.expand("test").unwrap();
    let sim = Simulation::start(&e).await.unwrap();
    sim.wait_steady(Duration::from_secs(3600)).await.unwrap();
    sim
}

/// The shipped runbook-000 migration, with `edit` applied to its YAML.
fn migration(edit: impl Fn(&str) -> String) -> Migration {
    let text = edit(&file("dce-000-migration.yaml"));
    Migration::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn options() -> EngineOptions {
    EngineOptions::default()
}

/// Collects events.
fn recorder() -> (EventSink, Arc<Mutex<Vec<Stamped>>>) {
    let seen: Arc<Mutex<Vec<Stamped>>> = Arc::default();
    let s = seen.clone();
    (
        Arc::new(move |e: &Stamped| s.lock().unwrap().push(e.clone())),
        seen,
    )
}

const WORKERS: [&str; 6] = [
    "centos-worker1",
    "centos-worker2",
    "centos-worker3",
    "centos-worker4",
    "centos-worker5",
    "centos-worker6",
];

fn machine(sim: &Simulation, name: &str) -> serde_json::Value {
    serde_json::to_value(sim.machines.get(name).unwrap()).unwrap()
}

/// Every worker runs Ubuntu, was reimaged exactly once, and no node is cordoned.
async fn assert_migrated_once(sim: &Simulation) {
    for w in WORKERS {
        let m = machine(sim, w);
        assert_eq!(m["osImage"], "Ubuntu 22.04.4 LTS", "{w}: {m}");
        assert_eq!(m["reimages"], 1, "{w} reimaged {} times", m["reimages"]);
    }
    for m in ["centos-master1", "centos-master2", "centos-master3"] {
        assert_eq!(machine(sim, m)["reimages"], 0, "{m} must not be touched");
    }
    let (nodes, _) = sim
        .cluster
        .list(&sim.cluster.res.nodes, None)
        .await
        .unwrap();
    for n in &nodes {
        let v = &n.value.to_value();
        assert_ne!(
            v["spec"]["unschedulable"], true,
            "{} left cordoned",
            v["metadata"]["name"]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn runbook_000_os_migration_has_no_downtime_and_no_violation() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let (events, seen) = recorder();
    let (plan, report) = twin::run(
        &sim,
        &migration(|s| s.to_string()),
        &dir.path().join("j.db"),
        "run-a1",
        events,
        options(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, "completed", "{report:#?}");
    assert_eq!(report.nodes_migrated, 6);
    assert_eq!(plan.waves.iter().map(|w| w.nodes.len()).sum::<usize>(), 6);
    // The simulator's own measurements, not the engine's.
    for p in sim.probes.reports() {
        assert!(p.requests > 0, "{}: no requests", p.service);
        assert_eq!(
            p.failures, 0,
            "{}/{}: {:?}",
            p.namespace, p.service, p.timeline
        );
    }
    assert_eq!(sim.invariants.violations(), vec![], "violations");
    assert_eq!(report.probe_failures, 0);
    assert_eq!(report.pdb_violations, Some(0));
    assert!(
        report.surged >= 1,
        "report-generator must be surged: {report:#?}"
    );
    assert_migrated_once(&sim).await;
    // Waves ran in order, each node's phases in order.
    let ev = seen.lock().unwrap();
    let done: Vec<&str> = ev
        .iter()
        .filter_map(|e| match &e.event {
            Event::NodeDone { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(report.elapsed_seconds > 0.0);
}

#[tokio::test(start_paused = true)]
async fn without_surge_the_single_replica_service_has_a_gap() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration(|s| {
        s.replace(
            "singleReplicaDeployments: true",
            "singleReplicaDeployments: false",
        )
    });
    let (_, report) = twin::run(
        &sim,
        &m,
        &dir.path().join("j.db"),
        "run-b1",
        twin_events(),
        options(),
    )
    .await
    .unwrap();
    let rg = sim
        .probes
        .reports()
        .into_iter()
        .find(|p| p.service == "report-generator")
        .unwrap();
    assert!(
        rg.failures > 0 && rg.longest_gap_seconds > 1.0,
        "evicting the only replica without surge must show downtime: {rg:?}"
    );
    assert_eq!(report.surged, 0);
    // The SLO guard (1 % over 60 s by default) saw it and paused the run.
    assert_eq!(report.state, "paused", "{report:#?}");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("SLO guard: probe shop/report-generator"),
        "{report:#?}"
    );
    // The replicated services still had none.
    for p in sim.probes.reports() {
        if p.service != "report-generator" {
            assert_eq!(p.failures, 0, "{}: {:?}", p.service, p.timeline);
        }
    }
}

fn twin_events() -> EventSink {
    theseus_engine::discard()
}

#[tokio::test(start_paused = true)]
async fn add_before_remove_joins_new_nodes_first() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration(|s| s.replace("type: removeBeforeAdd", "type: addBeforeRemove"));
    let (_, report) = twin::run(
        &sim,
        &m,
        &dir.path().join("j.db"),
        "run-c1",
        twin_events(),
        options(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, "completed", "{report:#?}");
    for p in sim.probes.reports() {
        assert_eq!(p.failures, 0, "{}: {:?}", p.service, p.timeline);
    }
    assert_eq!(sim.invariants.violations(), vec![]);
    for w in WORKERS {
        let old = machine(&sim, w);
        assert_eq!(old["power"], "Off", "{w} decommissioned");
        assert_eq!(old["reimages"], 0);
        let new = machine(&sim, &format!("{w}-rrunc1"));
        assert_eq!(new["osImage"], "Ubuntu 22.04.4 LTS");
        assert_eq!(new["power"], "On");
    }
    let names: Vec<String> = sim
        .cluster
        .list(&sim.cluster.res.nodes, None)
        .await
        .unwrap()
        .0
        .iter()
        .map(|n| n.value["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for w in WORKERS {
        assert!(!names.contains(&w.to_string()), "{w} still registered");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pdb_that_never_allows_a_disruption_fails_the_step_and_pauses() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration(|s| s.replace("timeout: 15m", "timeout: 3m"));
    let plan = twin::plan(&sim, &m).await.unwrap();
    // After planning, someone tightens checkout's budget to its replica count.
    let body = json!({"spec": {"maxUnavailable": null, "minAvailable": 3}});
    sim.cluster
        .merge_patch(&sim.cluster.res.pdbs, "shop", "checkout", None, body)
        .await
        .unwrap();
    let first = plan.waves[0].nodes.clone();
    let record = theseus_engine::run_record("run-d1", &m, &plan, "sim").unwrap();
    let journal = Arc::new(Journal::create(&dir.path().join("j.db"), &record).unwrap());
    let (events, seen) = recorder();
    let engine = twin::engine(
        &sim,
        &m,
        &plan,
        journal.clone(),
        "run-d1",
        events,
        options(),
    );
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, "paused", "{report:#?}");
    let reason = report.reason.clone().unwrap();
    assert!(
        reason.contains("shop/checkout") || reason.contains("checkout"),
        "{reason}"
    );
    assert!(reason.contains("PodDisruptionBudget"), "{reason}");
    // The blocked state was shown while it lasted.
    assert!(seen.lock().unwrap().iter().any(|e| matches!(&e.event,
        Event::Blocked { pdbs, .. } if pdbs.iter().any(|p| p.contains("checkout")))));
    // Nothing else was drained or touched: only the first wave started; no machine reimaged;
    // nothing left cordoned.
    for w in WORKERS {
        assert_eq!(machine(&sim, w)["reimages"], 0, "{w}");
    }
    assert!(report.nodes_left.iter().all(|n| !n.cordoned), "{report:#?}");
    assert!(
        report
            .nodes_left
            .iter()
            .filter(|n| n.status == "failed")
            .all(|n| first.contains(&n.node))
    );
    assert_eq!(report.nodes_migrated, 0);
    assert!(matches!(
        journal.request().unwrap(),
        Some((Request::Pause, _))
    ));
}

#[tokio::test(start_paused = true)]
async fn abort_stops_new_nodes_and_leaves_nothing_cordoned() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let m = migration(|s| s.to_string());
    let plan = twin::plan(&sim, &m).await.unwrap();
    assert!(plan.waves.len() >= 2, "{:?}", plan.waves);
    let record = theseus_engine::run_record("run-e1", &m, &plan, "sim").unwrap();
    let journal = Arc::new(Journal::create(&path, &record).unwrap());
    // Another handle, as `theseus abort` in another process would open.
    let other = Journal::open(&path).unwrap();
    let (events, seen) = recorder();
    let hook = seen.clone();
    let events: EventSink = Arc::new(move |e: &Stamped| {
        if matches!(e.event, Event::WaveDone { wave: 1, .. }) {
            other
                .set_request(Request::Abort, "operator said stop")
                .unwrap();
        }
        events(e);
    });
    let _ = hook;
    let engine = twin::engine(&sim, &m, &plan, journal, "run-e1", events, options());
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, "aborted", "{report:#?}");
    assert_eq!(report.reason.as_deref(), Some("operator said stop"));
    let first = &plan.waves[0].nodes;
    assert_eq!(report.nodes_migrated, first.len());
    for w in WORKERS {
        let expect = u64::from(first.iter().any(|n| n == w));
        assert_eq!(machine(&sim, w)["reimages"], expect, "{w}");
    }
    assert!(report.nodes_left.iter().all(|n| !n.cordoned));
}

/// Drops the running engine at `kill_at` virtual seconds (as a crash would: no cleanup), then
/// resumes from the journal until the run completes.
async fn crash_and_resume(kill_at: u64) {
    let sim = Arc::new(dce().await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let m = migration(|s| s.to_string());
    let s2 = sim.clone();
    let p2 = path.clone();
    let task =
        tokio::spawn(
            async move { twin::run(&s2, &m, &p2, "run-k1", twin_events(), options()).await },
        );
    tokio::time::sleep(Duration::from_secs(kill_at)).await;
    let finished_first = task.is_finished();
    task.abort();
    let _ = task.await;
    let report = if finished_first {
        None
    } else if !path.exists() {
        // Killed before the journal existed: nothing was done; the operator applies again.
        let m = migration(|s| s.to_string());
        Some(
            twin::run(&sim, &m, &path, "run-k2", twin_events(), options())
                .await
                .unwrap()
                .1,
        )
    } else {
        Some(
            twin::resume(&sim, &path, twin_events(), options())
                .await
                .unwrap_or_else(|e| panic!("resume after a kill at {kill_at} s: {e}")),
        )
    };
    if let Some(r) = &report {
        assert_eq!(r.state, "completed", "kill at {kill_at} s: {r:#?}");
    }
    assert_migrated_once(&sim).await;
    assert_eq!(sim.invariants.violations(), vec![], "kill at {kill_at} s");
}

/// Kill points spread over the run (about 2,000 simulated seconds): before the first cordon,
/// mid-drain, mid-surge, right after a reimage request, mid-boot, between waves. `KILL_AT=a,b`
/// runs chosen points instead.
async fn kill_points(points: &[u64]) {
    if let Ok(k) = std::env::var("KILL_AT") {
        for k in k.split(',') {
            crash_and_resume(k.trim().parse().unwrap()).await;
        }
        return;
    }
    for &kill_at in points {
        crash_and_resume(kill_at).await;
    }
}

#[tokio::test(start_paused = true)]
async fn killed_early_in_the_run_resume_reimages_every_node_exactly_once() {
    kill_points(&[0, 1, 3, 7, 12, 20, 35, 60, 95, 130, 200]).await;
}

#[tokio::test(start_paused = true)]
async fn killed_late_in_the_run_resume_reimages_every_node_exactly_once() {
    kill_points(&[320, 500, 700, 905, 910, 960, 1000, 1010, 1100, 1300, 1600]).await;
}

#[tokio::test(start_paused = true)]
async fn manual_approval_pauses_before_the_first_wave_and_resume_approves_it() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let m = migration(|s| s.replace("soak: 30s", "soak: 30s\n    manualApproval: firstWave"));
    let (_, report) = twin::run(&sim, &m, &path, "run-f1", twin_events(), options())
        .await
        .unwrap();
    assert_eq!(report.state, "paused", "{report:#?}");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("manual approval required before wave 1"),
        "{report:#?}"
    );
    for w in WORKERS {
        assert_eq!(
            machine(&sim, w)["reimages"],
            0,
            "nothing may start before the approval"
        );
    }
    let report = twin::resume(&sim, &path, twin_events(), options())
        .await
        .unwrap();
    assert_eq!(report.state, "completed", "{report:#?}");
    assert_migrated_once(&sim).await;
}

#[tokio::test(start_paused = true)]
async fn hooks_run_around_each_node_and_a_failing_pre_hook_changes_nothing() {
    let sim = dce().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let m = migration(|s| {
        s.replace(
            "  probes:\n",
            &format!(
                "  hooks:\n    preNode: [\"echo pre $THESEUS_NODE >> {0}\"]\n    postNode: [\"echo post $THESEUS_NODE >> {0}\"]\n  probes:\n",
                log.display()
            ),
        )
    });
    let (_, report) = twin::run(
        &sim,
        &m,
        &dir.path().join("j.db"),
        "run-g1",
        twin_events(),
        options(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, "completed", "{report:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    for w in WORKERS {
        let pre = text
            .find(&format!("pre {w}\n"))
            .unwrap_or_else(|| panic!("{text}"));
        let post = text
            .find(&format!("post {w}\n"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(pre < post, "{text}");
    }
    // A failing pre-node hook: the step fails before the cordon, the run pauses, nothing moved.
    let sim = dce().await;
    let m = migration(|s| {
        s.replace(
            "  probes:\n",
            "  hooks:\n    preNode: [\"exit 7\"]\n  probes:\n",
        )
    });
    let (_, report) = twin::run(
        &sim,
        &m,
        &dir.path().join("j2.db"),
        "run-g2",
        twin_events(),
        options(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, "paused", "{report:#?}");
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("preNode hook `exit 7` failed: exit code 7"),
        "{reason}"
    );
    for w in WORKERS {
        assert_eq!(machine(&sim, w)["reimages"], 0);
    }
    assert!(report.nodes_left.iter().all(|n| !n.cordoned));
}

//! `theseus simulate`'s engine side: a captured cluster made into a simulator scenario and
//! migrated by the real engine on virtual time. The snapshots are captures of the runbook-000
//! scenario (the simulator captured in-process, as `theseus snapshot` captures a real cluster),
//! so the what-if's figures can be checked against the direct runs of `tests/engine.rs`.

use std::time::Duration;

use theseus_cluster::CaptureOptions;
use theseus_engine::discard;
use theseus_engine::whatif::{self, WhatIfTiming};
use theseus_model::snapshot::WorkloadKind;
use theseus_model::{ClusterSnapshot, Migration};
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

fn file(name: &str) -> String {
    let path = format!("{}/../../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A snapshot of the runbook-000 cluster, captured from the simulator as `theseus snapshot`
/// captures a real cluster.
async fn dce_snapshot() -> ClusterSnapshot {
    let s = Scenario::parse("dce", &file("dce-000-centos-to-ubuntu.yaml")).unwrap();
    let sim = Simulation::start(&s.expand("dce").unwrap()).await.unwrap();
    sim.wait_steady(Duration::from_secs(3600)).await.unwrap();
    theseus_cluster::capture(
        &theseus_cluster::in_process(sim.router()),
        &CaptureOptions {
            source: Some("dce-000".into()),
            ..CaptureOptions::default()
        },
    )
    .await
    .unwrap()
}

fn migration(edit: impl Fn(&str) -> String) -> Migration {
    let text = edit(&file("dce-000-migration.yaml"));
    Migration::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_becomes_a_scenario_with_the_same_nodes_objects_and_probes() {
    let snap = dce_snapshot().await;
    let w = whatif::scenario_from_snapshot(&snap, &WhatIfTiming::default()).unwrap();
    let s = &w.scenario;
    // The scenario is a document the simulator reads back.
    let again = Scenario::parse("what-if", &serde_json::to_string(s).unwrap()).unwrap();
    assert_eq!(&again, s);
    let e = s.expand("what-if").unwrap();
    assert_eq!(e.nodes.len(), 9);
    let w1 = e.nodes.iter().find(|n| n.name == "centos-worker1").unwrap();
    assert_eq!(w1.ip, "10.6.212.21");
    assert_eq!(w1.os_image, "CentOS Linux 7 (Core)");
    assert_eq!(w1.zone.as_deref(), Some("zone-a"));
    assert_eq!(w1.pods, 110);
    let m1 = e.nodes.iter().find(|n| n.name == "centos-master1").unwrap();
    assert_eq!(m1.roles, ["control-plane"]);
    assert_eq!(
        m1.taints[0]["key"], "node-role.kubernetes.io/control-plane",
        "{m1:?}"
    );
    assert_eq!(s.timing.reimage_seconds, 900.0);
    assert_eq!(s.timing.boot_seconds, 90.0);
    let kinds = |kind: &str| -> Vec<String> {
        let mut v: Vec<String> = e
            .manifests
            .iter()
            .filter(|m| m["kind"] == kind)
            .map(|m| {
                format!(
                    "{}/{}",
                    m["metadata"]["namespace"].as_str().unwrap_or(""),
                    m["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        kinds("Deployment"),
        [
            "kube-system/coredns",
            "shop/cache-warmer",
            "shop/checkout",
            "shop/report-generator",
            "shop/storefront"
        ]
    );
    assert_eq!(kinds("StatefulSet"), ["shop/redis"]);
    assert_eq!(
        kinds("DaemonSet"),
        ["kube-system/calico-node", "monitoring/node-exporter"]
    );
    assert_eq!(kinds("PodDisruptionBudget").len(), 4);
    assert_eq!(kinds("Service").len(), 5);
    // Requests, anti-affinity, emptyDir and the observed start-up come from the pods.
    let sf = e
        .manifests
        .iter()
        .find(|m| m["kind"] == "Deployment" && m["metadata"]["name"] == "storefront")
        .unwrap();
    let t = &sf["spec"]["template"];
    assert_eq!(
        t["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "500m"
    );
    assert_eq!(
        t["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(sf["spec"]["replicas"], 4);
    let startup: f64 = t["metadata"]["annotations"]["sim.theseus.io/startup-seconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((7.0..=10.0).contains(&startup), "{startup}");
    let cw = e
        .manifests
        .iter()
        .find(|m| m["metadata"]["name"] == "cache-warmer" && m["kind"] == "Deployment")
        .unwrap();
    assert!(cw["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].is_object());
    // One probe per Service that selects pods, and which workloads each one serves.
    assert_eq!(e.probes.len(), 5);
    assert!(e.probes.iter().all(|p| p.rate_per_second == 5.0));
    assert_eq!(
        w.services["shop/report-generator"],
        ["Deployment shop/report-generator"]
    );
    assert_eq!(w.services["shop/redis"], ["StatefulSet shop/redis"]);
    // The Kubean inventory, kubeadm-config and cluster-info are there for the capture.
    assert!(
        kinds("ConfigMap").contains(&"kubean-system/centos-hosts-conf".to_string()),
        "{:?}",
        kinds("ConfigMap")
    );
    assert!(w.warnings.iter().any(|w| w.contains("placed afresh")));
    // The simulated cluster captures as the original did: same primary, same workloads.
    let sim = Simulation::start(&e).await.unwrap();
    sim.wait_steady(Duration::from_secs(3600)).await.unwrap();
    let again = theseus_cluster::capture(
        &theseus_cluster::in_process(sim.router()),
        &CaptureOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        again.control_plane.implied_primary(&again.nodes),
        snap.control_plane.implied_primary(&snap.nodes)
    );
    let keys = |s: &ClusterSnapshot| {
        let mut v: Vec<(String, i32)> = s
            .workloads
            .iter()
            .filter(|w| w.kind != WorkloadKind::ReplicaSet)
            .map(|w| (w.key(), w.replicas))
            .collect();
        v.sort();
        v
    };
    assert_eq!(keys(&again), keys(&snap));
}

#[tokio::test(start_paused = true)]
async fn the_runbook_000_what_if_completes_without_downtime() {
    let snap = dce_snapshot().await;
    let r = whatif::simulate(
        &snap,
        &migration(|s| s.to_string()),
        &WhatIfTiming::default(),
        discard(),
    )
    .await
    .unwrap();
    assert_eq!(r.report.state, "completed", "{r:#?}");
    assert_eq!(r.report.nodes_migrated, 6);
    assert_eq!(r.report.probe_failures, 0, "{:#?}", r.downtime);
    assert_eq!(r.report.pdb_violations, Some(0));
    assert!(r.clean(), "{:?}", r.problems());
    assert_eq!(r.downtime.len(), 5);
    assert!(r.downtime.iter().all(|d| d.requests > 0 && d.failures == 0));
    assert!(r.report.surged >= 1);
    assert!(
        r.provider.contains("reimage 900 s, boot 90 s"),
        "{}",
        r.provider
    );
    // A reimage of 900 s and a boot of 90 s per wave at least.
    assert!(r.simulated_seconds >= 990.0 * r.waves as f64, "{r:#?}");
    assert!(r.plan_estimated_seconds > 0);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["report"]["state"], "completed");
    assert!(
        json["blockedDrains"].is_array() && json["downtime"][0]["longestGapSeconds"].is_number()
    );
}

#[tokio::test(start_paused = true)]
async fn without_surge_the_what_if_shows_the_single_replica_gap() {
    let snap = dce_snapshot().await;
    let m = migration(|s| {
        s.replace(
            "singleReplicaDeployments: true",
            "singleReplicaDeployments: false",
        )
    });
    let r = whatif::simulate(&snap, &m, &WhatIfTiming::default(), discard())
        .await
        .unwrap();
    let rg = r
        .downtime
        .iter()
        .find(|d| d.service == "shop/report-generator")
        .unwrap();
    assert!(rg.failures > 0 && rg.longest_gap_seconds > 1.0, "{rg:?}");
    assert_eq!(rg.workloads, ["Deployment shop/report-generator"]);
    assert_eq!(
        r.downtime[0].service, "shop/report-generator",
        "worst first"
    );
    for d in &r.downtime[1..] {
        assert_eq!(d.failures, 0, "{d:?}");
    }
    assert!(!r.clean());
    assert!(
        r.problems()
            .iter()
            .any(|p| p.contains("shop/report-generator")),
        "{:?}",
        r.problems()
    );
}

#[tokio::test(start_paused = true)]
async fn the_reimage_time_comes_from_the_spec_unless_given() {
    // The shipped spec: 990 s for the whole action = a 900 s reimage and a 90 s boot.
    assert_eq!(
        WhatIfTiming::default()
            .resolved(&migration(|s| s.to_string()))
            .reimage_seconds,
        Some(900.0)
    );
    let m = migration(|s| s.replace("expectedActionDuration: 990s", "expectedActionDuration: 5m"));
    assert_eq!(
        WhatIfTiming::default().resolved(&m).reimage_seconds,
        Some(210.0)
    );
    let given = WhatIfTiming {
        reimage_seconds: Some(60.0),
        ..WhatIfTiming::default()
    };
    assert_eq!(given.resolved(&m).reimage_seconds, Some(60.0));
    let none = migration(|s| s.replace("    expectedActionDuration: 990s\n", ""));
    assert_eq!(
        WhatIfTiming::default().resolved(&none).reimage_seconds,
        Some(900.0)
    );
    // And the run follows it: six workers in fewer than 6 × 900 s of reimage.
    let snap = dce_snapshot().await;
    let r = whatif::simulate(&snap, &m, &WhatIfTiming::default(), discard())
        .await
        .unwrap();
    assert_eq!(r.report.state, "completed", "{r:#?}");
    assert_eq!(r.timing.reimage_seconds, Some(210.0));
    assert!(r.simulated_seconds < 900.0 * r.waves as f64, "{r:#?}");
}

/// Twelve checkout replicas on six workers: every worker runs two of them, and their PDB
/// (maxUnavailable 1) lets only one go at a time. The second eviction of each drain is
/// refused until the first one's replacement is Ready: a drain really blocked by a PDB, which
/// the report names. With replacements slower than the drain timeout, the run pauses.
fn crowded(snap: &ClusterSnapshot, startup: u32) -> ClusterSnapshot {
    let mut snap = snap.clone();
    let w = snap
        .workloads
        .iter_mut()
        .find(|w| w.name == "checkout" && w.kind == WorkloadKind::Deployment)
        .unwrap();
    w.replicas = 12;
    for p in snap
        .pods
        .iter_mut()
        .filter(|p| p.name.starts_with("checkout-"))
    {
        p.startup_seconds = Some(startup);
    }
    snap
}

#[tokio::test(start_paused = true)]
async fn a_drain_blocked_by_a_pdb_is_reported() {
    let snap = crowded(&dce_snapshot().await, 5);
    let r = whatif::simulate(
        &snap,
        &migration(|s| s.to_string()),
        &WhatIfTiming::default(),
        discard(),
    )
    .await
    .unwrap();
    assert_eq!(r.report.state, "completed", "{r:#?}");
    assert!(
        r.blocked_drains
            .iter()
            .any(|b| b.pdbs == ["shop/checkout"] && b.pod.starts_with("shop/checkout-")),
        "{:#?}",
        r.blocked_drains
    );
    assert!(r.report.evictions_refused > 0);
    assert_eq!(r.report.probe_failures, 0, "{:#?}", r.downtime);
}

#[tokio::test(start_paused = true)]
async fn a_drain_blocked_past_its_timeout_pauses_the_what_if() {
    // Replacements take 5 minutes to be Ready; the drain gives up after 2.
    let snap = crowded(&dce_snapshot().await, 300);
    let m = migration(|s| s.replace("timeout: 15m", "timeout: 2m"));
    let r = whatif::simulate(&snap, &m, &WhatIfTiming::default(), discard())
        .await
        .unwrap();
    assert_eq!(r.report.state, "paused", "{r:#?}");
    let reason = r.report.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("shop/checkout") && reason.contains("PodDisruptionBudget"),
        "{reason}"
    );
    assert!(!r.blocked_drains.is_empty());
    assert!(!r.clean());
    assert!(r.problems()[0].contains("paused"), "{:?}", r.problems());
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_without_nodes_is_refused() {
    let err = whatif::scenario_from_snapshot(&ClusterSnapshot::default(), &WhatIfTiming::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no node"), "{err}");
}

//! `theseus simulate` as a user runs it: a snapshot file (here a capture of the runbook-000
//! scenario, taken in-process as `theseus snapshot` takes one of a real cluster) and the shipped
//! migration spec, through the real binary. Exit codes 0 (clean), 1 (not clean), 2 (bad input).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use theseus_cluster::CaptureOptions;
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

fn theseus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_theseus"))
        .args(args)
        .output()
        .expect("run theseus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scenario_file(name: &str) -> String {
    format!("{}/../../scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Captures the runbook-000 scenario on a paused clock and writes the snapshot to `dir`.
fn dce_snapshot(dir: &Path) -> PathBuf {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let snap = rt.block_on(async {
        let text = std::fs::read_to_string(scenario_file("dce-000-centos-to-ubuntu.yaml")).unwrap();
        let s = Scenario::parse("dce", &text).unwrap();
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
    });
    let path = dir.join("cluster.json");
    std::fs::write(&path, snap.to_json().unwrap()).unwrap();
    path
}

#[test]
fn simulate_runs_the_migration_on_the_snapshot_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dce_snapshot(dir.path());
    let spec = scenario_file("dce-000-migration.yaml");
    let (code, out, err) = theseus(&[
        "simulate",
        "-f",
        &spec,
        "--snapshot",
        snap.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["report"]["state"], "completed", "{v:#}");
    assert_eq!(v["report"]["probeFailures"], 0, "{v:#}");
    assert_eq!(v["report"]["nodesMigrated"], 6, "{v:#}");
    assert_eq!(v["report"]["nodesTotal"], 6, "{v:#}");
    assert_eq!(v["timing"]["reimageSeconds"], 900.0);
    assert!(v["simulatedSeconds"].as_f64().unwrap() > 0.0);
    assert!(v["planEstimatedSeconds"].as_u64().unwrap() > 0);
    let downtime = v["downtime"].as_array().unwrap();
    assert_eq!(downtime.len(), 5, "{v:#}");
    assert!(
        downtime
            .iter()
            .all(|d| d["failures"] == 0 && d["requests"].as_u64().unwrap() > 0)
    );
    assert!(v["blockedDrains"].is_array());
    assert!(!v["warnings"].as_array().unwrap().is_empty());

    // The table, and a migration that is not clean: no surge, so the single-replica service
    // has a gap; exit 1 with the reasons.
    let nosurge = std::fs::read_to_string(&spec).unwrap().replace(
        "singleReplicaDeployments: true",
        "singleReplicaDeployments: false",
    );
    let nosurge_path = dir.path().join("nosurge.yaml");
    std::fs::write(&nosurge_path, nosurge).unwrap();
    let (code, out, err) = theseus(&[
        "simulate",
        "-f",
        nosurge_path.to_str().unwrap(),
        "--snapshot",
        snap.to_str().unwrap(),
        "--reimage-seconds",
        "600",
        "--boot-seconds",
        "60",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    // The report-generator's gap trips the engine's SLO guard, which pauses the run.
    assert!(
        out.contains("Run: paused") && out.contains("SLO guard"),
        "{out}"
    );
    assert!(out.contains("reimage 600 s, boot 60 s"), "{out}");
    assert!(out.contains("shop/report-generator"), "{out}");
    assert!(out.contains("What the what-if ignored"), "{out}");
    assert!(
        err.contains("not clean")
            && err.contains("the run paused")
            && err.contains("probe requests failed")
            && err.contains("shop/report-generator"),
        "{err}"
    );
}

#[test]
fn simulate_refuses_a_missing_or_invalid_snapshot_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let spec = scenario_file("dce-000-migration.yaml");
    let missing = dir.path().join("nope.json");
    let (code, out, err) = theseus(&[
        "simulate",
        "-f",
        &spec,
        "--snapshot",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("cannot read the snapshot") && err.contains("nope.json"),
        "{err}"
    );
    let not_a_snapshot = dir.path().join("bad.json");
    std::fs::write(&not_a_snapshot, "{\"kind\": \"Pod\"}").unwrap();
    let (code, _, err) = theseus(&[
        "simulate",
        "-f",
        &spec,
        "--snapshot",
        not_a_snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.json"), "{err}");
    let empty = dir.path().join("empty.json");
    std::fs::write(
        &empty,
        "{\"apiVersion\": \"theseus.io/v1alpha1\", \"kind\": \"ClusterSnapshot\"}",
    )
    .unwrap();
    let (code, _, err) = theseus(&[
        "simulate",
        "-f",
        &spec,
        "--snapshot",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no node"), "{err}");
    let (code, _, err) = theseus(&[
        "simulate",
        "-f",
        &spec,
        "--snapshot",
        empty.to_str().unwrap(),
        "--boot-seconds=-5",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--boot-seconds"), "{err}");
}

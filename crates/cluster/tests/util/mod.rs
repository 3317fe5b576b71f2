//! Helpers shared by the test binaries: runbook scenarios started in-process on a paused clock,
//! a kube-rs client over the simulator's router, captures.

#![allow(dead_code)]

use std::time::Duration;

use theseus_cluster::{CaptureOptions, capture};
use theseus_model::ClusterSnapshot;
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

/// The text of a shipped scenario (`scenarios/<file>`).
pub fn scenario_text(file: &str) -> String {
    let path = format!("{}/../../scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses a scenario.
pub fn scenario(file: &str) -> Scenario {
    Scenario::parse(file, &scenario_text(file)).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a scenario and waits until it is steady.
pub async fn start(s: &Scenario) -> Simulation {
    let e = s.expand("test").unwrap_or_else(|e| panic!("{e}"));
    let sim = Simulation::start(&e)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.wait_steady(Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim
}

/// A kube-rs client talking to the simulator in-process (no sockets).
pub fn client(sim: &Simulation) -> kube::Client {
    kube::Client::new(sim.router(), "default")
}

/// Options with a fixed capture time, so that two captures can be compared.
pub fn options(page_size: u32) -> CaptureOptions {
    CaptureOptions {
        page_size,
        source: Some("test".into()),
        captured_at: Some("2025-01-01T00:00:00Z".into()),
        inventory: None,
    }
}

/// Captures the simulated cluster with a small page size, so every list is paginated.
pub async fn snapshot(sim: &Simulation) -> ClusterSnapshot {
    capture(&client(sim), &options(7))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (virtual time) until the cluster is settled: nodes Ready, every pod Running and Ready,
/// every workload at its replicas. Unlike `wait_steady` it does not reset the invariant recorder.
pub async fn settle(sim: &Simulation, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sim.unsettled().await {
            None => return Ok(()),
            Some(what) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("not settled after {} s: {what}", timeout.as_secs()));
            }
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

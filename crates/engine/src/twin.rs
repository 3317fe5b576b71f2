//! Runs of the real engine against the in-process simulator (the digital twin), on whatever
//! clock the caller's runtime has: the demo, `theseus simulate`, the tests and the benchmarks.
//!
//! The engine talks to the simulator exactly as it talks to a cluster: a kube-rs client (over
//! the simulator's router instead of a socket), the `sim` provider for machines, and the
//! simulator's probes and invariant recorder for availability.

use std::path::Path;
use std::sync::Arc;

use theseus_cluster::{CaptureOptions, Ops, capture};
use theseus_journal::Journal;
use theseus_model::Migration;
use theseus_model::plan::Plan;
use theseus_providers::sim::SimProvider;
use theseus_sim::sim::Simulation;

use crate::availability::SimAvailability;
use crate::error::EngineError;
use crate::events::EventSink;
use crate::report::Report;
use crate::run::{Engine, EngineOptions, EngineParams};

/// Captures the simulated cluster and plans `migration` on it.
pub async fn plan(sim: &Simulation, migration: &Migration) -> Result<Plan, EngineError> {
    let client = theseus_cluster::in_process(sim.router());
    let snap = capture(
        &client,
        &CaptureOptions {
            source: Some("in-process simulator".into()),
            ..CaptureOptions::default()
        },
    )
    .await
    .map_err(|e| EngineError::Refused(format!("capture of the simulator failed: {e}")))?;
    Ok(theseus_plan::plan(&snap, migration))
}

/// An engine wired to the in-process simulator.
pub fn engine(
    sim: &Simulation,
    migration: &Migration,
    plan: &Plan,
    journal: Arc<Journal>,
    run_id: &str,
    events: EventSink,
    options: EngineOptions,
) -> Engine {
    let router = sim.router();
    Engine::new(EngineParams {
        migration: migration.clone(),
        plan: plan.clone(),
        run_id: run_id.to_string(),
        ops: Ops::new(theseus_cluster::in_process(router.clone())),
        provider: Arc::new(SimProvider::in_process(router.clone())),
        journal,
        availability: Some(Arc::new(SimAvailability::new(SimProvider::in_process(
            router,
        )))),
        events,
        options,
    })
}

/// Plans `migration` on the simulator, starts a journal at `journal` and runs it; returns the
/// plan and the report.
pub async fn run(
    sim: &Simulation,
    migration: &Migration,
    journal: &Path,
    run_id: &str,
    events: EventSink,
    options: EngineOptions,
) -> Result<(Plan, Report), EngineError> {
    let plan = plan(sim, migration).await?;
    Engine::preflight(migration, &plan)?;
    let record = crate::run::run_record(run_id, migration, &plan, "in-process simulator")?;
    let journal = Arc::new(Journal::create(journal, &record)?);
    let report = engine(sim, migration, &plan, journal, run_id, events, options)
        .run()
        .await?;
    Ok((plan, report))
}

/// Resumes the run recorded in `journal` on the simulator.
pub async fn resume(
    sim: &Simulation,
    journal: &Path,
    events: EventSink,
    options: EngineOptions,
) -> Result<Report, EngineError> {
    let journal = Arc::new(Journal::open(journal)?);
    let (run_id, migration, plan) = crate::run::load_run(&journal)?;
    engine(sim, &migration, &plan, journal, &run_id, events, options)
        .run()
        .await
}

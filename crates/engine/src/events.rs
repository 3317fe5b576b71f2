//! What a run tells its watcher: one [`Event`] per change, stamped with the run's clock. The CLI
//! draws progress bars from them, `-o json` prints one per line.

use std::sync::Arc;

use serde::Serialize;

/// One thing that happened in a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// The run started (or resumed).
    RunStarted {
        run_id: String,
        migration: String,
        waves: usize,
        nodes: usize,
        resumed: bool,
        already_done: usize,
    },
    /// A wave started.
    WaveStarted { wave: u32, nodes: Vec<String> },
    /// A node entered a phase (`cordon`, `drain`, `surge`, `replacements`, `action`, `ready`,
    /// `uncordon`, `provision`, `joined`, `decommission`, `removed`).
    Phase {
        node: String,
        wave: u32,
        phase: String,
        detail: String,
    },
    /// A drain is blocked: an eviction was refused (429).
    Blocked {
        node: String,
        wave: u32,
        pod: String,
        pdbs: Vec<String>,
        reason: String,
    },
    /// A node is done.
    NodeDone {
        node: String,
        wave: u32,
        seconds: f64,
    },
    /// A node's step failed.
    NodeFailed {
        node: String,
        wave: u32,
        error: String,
    },
    /// A node's step stopped before its machine was acted on (abort, or another node of the
    /// wave failed); it was uncordoned.
    NodeStopped {
        node: String,
        wave: u32,
        reason: String,
    },
    /// A gate between waves: `waiting` (with what it waits for) or `passed`.
    Gate {
        wave: u32,
        gate: String,
        status: String,
        detail: String,
    },
    /// A wave finished.
    WaveDone { wave: u32, seconds: f64 },
    /// The SLO guard tripped.
    SloBreached { probe: String, detail: String },
    /// The run paused (pause request, a failed step, the SLO guard or a gate).
    Paused { reason: String },
    /// The run stopped on `theseus abort`.
    Aborted { reason: String },
    /// The run finished.
    RunFinished { state: String },
}

/// An event and when it happened (seconds since the run started, on the run's clock: virtual
/// time in simulations).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stamped {
    pub at: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(&Stamped) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> EventSink {
    Arc::new(|_| {})
}

//! theseus-engine: carries out a migration plan on a live cluster.
//!
//! A run takes the plan's waves in order and the nodes of a wave in parallel. Each node goes
//! through a [step](step) — cordon, [drain](drain) with kubectl drain's semantics (surging single-replica
//! Deployments first so that they never go down), wait for the replacements, act on the machine
//! through a [`Provider`](theseus_providers::Provider), wait for the node to come back, uncordon —
//! with every phase written to the [journal](theseus_journal) before and after it acts. Between
//! waves, gates (nodes Ready, nothing Pending, probes clean) and a soak. A Lease keeps two runs
//! off one cluster; `pause` and `abort` arrive through the journal; an SLO guard pauses the run
//! when probes fail.
//!
//! Invariant: **time only through tokio** ([`clock::Clock`]), so the same code runs against a
//! real cluster on real time and against the in-process simulator on virtual time; and **every
//! side effect is preceded by a durable intent**, so that `resume` after a crash at any instant
//! neither repeats a completed node action nor skips one.

pub mod availability;
pub mod clock;
pub mod drain;
pub mod error;
pub mod events;
pub mod guard;
mod hooks;
pub mod report;
mod run;
mod step;
pub mod twin;
pub mod whatif;

pub use availability::{Availability, HttpProbes, SimAvailability};
pub use drain::{DrainEvent, DrainStats, Drainer};
pub use error::{EngineError, StepError};
pub use events::{Event, EventSink, Stamped, discard};
pub use report::{NodeLeft, ProbeResult, Report};
pub use run::{Engine, EngineOptions, EngineParams, load_run, run_record};

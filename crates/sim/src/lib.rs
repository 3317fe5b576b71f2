//! theseus-sim: a Kubernetes-API-compatible digital twin of a cluster.
//!
//! Invariant: this crate knows nothing of theseus. It depends on Kubernetes wire formats only, so it is
//! an independent model of Kubernetes against which the planner's predictions can be checked.

pub mod patch;
pub mod selector;
pub mod table;

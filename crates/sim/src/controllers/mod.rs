//! Controllers of the living cluster, each a task over the in-process [`crate::cluster::Cluster`].

pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod namespace;
pub mod nodelifecycle;
pub mod workloads;

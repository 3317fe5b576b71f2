//! theseus-sim: a Kubernetes-API-compatible digital twin of a cluster.
//!
//! Invariant: this crate knows nothing of theseus. It depends on Kubernetes wire formats only, so it is
//! an independent model of Kubernetes against which the planner's predictions can be checked.
//!
//! - [`store`]: revisions, optimistic concurrency, watch history (the [`store::Store`] trait).
//! - [`server`]: the axum router, discovery, content negotiation; [`rest`]: the verbs;
//!   [`eviction`]: the eviction subresource; [`defaults`]: defaulting and validation.
//! - [`patch`], [`selector`], [`table`]: wire-format building blocks.
//! - [`openapi`]: the OpenAPI v3 index and per-group-version documents kubectl needs.
//! - [`kubelet`]: graceful-deletion confirmation; [`scenario`]: initial objects; [`serve`]: loopback.

pub mod cluster;
pub mod controllers;
pub mod defaults;
pub mod error;
pub mod eviction;
pub mod faults;
pub mod invariants;
pub mod json;
pub mod kubelet;
pub mod machines;
pub mod offload;
pub mod openapi;
pub mod patch;
pub mod probes;
pub mod registry;
pub mod rest;
pub mod scenario;
pub mod scheduler;
pub mod selector;
pub mod serve;
pub mod server;
pub mod sim;
pub mod store;
pub mod table;
pub mod tree;

pub use error::ApiError;
pub use server::{ApiServer, ServerConfig};

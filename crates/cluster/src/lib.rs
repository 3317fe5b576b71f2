//! theseus-cluster: everything theseus says to a Kubernetes API server. The only crate that uses
//! kube-rs.
//!
//! - [`connect`]: a client from kubectl-style flags (`--kubeconfig`, `--context`; else
//!   `KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
//! - [`capture`]: reads a cluster (a real one or the simulator) into a
//!   [`ClusterSnapshot`](theseus_model::ClusterSnapshot): paginated lists of nodes, pods,
//!   workloads, PDBs, Services and namespaces; each pod's owner chain resolved to its top
//!   controller; control-plane static pods; the kubeadm `ClusterConfiguration`, the
//!   `cluster-info` server and a Kubean/Kubespray inventory when present; the primary
//!   control-plane node they imply. Only `get` and `list`: a capture changes nothing.
//! - [`Ops`]: every operation the engine runs against the cluster (cordon, drain by eviction,
//!   surges of single-replica Deployments, workload and budget status, the lock Lease), with
//!   plain structs in and out; [`select_for_drain`] is kubectl drain's pod filter.
//!
//! Errors ([`CaptureError`], [`ClientError`], [`OpsError`]) name what failed and how to fix it: an unreachable
//! server, rejected credentials, the RBAC verb and resource that are missing, a kubeconfig or
//! context that does not exist.

mod capture;
mod client;
mod convert;
mod error;
mod ops;

pub use capture::{CaptureOptions, DEFAULT_PAGE_SIZE, KUBEAN_NAMESPACE, RBAC_RESOURCES, capture};
pub use client::{ClientOptions, Connection, connect, in_process};
pub use error::{CaptureError, ClientError, OpsError};
pub use ops::{
    CORDONED_BY, DrainOptions, DrainSelection, Eviction, LeaseOutcome, LeaseState,
    MIRROR_POD_ANNOTATION, NodeState, Ops, OwnerRef, POD_DELETION_COST, PdbState, PodState,
    SURGE_ANNOTATION, WorkloadState, select_for_drain,
};

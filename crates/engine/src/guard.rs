//! `strategy.protectUnbudgeted` at run time: a replicated workload that no PodDisruptionBudget
//! covers keeps a ready replica, whatever the scheduler did since the plan was made.
//!
//! The planner keeps such workloads within one replica per wave for the pods where it predicts
//! them, but after a few waves the scheduler has put replacements elsewhere than predicted, and
//! the API server enforces nothing for a workload without a PDB: a wave of 200 nodes could then
//! evict every replica of a small Deployment at once (measured: "no endpoints" for a start-up
//! time on 1,000 workers). So the drains check before they evict: a ready pod of a ReplicaSet or
//! StatefulSet with two or more live pods and no PDB is evicted only while another of its pods
//! is Ready, one eviction per workload at a time across every drain of the run (a per-workload
//! lock held from the check until the eviction has made the pod terminating). Otherwise the
//! drain waits, shows it as blocked, and fails at `drain.timeout` like a PDB would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use theseus_cluster::{Ops, OpsError, PodState};
use tokio::time::Instant;

/// How old the list of PDBs may be.
pub const PDB_REFRESH: Duration = Duration::from_secs(30);

/// Namespace → the matchLabels of each PDB in it.
type PdbIndex = BTreeMap<String, Vec<BTreeMap<String, String>>>;
/// (namespace, controller kind, controller name).
type WorkloadKey = (String, String, String);

/// Shared by every drain of a run.
#[derive(Default)]
pub struct UnbudgetedGuard {
    /// (listed at, namespace → matchLabels of each PDB).
    pdbs: tokio::sync::Mutex<(Option<Instant>, PdbIndex)>,
    locks: Mutex<HashMap<WorkloadKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the guard says about one pod.
pub enum Verdict {
    /// A PDB covers it, or it is not a ready pod of a replicated workload: evict as usual.
    NotGuarded,
    /// Another replica is Ready: evict now, holding this until the eviction is done.
    Go(tokio::sync::OwnedMutexGuard<()>),
    /// No other replica is Ready: wait.
    Wait(String),
}

impl UnbudgetedGuard {
    /// Whether a PDB (by its matchLabels) covers the pod. A PDB with only matchExpressions or
    /// an empty selector is not counted: such pods get the guard on top of the PDB (stricter,
    /// never looser).
    async fn budgeted(&self, ops: &Ops, pod: &PodState) -> Result<bool, OpsError> {
        let mut g = self.pdbs.lock().await;
        if g.0.is_none_or(|t| t.elapsed() > PDB_REFRESH) {
            let mut map = PdbIndex::new();
            for p in ops.pdbs().await? {
                map.entry(p.namespace).or_default().push(p.selector_labels);
            }
            *g = (Some(Instant::now()), map);
        }
        Ok(g.1.get(&pod.namespace).is_some_and(|v| {
            v.iter().any(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, val)| pod.labels.get(k) == Some(val))
            })
        }))
    }

    fn lock_of(&self, key: WorkloadKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// Decides for `pod` (see [`Verdict`]).
    pub async fn check(&self, ops: &Ops, pod: &PodState) -> Result<Verdict, OpsError> {
        let Some(owner) = &pod.controller else {
            return Ok(Verdict::NotGuarded);
        };
        if !pod.ready
            || pod.deleting
            || !matches!(owner.kind.as_str(), "ReplicaSet" | "StatefulSet")
            || self.budgeted(ops, pod).await?
        {
            return Ok(Verdict::NotGuarded);
        }
        let lock = self.lock_of((
            pod.namespace.clone(),
            owner.kind.clone(),
            owner.name.clone(),
        ));
        let held = lock.lock_owned().await;
        let siblings = ops.siblings(pod).await?;
        let live = siblings.iter().filter(|s| !s.deleting).count();
        let ready = siblings.iter().filter(|s| s.ready && !s.deleting).count();
        if live < 2 || ready >= 2 {
            return Ok(Verdict::Go(held));
        }
        Ok(Verdict::Wait(format!(
            "{} {}/{} has no PodDisruptionBudget and {ready} of {live} pods Ready: protectUnbudgeted keeps one",
            owner.kind, pod.namespace, owner.name
        )))
    }
}

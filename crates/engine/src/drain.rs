//! A node's drain with kubectl drain's semantics, usable on its own (the engine's step uses it,
//! and so does `drain-bench`): select the pods as kubectl does (`--ignore-daemonsets`,
//! `--delete-emptydir-data`, `--force`, `--pod-selector`), surge single-replica Deployments
//! first so that they never go down, evict the rest in parallel (a 429 is named by its
//! PodDisruptionBudgets and retried as soon as their status allows a disruption again, at the
//! latest every 5 s like kubectl drain, until the drain timeout), delete finished pods, wait
//! for every moved pod to be gone; then, separately, wait for their owners to be Ready again.
//!
//! The drainer writes nothing but the cluster: progress goes to a callback ([`DrainEvent`]),
//! which the step turns into journal entries and run events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use theseus_cluster::{DrainOptions, Eviction, Ops, PodState, select_for_drain};
use theseus_model::spec::DrainPolicy;
use tokio::time::Instant;

use crate::error::StepError;
use crate::guard::{UnbudgetedGuard, Verdict};

/// kubectl drain's pause after a refused eviction: the longest a refused eviction waits before
/// it is tried again.
pub const EVICTION_RETRY: Duration = Duration::from_secs(5);
/// How often a refused eviction reads its budgets' status (a GET each), to retry as soon as
/// one allows a disruption: a wave that drains a budget in rounds (see the planner) waits a
/// start-up time per round, not kubectl's 5 s on top.
pub const BUDGET_POLL: Duration = Duration::from_secs(1);

/// An owner of moved pods: (kind, namespace, name), e.g. `("ReplicaSet", "shop", "web-6c9f")`
/// or `("Deployment", "shop", "report")` for a surged single-replica Deployment.
pub type Owner = (String, String, String);

/// What a drain reports while it runs.
#[derive(Clone, Debug, PartialEq)]
pub enum DrainEvent {
    /// The pods were selected: `to_move` will be evicted, surged or deleted; `skipped` stay
    /// (DaemonSet pods, mirror pods, pods outside `--pod-selector`, pods already terminating).
    Started { to_move: usize, skipped: usize },
    /// A single-replica Deployment got its extra replica (it starts elsewhere; once it is
    /// Ready the old pod goes).
    Surge {
        namespace: String,
        deployment: String,
    },
    /// An eviction was refused (429), sent for every refusal (one per pod every
    /// [`EVICTION_RETRY`] while the budget holds): `pdbs` names the budgets that match the pod
    /// (empty if none could be named), `message` is the server's.
    Blocked {
        pod: String,
        pdbs: Vec<String>,
        message: String,
    },
    /// A pod was evicted (`namespace/name`).
    Evicted { pod: String },
}

/// What a completed drain did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrainStats {
    /// Evictions accepted.
    pub evicted: u64,
    /// Evictions refused (429), retries included.
    pub refused: u64,
    /// Single-replica Deployments surged.
    pub surged: u64,
    /// The owners of what moved: wait for them with [`Drainer::wait_replacements`].
    pub owners: BTreeSet<Owner>,
}

/// Drains nodes. See the module documentation.
pub struct Drainer<'a> {
    pub ops: &'a Ops,
    pub policy: &'a DrainPolicy,
    /// Surge single-replica Deployments instead of evicting their pod.
    pub surge_single_replica: bool,
    /// Recorded in the surge annotation (so that a resumed run finds its surges).
    pub run_id: &'a str,
    /// How often waits look at the cluster.
    pub poll: Duration,
    /// How long a surge replica, and the replacements, may take to be Ready.
    pub pods_ready_timeout: Duration,
    /// After a surge replica is Ready, wait this long before the old pod goes (endpoints
    /// reaching every kube-proxy).
    pub endpoint_settle: Duration,
    /// Progress.
    pub on_event: &'a (dyn Fn(DrainEvent) + Send + Sync),
    /// `protectUnbudgeted` at run time (see [`crate::guard`]); `None`: evict unbudgeted
    /// workloads as kubectl drain does.
    pub guard: Option<&'a UnbudgetedGuard>,
}

/// An eviction that ended without success: blocked by PDBs at the deadline (`pod` set), or
/// another error (`pod` empty, the message in `pdbs`).
struct Blocked {
    pod: String,
    pdbs: Vec<String>,
}

/// Counters of one drain.
#[derive(Default)]
struct Counters {
    evicted: AtomicU64,
    refused: AtomicU64,
    surged: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl Drainer<'_> {
    fn emit(&self, e: DrainEvent) {
        (self.on_event)(e)
    }

    /// Drains `node` (which the caller has cordoned) and waits for every moved pod to be gone,
    /// as kubectl drain does. Does not wait for the replacements: see
    /// [`Drainer::wait_replacements`].
    pub async fn drain(&self, node: &str) -> Result<DrainStats, StepError> {
        let api = |e: theseus_cluster::OpsError| StepError::api(node, e);
        let policy = self.policy;
        let opts = DrainOptions {
            ignore_daemon_sets: policy.ignore_daemon_sets,
            delete_empty_dir_data: policy.delete_empty_dir_data,
            force: policy.force,
            pod_selector: policy.pod_selector.as_deref().map(parse_selector),
        };
        let pods = self.ops.pods_on_node(node).await.map_err(api)?;
        let sel = select_for_drain(&pods, &opts);
        if !sel.refused.is_empty() {
            return Err(StepError::DrainRefused {
                node: node.to_string(),
                reasons: sel
                    .refused
                    .iter()
                    .map(|(p, why)| format!("{}/{}: {why}", p.namespace, p.name))
                    .collect(),
            });
        }
        let grace = (policy.grace_period_seconds >= 0).then_some(policy.grace_period_seconds);
        let drain_limit = policy.timeout.0;
        let deadline = Instant::now() + Duration::from_secs(drain_limit);
        self.emit(DrainEvent::Started {
            to_move: sel.evict.len() + sel.delete_terminal.len(),
            skipped: sel.skipped.len(),
        });
        // Who owns what we move: their replacements are waited for.
        let mut owners = BTreeSet::new();
        let mut surges: BTreeMap<String, (String, PodState)> = BTreeMap::new();
        let mut evict = Vec::new();
        // One lookup per ReplicaSet and Deployment, not per pod (a node often runs several
        // replicas of one owner).
        let mut deployment_of: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        let mut single: BTreeMap<(String, String), bool> = BTreeMap::new();
        for p in &sel.evict {
            let Some(c) = &p.controller else {
                evict.push(p.clone());
                continue;
            };
            if c.kind == "ReplicaSet" {
                let key = (p.namespace.clone(), c.name.clone());
                let dep = match deployment_of.get(&key) {
                    Some(d) => d.clone(),
                    None => {
                        let d = self
                            .ops
                            .deployment_of_replicaset(&p.namespace, &c.name)
                            .await
                            .map_err(api)?;
                        deployment_of.insert(key, d.clone());
                        d
                    }
                };
                if let Some(dep) = dep {
                    let is_single = self.surge_single_replica && {
                        let key = (p.namespace.clone(), dep.clone());
                        match single.get(&key) {
                            Some(s) => *s,
                            None => {
                                let s = self
                                    .ops
                                    .workload("Deployment", &p.namespace, &dep)
                                    .await
                                    .map_err(api)?
                                    .is_some_and(|w| w.desired == 1);
                                single.insert(key, s);
                                s
                            }
                        }
                    };
                    let surge_key = format!("{}/{dep}", p.namespace);
                    if is_single && !surges.contains_key(&surge_key) {
                        owners.insert(("Deployment".into(), p.namespace.clone(), dep.clone()));
                        surges.insert(surge_key, (dep, p.clone()));
                        continue;
                    }
                }
            }
            owners.insert((c.kind.clone(), p.namespace.clone(), c.name.clone()));
            evict.push(p.clone());
        }
        let counters = Counters::default();
        let surge_futs = surges
            .values()
            .map(|(dep, pod)| self.surge(node, dep, pod, deadline, &counters));
        let evict_futs = evict
            .iter()
            .map(|p| self.evict(node, p, grace, deadline, &counters));
        let delete_futs = sel.delete_terminal.iter().map(|p| async move {
            self.ops
                .delete_pod(&p.namespace, &p.name, grace)
                .await
                .map(|_| ())
                .map_err(api)
        });
        let (surged, evicted, deleted) = futures::join!(
            join_all(surge_futs),
            join_all(evict_futs),
            join_all(delete_futs)
        );
        let mut blocked_pods = Vec::new();
        let mut blocked_pdbs = BTreeSet::new();
        for r in surged.into_iter().chain(deleted) {
            r?;
        }
        for r in evicted {
            match r {
                Ok(()) => {}
                Err(Blocked { pod, pdbs }) if !pod.is_empty() => {
                    blocked_pods.push(pod);
                    blocked_pdbs.extend(pdbs);
                }
                Err(Blocked { pdbs, .. }) => {
                    return Err(StepError::Api {
                        node: node.to_string(),
                        message: pdbs.join("; "),
                    });
                }
            }
        }
        if !blocked_pods.is_empty() {
            return Err(StepError::DrainTimeout {
                node: node.to_string(),
                seconds: drain_limit,
                pods: blocked_pods,
                pdbs: blocked_pdbs.into_iter().collect(),
            });
        }
        // Wait for every moved pod to be gone (graceful termination), as kubectl drain does.
        let moved: Vec<&PodState> = sel
            .evict
            .iter()
            .chain(sel.delete_terminal.iter())
            .chain(
                sel.skipped
                    .iter()
                    .filter(|(p, _)| p.deleting)
                    .map(|(p, _)| p),
            )
            .collect();
        self.wait_gone(node, &moved, deadline, drain_limit).await?;
        Ok(DrainStats {
            evicted: Counters::get(&counters.evicted),
            refused: Counters::get(&counters.refused),
            surged: Counters::get(&counters.surged),
            owners,
        })
    }

    /// Waits until none of `pods` exists any more (by uid).
    async fn wait_gone(
        &self,
        node: &str,
        pods: &[&PodState],
        deadline: Instant,
        drain_limit: u64,
    ) -> Result<(), StepError> {
        for p in pods {
            loop {
                let exists = self
                    .ops
                    .pod_exists(&p.namespace, &p.name, &p.uid)
                    .await
                    .map_err(|e| StepError::api(node, e))?;
                if !exists {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Timeout {
                        node: node.to_string(),
                        seconds: drain_limit,
                        what: format!("pod {}/{} to terminate", p.namespace, p.name),
                    });
                }
                tokio::time::sleep(self.poll).await;
            }
        }
        Ok(())
    }

    /// Moves the pod of a single-replica Deployment with no gap: one more replica first (it
    /// starts elsewhere, the node is cordoned), then, once it is Ready, back to one replica with
    /// the old pod marked to be the one removed.
    async fn surge(
        &self,
        node: &str,
        deployment: &str,
        pod: &PodState,
        deadline: Instant,
        counters: &Counters,
    ) -> Result<(), StepError> {
        let api = |e: theseus_cluster::OpsError| StepError::api(node, e);
        let ns = &pod.namespace;
        let original = self
            .ops
            .surge_start(ns, deployment, self.run_id, node)
            .await
            .map_err(api)?;
        Counters::add(&counters.surged);
        self.emit(DrainEvent::Surge {
            namespace: ns.clone(),
            deployment: deployment.to_string(),
        });
        let limit = self.pods_ready_timeout.as_secs();
        let ready_deadline = (Instant::now() + self.pods_ready_timeout).min(deadline);
        loop {
            let w = self
                .ops
                .workload("Deployment", ns, deployment)
                .await
                .map_err(api)?;
            match w {
                None => return Ok(()),
                Some(w) if w.ready > original => break,
                Some(_) => {}
            }
            if Instant::now() >= ready_deadline {
                let _ = self.ops.surge_end(ns, deployment, None).await;
                return Err(StepError::Timeout {
                    node: node.to_string(),
                    seconds: limit,
                    what: format!(
                        "the surge replica of Deployment {ns}/{deployment} to be Ready (the Deployment was scaled back)"
                    ),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
        // Until every kube-proxy routes to the new replica, clients reach only the old one.
        tokio::time::sleep(self.endpoint_settle).await;
        self.ops
            .surge_end(ns, deployment, Some(&pod.name))
            .await
            .map_err(api)?;
        Ok(())
    }

    /// Evicts one pod, retrying refusals (429) until the deadline.
    async fn evict(
        &self,
        node: &str,
        p: &PodState,
        grace: Option<i64>,
        deadline: Instant,
        counters: &Counters,
    ) -> Result<(), Blocked> {
        let name = format!("{}/{}", p.namespace, p.name);
        let fail = |m: String| Blocked {
            pod: String::new(),
            pdbs: vec![m],
        };
        if self.policy.disable_eviction {
            return self
                .ops
                .delete_pod(&p.namespace, &p.name, grace)
                .await
                .map(|_| ())
                .map_err(|e| fail(format!("{node}: delete {name}: {e}")));
        }
        // An unbudgeted workload keeps a ready replica: the lock is held until the eviction.
        let mut held = None;
        if let Some(guard) = self.guard {
            loop {
                match guard
                    .check(self.ops, p)
                    .await
                    .map_err(|e| fail(format!("{node}: evict {name}: {e}")))?
                {
                    Verdict::NotGuarded => break,
                    Verdict::Go(h) => {
                        held = Some(h);
                        break;
                    }
                    Verdict::Wait(why) => {
                        self.emit(DrainEvent::Blocked {
                            pod: name.clone(),
                            pdbs: Vec::new(),
                            message: why.clone(),
                        });
                        if Instant::now() >= deadline {
                            return Err(fail(format!(
                                "{node}: {name} not evicted by the drain timeout: {why}; add a PodDisruptionBudget, get the workload's pods Ready, or set strategy.protectUnbudgeted: false, then `theseus resume`"
                            )));
                        }
                        tokio::time::sleep(BUDGET_POLL).await;
                    }
                }
            }
        }
        // The budgets that refused this pod, looked up once.
        let mut budgets: Option<Vec<String>> = None;
        loop {
            let outcome = self.ops.try_evict(&p.namespace, &p.name, grace).await;
            drop(held.take());
            match outcome {
                Ok(Eviction::Evicted) => {
                    Counters::add(&counters.evicted);
                    self.emit(DrainEvent::Evicted { pod: name });
                    return Ok(());
                }
                Ok(Eviction::Gone) => return Ok(()),
                Ok(Eviction::Blocked { message, pdbs }) => {
                    Counters::add(&counters.refused);
                    let pdbs = match &budgets {
                        Some(b) => b.clone(),
                        // The server named the budget that refused (it checks one per pod).
                        None if !pdbs.is_empty() => {
                            budgets = Some(pdbs.clone());
                            pdbs
                        }
                        None => {
                            let b = self
                                .ops
                                .pdbs_of_pod(&p.namespace, &p.name)
                                .await
                                .map_err(|e| fail(format!("{node}: evict {name}: {e}")))?;
                            budgets = Some(b.clone());
                            b
                        }
                    };
                    self.emit(DrainEvent::Blocked {
                        pod: name.clone(),
                        pdbs: pdbs.clone(),
                        message,
                    });
                    if Instant::now() >= deadline {
                        return Err(Blocked { pod: name, pdbs });
                    }
                    self.wait_budgets(&p.namespace, &pdbs, deadline).await;
                }
                Err(e) => return Err(fail(format!("{node}: evict {name}: {e}"))),
            }
        }
    }

    /// After a refusal: waits until every one of `pdbs` allows a disruption, at most
    /// [`EVICTION_RETRY`] (and not past `deadline`), reading them every [`BUDGET_POLL`]. A
    /// budget that cannot be read, or no budget named at all, waits the whole retry time.
    async fn wait_budgets(&self, namespace: &str, pdbs: &[String], deadline: Instant) {
        let until = (Instant::now() + EVICTION_RETRY).min(deadline.max(Instant::now()));
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(BUDGET_POLL.min(left)).await;
            if pdbs.is_empty() {
                continue;
            }
            let mut all = true;
            for b in pdbs {
                match self.ops.pdb(namespace, b).await {
                    Ok(Some(st)) if st.disruptions_allowed > 0 => {}
                    Ok(None) => {}
                    _ => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                return;
            }
        }
    }

    /// Waits until every owner has all its replicas Ready (owners that no longer exist count
    /// as done), at most [`Drainer::pods_ready_timeout`].
    pub async fn wait_replacements(
        &self,
        node: &str,
        owners: &BTreeSet<Owner>,
    ) -> Result<(), StepError> {
        let limit = self.pods_ready_timeout.as_secs();
        let deadline = Instant::now() + self.pods_ready_timeout;
        loop {
            let mut short = Vec::new();
            for (kind, ns, name) in owners {
                if let Some(w) = self
                    .ops
                    .workload(kind, ns, name)
                    .await
                    .map_err(|e| StepError::api(node, e))?
                    && w.ready < w.desired
                {
                    short.push(format!(
                        "{kind} {ns}/{name} {}/{} Ready",
                        w.ready, w.desired
                    ));
                }
            }
            if short.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    node: node.to_string(),
                    seconds: limit,
                    what: format!("replacements to be Ready: {}", short.join(", ")),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// `k=v,k2=v2` (drain's `--pod-selector`, equality only).
pub(crate) fn parse_selector(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((
                k.trim().trim_end_matches('=').to_string(),
                v.trim().trim_start_matches('=').to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_equality_pairs() {
        let m = parse_selector("app=web, tier==front");
        assert_eq!(m.get("app").map(String::as_str), Some("web"));
        assert_eq!(m.get("tier").map(String::as_str), Some("front"));
        assert_eq!(m.len(), 2);
    }
}

//! The invariant recorder: watches the cluster independently of whoever acts on it and records
//! what a careful operator must never cause, so tests can assert "nothing was violated" without
//! trusting theseus.
//!
//! - `PdbBelowMinimum`: a pod of a PodDisruptionBudget started terminating (evicted or deleted)
//!   while fewer healthy pods than the budget's minimum remained. Computed here from the PDB's
//!   spec and the pods, not from the PDB status the eviction code reads.
//! - `ControllerBelowReplicas`: a ReplicaSet or StatefulSet had fewer ready pods than its
//!   `spec.replicas` for longer than the tolerance (a lost pod).
//! - `NodeLeftCordoned`: reported by [`Invariants::final_check`]: a node that was schedulable at the
//!   start is cordoned at the end.

use crate::json::Ptr;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::cluster::{Change, Cluster, ns_name};
use crate::selector::LabelSelector;
use crate::store::{EventType, StoredObject};

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub kind: String,
    /// Seconds since the recorder started.
    pub at_seconds: f64,
    pub object: String,
    pub message: String,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    pods: BTreeMap<Key, Arc<StoredObject>>,
    pdbs: BTreeMap<Key, Arc<StoredObject>>,
    /// ReplicaSets and StatefulSets: key -> (desired, ready, below since).
    controllers: BTreeMap<Key, (String, i64, i64, Option<tokio::time::Instant>)>,
    violations: Vec<Violation>,
    reported_controllers: BTreeSet<Key>,
    schedulable_at_start: Option<BTreeSet<String>>,
}

/// Handle on the recorder; cheap to clone.
#[derive(Clone, Default)]
pub struct Invariants {
    state: Arc<Mutex<State>>,
    start: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// The recorder's tasks: they run until [`Invariants::stop`] (the simulation's drop).
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

fn healthy(pod: &Value) -> bool {
    pod.ptr("/metadata/deletionTimestamp").is_none()
        && pod.ptr("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .ptr("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn int_or_percent(v: &Value, total: i64, round_up: bool) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = p * total;
            Some(if round_up { (x + 99) / 100 } else { x / 100 })
        }
        _ => None,
    }
}

impl Invariants {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_seconds(&self) -> f64 {
        let start = *self.start.lock().unwrap_or_else(|p| p.into_inner());
        start.map_or(0.0, |s| {
            tokio::time::Instant::now()
                .saturating_duration_since(s)
                .as_secs_f64()
        })
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// Forget what was recorded so far (e.g. after the cluster settled).
    pub fn reset(&self) {
        self.lock().violations.clear();
    }

    /// Records the nodes that are schedulable now, for [`Invariants::final_check`].
    pub async fn mark_start(&self, cluster: &Cluster) {
        if let Ok((nodes, _)) = cluster.list(&cluster.res.nodes, None).await {
            let set = nodes
                .iter()
                .filter(|n| {
                    n.value.ptr("/spec/unschedulable").and_then(Value::as_bool) != Some(true)
                })
                .map(|n| ns_name(&n.value).1.to_string())
                .collect();
            self.lock().schedulable_at_start = Some(set);
        }
    }

    /// End-of-run checks: nodes left cordoned. Returns every violation so far.
    pub async fn final_check(&self, cluster: &Cluster) -> Vec<Violation> {
        let at = self.now_seconds();
        if let Ok((nodes, _)) = cluster.list(&cluster.res.nodes, None).await {
            let mut st = self.lock();
            let start = st.schedulable_at_start.clone().unwrap_or_default();
            for n in nodes {
                let name = ns_name(&n.value).1.to_string();
                if start.contains(&name)
                    && n.value.ptr("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
                {
                    st.violations.push(Violation {
                        kind: "NodeLeftCordoned".into(),
                        at_seconds: at,
                        object: format!("node/{name}"),
                        message: format!(
                            "node {name} was schedulable at the start and is cordoned at the end"
                        ),
                    });
                }
            }
        }
        self.violations()
    }

    fn check_pdbs(&self, st: &mut State, pod: &Value, at: f64, how: &str) {
        let (ns, name) = ns_name(pod);
        let labels = pod.ptr("/metadata/labels");
        let pdbs: Vec<(Key, Arc<StoredObject>)> = st
            .pdbs
            .range((ns.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == ns)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, pdb) in pdbs {
            let pdb = &pdb.value;
            let Some(Ok(sel)) = pdb.ptr("/spec/selector").map(LabelSelector::from_json) else {
                continue;
            };
            if sel.is_empty() || !sel.matches(labels) {
                continue;
            }
            let members: Vec<&Value> = st
                .pods
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
                .map(|(_, p)| &p.value)
                .filter(|p| sel.matches(p.ptr("/metadata/labels")))
                .collect();
            let expected = members.len() as i64;
            let healthy_now = members.iter().filter(|p| healthy(p)).count() as i64;
            let desired = if let Some(m) = pdb.ptr("/spec/minAvailable") {
                int_or_percent(m, expected, true).unwrap_or(0)
            } else if let Some(m) = pdb.ptr("/spec/maxUnavailable") {
                expected - int_or_percent(m, expected, false).unwrap_or(0)
            } else {
                0
            };
            if healthy_now < desired {
                st.violations.push(Violation {
                    kind: "PdbBelowMinimum".into(),
                    at_seconds: at,
                    object: format!("poddisruptionbudget/{}/{}", key.0, key.1),
                    message: format!(
                        "pod {ns}/{name} was {how} while {healthy_now} healthy pods remained and the budget needs {desired}"
                    ),
                });
            }
        }
    }

    /// Stops recording (the simulation's drop).
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    fn track(&self, t: tokio::task::JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Starts recording. `tolerance`: how long a controller may stay below its replicas.
    pub fn spawn(cluster: Cluster, tolerance: Duration) -> Invariants {
        let inv = Invariants::default();
        *inv.start.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u8, Change)>();
        for (tag, r) in [
            (0u8, cluster.res.pods.clone()),
            (1, cluster.res.pdbs.clone()),
            (2, cluster.res.replicasets.clone()),
            (3, cluster.res.statefulsets.clone()),
        ] {
            let mut inner = cluster.informer_channel(&r);
            let tx = tx.clone();
            let me = inv.clone();
            me.track(tokio::spawn(async move {
                while let Some(c) = inner.recv().await {
                    if tx.send((tag, c)).is_err() {
                        return;
                    }
                }
            }));
        }
        let me = inv.clone();
        let tracker = inv.clone();
        tracker.track(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    biased;
                    msg = rx.recv() => {
                        let Some((tag, change)) = msg else { return };
                        me.apply(tag, change);
                    }
                    _ = tick.tick() => me.check_controllers(tolerance),
                }
            }
        }));
        inv
    }

    fn apply(&self, tag: u8, change: Change) {
        let at = self.now_seconds();
        let mut st = self.lock();
        let upsert =
            |st: &mut State, o: &Arc<StoredObject>, deleted: bool, previous: Option<&Value>| {
                let v = &o.value;
                let (ns, name) = ns_name(v);
                let key = (ns.to_string(), name.to_string());
                match tag {
                    0 => {
                        let was_terminating = previous
                            .is_some_and(|p| p.ptr("/metadata/deletionTimestamp").is_some());
                        let now_terminating = v.ptr("/metadata/deletionTimestamp").is_some();
                        // Only a healthy pod's termination can take a budget below its minimum.
                        let was_healthy = previous.is_some_and(healthy);
                        if deleted {
                            st.pods.remove(&key);
                            if !was_terminating && was_healthy {
                                self.check_pdbs(st, v, at, "deleted");
                            }
                        } else {
                            st.pods.insert(key, o.clone());
                            if now_terminating && !was_terminating && was_healthy {
                                self.check_pdbs(st, v, at, "evicted or deleted");
                            }
                        }
                    }
                    1 => {
                        if deleted {
                            st.pdbs.remove(&key);
                        } else {
                            st.pdbs.insert(key, o.clone());
                        }
                    }
                    _ => {
                        if deleted {
                            st.controllers.remove(&key);
                        } else {
                            let kind = if tag == 2 {
                                "replicaset"
                            } else {
                                "statefulset"
                            };
                            let desired =
                                v.ptr("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                            let ready = v
                                .ptr("/status/readyReplicas")
                                .and_then(Value::as_i64)
                                .unwrap_or(0);
                            let since = st.controllers.get(&key).and_then(|c| c.3);
                            let below = if ready < desired {
                                since.or(Some(tokio::time::Instant::now()))
                            } else {
                                None
                            };
                            if below.is_none() {
                                st.reported_controllers.remove(&key);
                            }
                            st.controllers
                                .insert(key, (kind.to_string(), desired, ready, below));
                        }
                    }
                }
            };
        match change {
            Change::Sync(items) => {
                for o in items {
                    upsert(&mut st, &o, false, None);
                }
            }
            Change::Event(e) => {
                let prev = e.previous.as_ref().map(|p| &p.value);
                upsert(&mut st, &e.object, e.kind == EventType::Deleted, prev);
            }
        }
    }

    fn check_controllers(&self, tolerance: Duration) {
        let at = self.now_seconds();
        let now = tokio::time::Instant::now();
        let mut st = self.lock();
        let late: Vec<(Key, String, i64, i64)> = st
            .controllers
            .iter()
            .filter(|(k, c)| {
                c.3.is_some_and(|s| now.saturating_duration_since(s) > tolerance)
                    && !st.reported_controllers.contains(*k)
            })
            .map(|(k, c)| (k.clone(), c.0.clone(), c.1, c.2))
            .collect();
        for (key, kind, desired, ready) in late {
            st.reported_controllers.insert(key.clone());
            st.violations.push(Violation {
                kind: "ControllerBelowReplicas".into(),
                at_seconds: at,
                object: format!("{kind}/{}/{}", key.0, key.1),
                message: format!(
                    "{ready}/{desired} ready for more than {} s",
                    tolerance.as_secs()
                ),
            });
        }
    }
}

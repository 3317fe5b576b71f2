//! The invariant recorder: watches the cluster independently of whoever acts on it and records
//! what a careful operator must never cause, so tests can assert "nothing was violated" without
//! trusting theseus.
//!
//! - `PdbBelowMinimum`: a pod of a PodDisruptionBudget started terminating (evicted or deleted)
//!   while fewer healthy pods than the budget's minimum remained. Computed here from the PDB's
//!   spec, the pods and their controllers, not from the PDB status the eviction code reads, and
//!   with its own code (it exists to catch the disruption controller's mistakes). The minimum is
//!   the one the real disruption controller derives: for an integer `minAvailable`, that number
//!   (the expected count is the number of matching pods); for `maxUnavailable` and a percentage
//!   `minAvailable`, the expected count is the scale of the pods' controllers (a ReplicaSet owned
//!   by a Deployment counts as the Deployment; ReplicaSets and StatefulSets as themselves), so
//!   that pending replacements and terminating pods do not inflate it; percentages round up.
//!   Pods are indexed per budget, so a check costs O(pods of that budget).
//! - `ControllerBelowReplicas`: a ReplicaSet or StatefulSet had fewer ready pods than its
//!   `spec.replicas` for longer than the tolerance (a lost pod).
//! - `NodeLeftCordoned`: reported by [`Invariants::final_check`]: a node that was schedulable at the
//!   start is cordoned at the end.

use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{Change, Cluster, ns_name};
use crate::controllers::endpoints::label_pairs;
use crate::controllers::workloads::key_of;
use crate::offload;
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

/// What the recorder keeps of a pod.
struct PodEntry {
    obj: Arc<StoredObject>,
    healthy: bool,
    /// The controller reference: (kind, uid).
    controller: Option<(String, String)>,
    /// Names of the budgets (same namespace) whose selector matches the pod.
    pdbs: Vec<String>,
}

/// A budget's minimum, as written in its spec.
#[derive(Clone, Debug, PartialEq)]
enum Minimum {
    /// `minAvailable` as an integer: the expected count is the number of matching pods.
    MinCount(i64),
    /// `minAvailable` as a percentage of the controllers' scale.
    MinPercent(i64),
    /// `maxUnavailable` (integer or percentage) off the controllers' scale.
    MaxUnavailable(Tree),
    None,
}

struct PdbEntry {
    /// `None`: selects nothing (no, empty or invalid selector).
    selector: Option<LabelSelector>,
    /// The selector as written, to notice a change.
    raw_selector: Option<Tree>,
    minimum: Minimum,
    /// Names of the matching pods of the namespace.
    members: BTreeSet<String>,
}

/// A workload controller with a scale: (kind, spec.replicas, its own controller (kind, uid)).
struct Scaled {
    kind: &'static str,
    replicas: i64,
    owner: Option<(String, String)>,
}

/// Budgets of one namespace, indexed by one `matchLabels` pair (key → value → names); `any`
/// holds those selecting by expressions only.
#[derive(Default)]
struct NsBudgets {
    by_pair: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    any: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<Key, PodEntry>,
    pdbs: BTreeMap<Key, PdbEntry>,
    budgets: BTreeMap<String, NsBudgets>,
    /// Pod names by (namespace, label key, label value), for a new budget's first members.
    pods_by_label: BTreeMap<(String, String, String), BTreeSet<String>>,
    /// ReplicaSets, StatefulSets and Deployments by uid.
    scaled: BTreeMap<String, Scaled>,
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

fn healthy(pod: &Tree) -> bool {
    pod.ptr("/metadata/deletionTimestamp").is_none()
        && pod.ptr("/status/phase").and_then(Tree::as_str) == Some("Running")
        && pod
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"].as_str() == Some("Ready") && c["status"].as_str() == Some("True")
                })
            })
}

/// An integer, or a percentage of `total` rounded up (as the disruption controller rounds both
/// `minAvailable` and `maxUnavailable`).
fn int_or_percent_up(v: &Tree, total: i64) -> Option<i64> {
    match v {
        n if n.is_number() => n.as_i64(),
        Tree::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((p.saturating_mul(total).saturating_add(99)).div_euclid(100))
        }
        _ => None,
    }
}

fn controller_of(pod: &Tree) -> Option<(String, String)> {
    pod.ptr("/metadata/ownerReferences")
        .and_then(Tree::as_array)?
        .iter()
        .find(|r| r.field("controller").and_then(Tree::as_bool) == Some(true))
        .map(|r| {
            let s = |f: &str| r.field(f).and_then(Tree::as_str).unwrap_or("").to_string();
            (s("kind"), s("uid"))
        })
}

fn minimum_of(pdb: &Tree) -> Minimum {
    let spec = pdb.field("spec");
    let field = |f: &str| spec.and_then(|s| s.get(f)).filter(|v| !v.is_null());
    if let Some(m) = field("maxUnavailable") {
        return Minimum::MaxUnavailable(m.clone());
    }
    match field("minAvailable") {
        Some(n) if n.is_number() => Minimum::MinCount(n.as_i64().unwrap_or(0)),
        Some(Tree::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse().ok()) {
            Some(p) => Minimum::MinPercent(p),
            None => Minimum::None,
        },
        _ => Minimum::None,
    }
}

impl NsBudgets {
    /// The pair a budget is indexed by: its first `matchLabels` pair, if any.
    fn pair(selector: Option<&Tree>) -> Option<(String, String)> {
        selector?
            .field("matchLabels")?
            .as_object()?
            .iter()
            .find_map(|(k, v)| v.as_str().map(|v| (k.to_string(), v.to_string())))
    }

    fn add(&mut self, pair: Option<(String, String)>, name: &str) {
        match pair {
            Some((k, v)) => {
                self.by_pair
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .insert(name.to_string());
            }
            None => {
                self.any.insert(name.to_string());
            }
        }
    }

    fn remove(&mut self, pair: Option<(String, String)>, name: &str) {
        match pair {
            Some((k, v)) => {
                if let Some(values) = self.by_pair.get_mut(&k) {
                    if let Some(set) = values.get_mut(&v) {
                        set.remove(name);
                        if set.is_empty() {
                            values.remove(&v);
                        }
                    }
                    if values.is_empty() {
                        self.by_pair.remove(&k);
                    }
                }
            }
            None => {
                self.any.remove(name);
            }
        }
    }

    /// Budgets that may select a pod with these labels (to be confirmed by their selector).
    fn candidates(&self, labels: Option<&Tree>) -> BTreeSet<&String> {
        let mut out: BTreeSet<&String> = self.any.iter().collect();
        if let Some(m) = labels.and_then(Tree::as_object) {
            for (k, v) in m {
                if let Some(set) = v
                    .as_str()
                    .and_then(|v| self.by_pair.get(k.as_str())?.get(v))
                {
                    out.extend(set.iter());
                }
            }
        }
        out
    }
}

impl State {
    /// Adds (or removes) the pod `obj` under each of its labels.
    fn index_labels(&mut self, key: &Key, obj: &Tree, add: bool) {
        for (k, v) in label_pairs(obj) {
            let ik = (key.0.clone(), k, v);
            if add {
                self.pods_by_label
                    .entry(ik)
                    .or_default()
                    .insert(key.1.clone());
            } else if let Some(set) = self.pods_by_label.get_mut(&ik) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.pods_by_label.remove(&ik);
                }
            }
        }
    }

    /// Names of the budgets of `ns` whose selector matches `labels`.
    fn matching_pdbs(&self, ns: &str, labels: Option<&Tree>) -> Vec<String> {
        let Some(b) = self.budgets.get(ns) else {
            return Vec::new();
        };
        b.candidates(labels)
            .into_iter()
            .filter(|name| {
                self.pdbs
                    .get(&(ns.to_string(), (*name).clone()))
                    .and_then(|p| p.selector.as_ref())
                    .is_some_and(|s| s.matches(labels))
            })
            .cloned()
            .collect()
    }

    fn put_pod(&mut self, o: &Arc<StoredObject>) {
        let (ns, name) = ns_name(&o.value);
        let key = (ns.to_string(), name.to_string());
        let labels = o.value.ptr("/metadata/labels");
        let pdbs = match self.pods.get(&key) {
            Some(old) if old.obj.value.ptr("/metadata/labels") == labels => old.pdbs.clone(),
            _ => {
                self.unlink_pod(&key);
                if let Some(old) = self.pods.get(&key) {
                    let old_obj = old.obj.clone();
                    self.index_labels(&key, &old_obj.value, false);
                }
                self.index_labels(&key, &o.value, true);
                let pdbs = self.matching_pdbs(ns, labels);
                for p in &pdbs {
                    if let Some(e) = self.pdbs.get_mut(&(key.0.clone(), p.clone())) {
                        e.members.insert(key.1.clone());
                    }
                }
                pdbs
            }
        };
        let entry = PodEntry {
            healthy: healthy(&o.value),
            controller: controller_of(&o.value),
            obj: o.clone(),
            pdbs,
        };
        self.pods.insert(key, entry);
    }

    /// Removes a pod from the budgets it was a member of.
    fn unlink_pod(&mut self, key: &Key) {
        let Some(old) = self.pods.get(key) else {
            return;
        };
        for p in old.pdbs.clone() {
            if let Some(e) = self.pdbs.get_mut(&(key.0.clone(), p)) {
                e.members.remove(&key.1);
            }
        }
    }

    fn drop_pod(&mut self, key: &Key) {
        self.unlink_pod(key);
        if let Some(old) = self.pods.remove(key) {
            self.index_labels(key, &old.obj.value, false);
        }
    }

    fn put_pdb(&mut self, o: &Arc<StoredObject>) {
        let (ns, name) = ns_name(&o.value);
        let key = (ns.to_string(), name.to_string());
        let raw = o.value.ptr("/spec/selector").filter(|s| !s.is_null());
        let minimum = minimum_of(&o.value);
        if let Some(e) = self.pdbs.get_mut(&key)
            && e.raw_selector.as_ref() == raw
        {
            e.minimum = minimum; // a status write, or a new minimum
            return;
        }
        self.drop_pdb(&key);
        let selector = raw
            .and_then(|s| LabelSelector::from_json(s).ok())
            .filter(|s| !s.is_empty());
        let mut members = BTreeSet::new();
        if let Some(sel) = &selector {
            // Candidates: the pods with the budget's first matchLabels pair, else the namespace's.
            let candidates: Vec<&String> = match NsBudgets::pair(raw) {
                Some((k, v)) => self
                    .pods_by_label
                    .get(&(key.0.clone(), k, v))
                    .map(|set| set.iter().collect())
                    .unwrap_or_default(),
                None => self
                    .pods
                    .range((key.0.clone(), String::new())..)
                    .take_while(|(k, _)| k.0 == key.0)
                    .map(|(k, _)| &k.1)
                    .collect(),
            };
            for pod in candidates {
                if let Some(p) = self.pods.get(&(key.0.clone(), pod.clone()))
                    && sel.matches(p.obj.value.ptr("/metadata/labels"))
                {
                    members.insert(pod.clone());
                }
            }
            for pod in &members {
                if let Some(p) = self.pods.get_mut(&(key.0.clone(), pod.clone())) {
                    p.pdbs.push(key.1.clone());
                }
            }
            self.budgets
                .entry(key.0.clone())
                .or_default()
                .add(NsBudgets::pair(raw), &key.1);
        }
        self.pdbs.insert(
            key,
            PdbEntry {
                selector,
                raw_selector: raw.cloned(),
                minimum,
                members,
            },
        );
    }

    fn drop_pdb(&mut self, key: &Key) {
        let Some(old) = self.pdbs.remove(key) else {
            return;
        };
        for pod in &old.members {
            if let Some(p) = self.pods.get_mut(&(key.0.clone(), pod.clone())) {
                p.pdbs.retain(|n| *n != key.1);
            }
        }
        if old.selector.is_some()
            && let Some(b) = self.budgets.get_mut(&key.0)
        {
            b.remove(NsBudgets::pair(old.raw_selector.as_ref()), &key.1);
            if b.by_pair.is_empty() && b.any.is_empty() {
                self.budgets.remove(&key.0);
            }
        }
    }

    /// The scale of a pod's controller: (the uid it is counted under, replicas). `None` for a
    /// pod without a controller, or one whose controller has no scale the recorder knows.
    fn scale_of<'a>(&'a self, controller: &'a (String, String)) -> Option<(&'a str, i64)> {
        let (_, uid) = controller;
        let c = self.scaled.get(uid)?;
        if c.kind == "ReplicaSet"
            && let Some((okind, ouid)) = &c.owner
            && okind == "Deployment"
            && let Some(d) = self.scaled.get(ouid)
        {
            return Some((ouid.as_str(), d.replicas));
        }
        Some((uid.as_str(), c.replicas))
    }

    /// (healthy pods, pods the budget needs) for one budget, from its members.
    fn budget_numbers(&self, ns: &str, pdb: &PdbEntry) -> (i64, i64) {
        let members: Vec<&PodEntry> = pdb
            .members
            .iter()
            .filter_map(|n| self.pods.get(&(ns.to_string(), n.clone())))
            .collect();
        let healthy_now = members.iter().filter(|p| p.healthy).count() as i64;
        let controllers_scale = || {
            let mut scales: BTreeMap<&str, i64> = BTreeMap::new();
            for p in &members {
                if let Some((uid, n)) = p.controller.as_ref().and_then(|c| self.scale_of(c)) {
                    scales.insert(uid, n);
                }
            }
            scales.values().fold(0i64, |a, b| a.saturating_add(*b))
        };
        let desired = match &pdb.minimum {
            Minimum::MinCount(n) => *n,
            Minimum::MinPercent(p) => {
                let expected = controllers_scale();
                (p.saturating_mul(expected).saturating_add(99)).div_euclid(100)
            }
            Minimum::MaxUnavailable(m) => {
                let expected = controllers_scale();
                let max = int_or_percent_up(m, expected).unwrap_or(0);
                expected.saturating_sub(max).max(0)
            }
            Minimum::None => 0,
        };
        (healthy_now, desired)
    }
}

impl Invariants {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state and the current time, for a job of the offload thread.
    fn stamp(&self) -> (Arc<Mutex<State>>, f64, tokio::time::Instant) {
        (
            self.state.clone(),
            self.now_seconds(),
            tokio::time::Instant::now(),
        )
    }

    fn now_seconds(&self) -> f64 {
        let start = *self.start.lock().unwrap_or_else(|p| p.into_inner());
        start.map_or(0.0, |s| {
            tokio::time::Instant::now()
                .saturating_duration_since(s)
                .as_secs_f64()
        })
    }

    /// Every violation recorded so far (of the events the recorder has been sent).
    pub fn violations(&self) -> Vec<Violation> {
        offload::wait();
        self.lock().violations.clone()
    }

    /// Forget what was recorded so far (e.g. after the cluster settled).
    pub fn reset(&self) {
        offload::wait();
        self.lock().violations.clear();
    }

    /// Records the nodes that are schedulable now, for [`Invariants::final_check`].
    pub async fn mark_start(&self, cluster: &Cluster) {
        if let Ok((nodes, _)) = cluster.list(&cluster.res.nodes, None).await {
            let set = nodes
                .iter()
                .filter(|n| {
                    n.value.ptr("/spec/unschedulable").and_then(Tree::as_bool) != Some(true)
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
            offload::wait();
            let mut st = self.lock();
            let start = st.schedulable_at_start.clone().unwrap_or_default();
            for n in nodes {
                let name = ns_name(&n.value).1.to_string();
                if start.contains(&name)
                    && n.value.ptr("/spec/unschedulable").and_then(Tree::as_bool) == Some(true)
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

    /// Checks the budgets `pdbs` (of the namespace of the pod `ns/name`) after the pod's
    /// termination started.
    fn check_pdbs(st: &mut State, pdbs: &[String], pod: (&str, &str), at: f64, how: &str) {
        let (ns, name) = pod;
        for p in pdbs {
            let key = (ns.to_string(), p.clone());
            let Some(pdb) = st.pdbs.get(&key) else {
                continue;
            };
            let (healthy_now, desired) = st.budget_numbers(ns, pdb);
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
        // The bookkeeping runs on the offload thread, in the order of the events; each job
        // carries the virtual time it happened at.
        for (tag, r) in [
            (0u8, cluster.res.pods.clone()),
            (1, cluster.res.pdbs.clone()),
            (2, cluster.res.replicasets.clone()),
            (3, cluster.res.statefulsets.clone()),
            (4, cluster.res.deployments.clone()),
        ] {
            let mut inner = cluster.informer_channel(&r);
            let me = inv.clone();
            inv.track(tokio::spawn(async move {
                while let Some(change) = inner.recv().await {
                    let (state, at, now) = me.stamp();
                    offload::run(move || {
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        Self::apply(&mut st, tag, change, at, now);
                    });
                }
            }));
        }
        let me = inv.clone();
        inv.track(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let (state, at, now) = me.stamp();
                offload::run(move || {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    Self::check_controllers(&mut st, tolerance, at, now);
                });
            }
        }));
        inv
    }

    fn apply(st: &mut State, tag: u8, change: Change, at: f64, now: tokio::time::Instant) {
        match change {
            Change::Sync(items) => {
                // The complete state of one resource: forget what is not in it any more.
                let present: BTreeSet<Key> = items.iter().map(|o| key_of(&o.value)).collect();
                match tag {
                    0 => {
                        for k in crate::cluster::absent(st.pods.keys(), &present) {
                            st.drop_pod(&k);
                        }
                    }
                    1 => {
                        for k in crate::cluster::absent(st.pdbs.keys(), &present) {
                            st.drop_pdb(&k);
                        }
                    }
                    _ => {
                        let kind = Self::scaled_kind(tag);
                        let uids: BTreeSet<&str> = items
                            .iter()
                            .filter_map(|o| o.value.ptr("/metadata/uid").and_then(Tree::as_str))
                            .collect();
                        st.scaled
                            .retain(|uid, c| c.kind != kind || uids.contains(uid.as_str()));
                        if tag != 4 {
                            let gone: Vec<Key> = st
                                .controllers
                                .iter()
                                .filter(|(k, c)| {
                                    c.0 == Self::controller_label(tag) && !present.contains(*k)
                                })
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in gone {
                                st.controllers.remove(&k);
                                st.reported_controllers.remove(&k);
                            }
                        }
                    }
                }
                for o in items {
                    Self::upsert(st, tag, &o, false, None, at, now);
                }
            }
            Change::Event(e) => {
                let prev = e.previous.as_ref().map(|p| &p.value);
                Self::upsert(
                    st,
                    tag,
                    &e.object,
                    e.kind == EventType::Deleted,
                    prev,
                    at,
                    now,
                );
            }
        }
    }

    fn scaled_kind(tag: u8) -> &'static str {
        match tag {
            2 => "ReplicaSet",
            3 => "StatefulSet",
            _ => "Deployment",
        }
    }

    fn controller_label(tag: u8) -> &'static str {
        if tag == 2 {
            "replicaset"
        } else {
            "statefulset"
        }
    }

    fn upsert(
        st: &mut State,
        tag: u8,
        o: &Arc<StoredObject>,
        deleted: bool,
        previous: Option<&Tree>,
        at: f64,
        now: tokio::time::Instant,
    ) {
        let v = &o.value;
        let (ns, name) = ns_name(v);
        let key = (ns.to_string(), name.to_string());
        match tag {
            0 => {
                let was_terminating =
                    previous.is_some_and(|p| p.ptr("/metadata/deletionTimestamp").is_some());
                let now_terminating = v.ptr("/metadata/deletionTimestamp").is_some();
                // Only a healthy pod's termination can take a budget below its minimum.
                let was_healthy = previous.is_some_and(healthy);
                if deleted {
                    let pdbs = st.pods.get(&key).map(|p| p.pdbs.clone());
                    st.drop_pod(&key);
                    if !was_terminating
                        && was_healthy
                        && let Some(pdbs) = pdbs
                    {
                        Self::check_pdbs(st, &pdbs, (ns, name), at, "deleted");
                    }
                } else {
                    st.put_pod(o);
                    if now_terminating && !was_terminating && was_healthy {
                        let pdbs = st
                            .pods
                            .get(&key)
                            .map(|p| p.pdbs.clone())
                            .unwrap_or_default();
                        Self::check_pdbs(st, &pdbs, (ns, name), at, "evicted or deleted");
                    }
                }
            }
            1 => {
                if deleted {
                    st.drop_pdb(&key);
                } else {
                    st.put_pdb(o);
                }
            }
            _ => {
                let uid = v
                    .ptr("/metadata/uid")
                    .and_then(Tree::as_str)
                    .unwrap_or("")
                    .to_string();
                let desired = v.ptr("/spec/replicas").and_then(Tree::as_i64).unwrap_or(1);
                if deleted {
                    if st
                        .scaled
                        .get(&uid)
                        .is_some_and(|c| c.kind == Self::scaled_kind(tag))
                    {
                        st.scaled.remove(&uid);
                    }
                } else {
                    st.scaled.insert(
                        uid,
                        Scaled {
                            kind: Self::scaled_kind(tag),
                            replicas: desired,
                            owner: controller_of(v),
                        },
                    );
                }
                if tag == 4 {
                    return; // Deployments only lend their scale
                }
                if deleted {
                    st.controllers.remove(&key);
                } else {
                    let ready = v
                        .ptr("/status/readyReplicas")
                        .and_then(Tree::as_i64)
                        .unwrap_or(0);
                    let since = st.controllers.get(&key).and_then(|c| c.3);
                    let below = if ready < desired {
                        since.or(Some(now))
                    } else {
                        None
                    };
                    if below.is_none() {
                        st.reported_controllers.remove(&key);
                    }
                    st.controllers.insert(
                        key,
                        (
                            Self::controller_label(tag).to_string(),
                            desired,
                            ready,
                            below,
                        ),
                    );
                }
            }
        }
    }

    fn check_controllers(st: &mut State, tolerance: Duration, at: f64, now: tokio::time::Instant) {
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

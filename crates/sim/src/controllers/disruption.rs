//! The disruption controller (pkg/controller/disruption): keeps each PodDisruptionBudget's status,
//! which the eviction subresource ([`crate::eviction`]) reads.
//!
//! For each PDB, over the pods of its namespace matching its selector (an empty or invalid
//! selector matches nothing):
//! - `expectedPods`: for an integer `minAvailable`, the number of matching pods; otherwise the sum
//!   of `spec.replicas` of the pods' controllers (a ReplicaSet owned by a Deployment counts as the
//!   Deployment; ReplicaSet, StatefulSet, and any resource with a `scale` subresource are
//!   understood). A pod whose controller cannot be found makes the sync fail: the budget then
//!   allows no disruption (condition reason `SyncFailed`), like the real fail-safe. Pods without a
//!   controller are left out of the count (the real controller's "UnmanagedPods" warning).
//! - `desiredHealthy`: `minAvailable` (a percentage of `expectedPods`, rounded up), or
//!   `expectedPods - maxUnavailable` (a percentage rounded up), at least 0.
//! - `currentHealthy`: matching pods that are Running with `Ready=True`, not terminating, and not
//!   recorded in `disruptedPods` within the last 2 minutes.
//! - `disruptionsAllowed`: `currentHealthy - desiredHealthy`, at least 0, and 0 while
//!   `expectedPods` is 0.
//! - `disruptedPods` (written by the eviction subresource): entries are dropped once the pod is
//!   gone or terminating, or after [`DisruptionConfig::deletion_timeout`] (the PDB is re-checked
//!   then).
//! - `observedGeneration` and the `DisruptionAllowed` condition (`SufficientPods` /
//!   `InsufficientPods`).
//!
//! Pods are indexed by namespace and labels; a pod change recomputes only the budgets whose
//! selector matched its old or new labels, a controller's change only the budgets whose count
//! used it. Status is written only when it changes, with the PDB's resourceVersion as a
//! precondition, so an eviction recorded meanwhile is never lost.

use crate::json::Field;
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cluster::{Change, Cluster};
use crate::controllers::endpoints::{
    Key, PodIndex, Timers, after, controller_ref, instant_at, is_terminating, key_of, parse_time,
    pod_ready, same_map, sleep_until_opt, str_at, uid_of,
};
use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::store::{EventType, StoredObject};

const CONDITION: &str = "DisruptionAllowed";
const WRITE_ATTEMPTS: usize = 5;

/// Settings of the disruption controller.
#[derive(Clone, Debug)]
pub struct DisruptionConfig {
    /// How long an entry of `disruptedPods` keeps its pod out of `currentHealthy` when the pod is
    /// not deleted (the real `DeletionTimeout`, 2 minutes).
    pub deletion_timeout: Duration,
    /// Wait before retrying a budget whose status write failed with a server error.
    pub retry_delay: Duration,
    /// Changes are gathered for this long (virtual time) before the affected objects are
    /// recomputed. Zero (the default) still gathers everything that arrives within one round of
    /// the runtime's scheduler, without moving the clock: a burst of pod updates costs one
    /// recomputation per object instead of one per update.
    pub batch_period: Duration,
}

impl Default for DisruptionConfig {
    fn default() -> Self {
        DisruptionConfig {
            deletion_timeout: Duration::from_secs(120),
            retry_delay: Duration::from_secs(1),
            batch_period: Duration::ZERO,
        }
    }
}

struct Pdb {
    obj: Arc<StoredObject>,
    /// `None`: matches nothing (empty or invalid selector).
    selector: Option<LabelSelector>,
    /// `matchLabels` pairs, to narrow the candidate pods.
    pairs: Vec<(String, String)>,
    /// Controller uids the last computation used.
    deps: BTreeSet<String>,
}

/// What the controller needs of a workload controller.
#[derive(Clone, PartialEq)]
struct Ctrl {
    kind: String,
    replicas: i64,
    /// Its own controller (kind, uid).
    owner: Option<(String, String)>,
}

/// Status fields computed for a budget, or why they could not be.
struct Computed {
    expected: i64,
    desired: i64,
    healthy: i64,
    disrupted: Map<String, Value>,
    recheck: Option<DateTime<Utc>>,
    deps: BTreeSet<String>,
}

/// The budgets of one namespace, by label pair (key → value → names); `any` holds those selecting
/// by expressions only.
#[derive(Default)]
struct PdbIndex {
    by_label: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    any: BTreeSet<String>,
}

impl PdbIndex {
    fn set(&mut self, pair: Option<&(String, String)>, name: &str, add: bool) {
        let set = match pair {
            None => &mut self.any,
            Some((k, v)) => self
                .by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default(),
        };
        if add {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
        if let Some((k, v)) = pair
            && let Some(values) = self.by_label.get_mut(k.as_str())
        {
            if values.get(v.as_str()).is_some_and(BTreeSet::is_empty) {
                values.remove(v.as_str());
            }
            if values.is_empty() {
                self.by_label.remove(k.as_str());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_label.is_empty() && self.any.is_empty()
    }
}

struct State {
    cluster: Cluster,
    cfg: DisruptionConfig,
    pdbs: BTreeMap<Key, Pdb>,
    /// namespace → budgets by one of their `matchLabels` pairs, for pod events.
    pdb_index: BTreeMap<String, PdbIndex>,
    pods: PodIndex<PdbPod>,
    ctrls: BTreeMap<String, Ctrl>,
    /// Controller uid → budgets whose count used it.
    users: BTreeMap<String, BTreeSet<Key>>,
    dirty: BTreeSet<Key>,
    timers: Timers<Key>,
    synced: [bool; 5],
}

/// Starts the disruption controller.
pub fn spawn(cluster: Cluster, config: DisruptionConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let res = cluster.res.clone();
        let mut pdb_rx = cluster.informer_channel(&res.pdbs);
        let mut pod_rx = cluster.informer_channel(&res.pods);
        let mut rs_rx = cluster.informer_channel(&res.replicasets);
        let mut dep_rx = cluster.informer_channel(&res.deployments);
        let mut sts_rx = cluster.informer_channel(&res.statefulsets);
        let mut st = State {
            cluster,
            cfg: config,
            pdbs: BTreeMap::new(),
            pdb_index: BTreeMap::new(),
            pods: PodIndex::default(),
            ctrls: BTreeMap::new(),
            users: BTreeMap::new(),
            dirty: BTreeSet::new(),
            timers: Timers::default(),
            synced: [false; 5],
        };
        let mut flush_at: Option<Instant> = None;
        loop {
            let mut flush = false;
            tokio::select! {
                biased;
                Some(c) = pdb_rx.recv() => st.on_pdb(c),
                Some(c) = pod_rx.recv() => st.on_pod(c),
                Some(c) = rs_rx.recv() => st.on_ctrl(2, c),
                Some(c) = dep_rx.recv() => st.on_ctrl(3, c),
                Some(c) = sts_rx.recv() => st.on_ctrl(4, c),
                _ = sleep_until_opt(flush_at) => flush = true,
                _ = sleep_until_opt(st.timers.next()) => {
                    for k in st.timers.pop_due(Instant::now()) {
                        st.dirty.insert(k);
                    }
                }
                else => return,
            }
            while let Ok(c) = pdb_rx.try_recv() {
                st.on_pdb(c);
            }
            while let Ok(c) = pod_rx.try_recv() {
                st.on_pod(c);
            }
            while let Ok(c) = rs_rx.try_recv() {
                st.on_ctrl(2, c);
            }
            while let Ok(c) = dep_rx.try_recv() {
                st.on_ctrl(3, c);
            }
            while let Ok(c) = sts_rx.try_recv() {
                st.on_ctrl(4, c);
            }
            if flush {
                flush_at = None;
            }
            if st.synced.iter().all(|s| *s) {
                if flush {
                    st.process().await;
                } else if !st.dirty.is_empty() && flush_at.is_none() {
                    flush_at = Some(after(st.cfg.batch_period));
                }
            }
        }
    })
}

fn pdb_selector(v: &Tree) -> (Option<LabelSelector>, Vec<(String, String)>) {
    let Some(sel) = v.ptr("/spec/selector").filter(|s| !s.is_null()) else {
        return (None, Vec::new());
    };
    match LabelSelector::from_json(sel) {
        Ok(s) if !s.is_empty() => {
            let pairs = sel
                .field("matchLabels")
                .and_then(Tree::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            (Some(s), pairs)
        }
        _ => (None, Vec::new()),
    }
}

/// What a budget reads of a pod (`PartialEq`: a change that leaves it and the labels alone
/// concerns no budget).
#[derive(Debug, PartialEq)]
struct PdbPod {
    name: String,
    deleting: bool,
    /// Running with `Ready=True`.
    healthy: bool,
    /// The controller reference: (apiVersion, kind, name, uid).
    ctrl: Option<(String, String, String, String)>,
}

impl PdbPod {
    fn of(pod: &Tree) -> PdbPod {
        PdbPod {
            name: str_at(pod, "/metadata/name").to_string(),
            deleting: is_terminating(pod),
            healthy: str_at(pod, "/status/phase") == "Running" && pod_ready(pod),
            ctrl: controller_ref(pod)
                .map(|(a, k, n, u)| (a.to_string(), k.to_string(), n.to_string(), u.to_string())),
        }
    }
}

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &Tree, total: i64) -> Result<i64, String> {
    match v {
        n if n.is_number() => n
            .as_i64()
            .ok_or_else(|| format!("invalid value for IntOrString: {n}")),
        Tree::String(s) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(pct.saturating_mul(total).saturating_add(99).div_euclid(100))
        }
        other => Err(format!("invalid value for IntOrString: {other}")),
    }
}

impl State {
    fn put_pdb(&mut self, obj: Arc<StoredObject>) {
        let key = key_of(&obj.value);
        let (selector, pairs) = pdb_selector(&obj.value);
        let deps = match self.pdbs.get(&key) {
            Some(_) => {
                self.unindex(&key);
                self.pdbs
                    .remove(&key)
                    .map(|old| old.deps)
                    .unwrap_or_default()
            }
            None => BTreeSet::new(),
        };
        if selector.is_some() {
            self.pdb_index
                .entry(key.0.clone())
                .or_default()
                .set(pairs.iter().min(), &key.1, true);
        }
        self.pdbs.insert(
            key.clone(),
            Pdb {
                obj,
                selector,
                pairs,
                deps,
            },
        );
        self.dirty.insert(key);
    }

    /// Removes a budget from the pod-event index.
    fn unindex(&mut self, key: &Key) {
        let Some(p) = self.pdbs.get(key) else { return };
        if p.selector.is_none() {
            return;
        }
        let pair = p.pairs.iter().min().cloned();
        if let Some(idx) = self.pdb_index.get_mut(&key.0) {
            idx.set(pair.as_ref(), &key.1, false);
            if idx.is_empty() {
                self.pdb_index.remove(&key.0);
            }
        }
    }

    fn drop_pdb(&mut self, key: &Key) {
        self.unindex(key);
        if let Some(old) = self.pdbs.remove(key) {
            for d in old.deps {
                self.unuse(&d, key);
            }
        }
        self.timers.cancel(key);
        self.dirty.remove(key);
    }

    fn unuse(&mut self, uid: &str, key: &Key) {
        if let Some(set) = self.users.get_mut(uid) {
            set.remove(key);
            if set.is_empty() {
                self.users.remove(uid);
            }
        }
    }

    fn on_pdb(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[0] = true;
                let keys: Vec<Key> = self.pdbs.keys().cloned().collect();
                for k in keys {
                    self.drop_pdb(&k);
                }
                for o in items {
                    self.put_pdb(o);
                }
            }
            Change::Event(ev) => {
                let key = key_of(&ev.object.value);
                match ev.kind {
                    EventType::Deleted => self.drop_pdb(&key),
                    _ => {
                        if self
                            .pdbs
                            .get(&key)
                            .is_some_and(|p| p.obj.revision > ev.object.revision)
                        {
                            return;
                        }
                        self.put_pdb(ev.object.clone())
                    }
                }
            }
        }
    }

    /// Marks the budgets whose selector matches `pod`.
    fn mark_pdbs_for(&mut self, pod: &Tree) {
        let ns = str_at(pod, "/metadata/namespace");
        let Some(idx) = self.pdb_index.get(ns) else {
            return;
        };
        let labels = pod.ptr("/metadata/labels");
        let mut names: Vec<&String> = idx.any.iter().collect();
        if let Some(m) = labels.and_then(Tree::as_object) {
            for (k, v) in m {
                if let Some(set) = v
                    .as_str()
                    .and_then(|v| idx.by_label.get(k.as_str())?.get(v))
                {
                    names.extend(set.iter());
                }
            }
        }
        let mut hits = Vec::new();
        for n in names {
            let key = (ns.to_string(), n.clone());
            if let Some(p) = self.pdbs.get(&key)
                && p.selector.as_ref().is_some_and(|s| s.matches(labels))
            {
                hits.push(key);
            }
        }
        self.dirty.extend(hits);
    }

    fn on_pod(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[1] = true;
                self.pods.clear();
                for o in items {
                    let info = PdbPod::of(&o.value);
                    self.pods.insert(o, info);
                }
                let all: Vec<Key> = self.pdbs.keys().cloned().collect();
                self.dirty.extend(all);
            }
            Change::Event(ev) => {
                let (ns, name) = key_of(&ev.object.value);
                let old = match ev.kind {
                    EventType::Deleted => self.pods.remove(&ns, &name),
                    _ => {
                        if self
                            .pods
                            .get(&ns, &name)
                            .is_some_and(|cur| cur.obj.revision > ev.object.revision)
                        {
                            return;
                        }
                        let info = PdbPod::of(&ev.object.value);
                        let old = self.pods.insert(ev.object.clone(), info);
                        if let (Some(o), Some(n)) = (&old, self.pods.get(&ns, &name))
                            && o.info == n.info
                            && o.obj.value.ptr("/metadata/labels")
                                == n.obj.value.ptr("/metadata/labels")
                        {
                            return; // nothing a budget counts changed
                        }
                        old
                    }
                };
                if let Some(o) = &old {
                    self.mark_pdbs_for(&o.obj.value);
                }
                if ev.kind != EventType::Deleted {
                    self.mark_pdbs_for(&ev.object.value);
                }
            }
        }
    }

    fn ctrl_of(v: &Tree, kind: &str) -> Ctrl {
        Ctrl {
            kind: kind.to_string(),
            replicas: v.ptr("/spec/replicas").and_then(Tree::as_i64).unwrap_or(1),
            owner: controller_ref(v).map(|(_, k, _, u)| (k.to_string(), u.to_string())),
        }
    }

    fn mark_users(&mut self, uid: &str) {
        if let Some(keys) = self.users.get(uid) {
            self.dirty.extend(keys.iter().cloned());
        }
    }

    fn on_ctrl(&mut self, idx: usize, c: Change) {
        let kind = match idx {
            2 => "ReplicaSet",
            3 => "Deployment",
            _ => "StatefulSet",
        };
        match c {
            Change::Sync(items) => {
                self.synced[idx] = true;
                self.ctrls.retain(|_, c| c.kind != kind);
                for o in items {
                    let ctrl = Self::ctrl_of(&o.value, kind);
                    self.ctrls.insert(uid_of(&o.value).to_string(), ctrl);
                }
                let all: Vec<Key> = self.pdbs.keys().cloned().collect();
                self.dirty.extend(all);
            }
            Change::Event(ev) => {
                let uid = uid_of(&ev.object.value).to_string();
                match ev.kind {
                    EventType::Deleted => {
                        self.ctrls.remove(&uid);
                    }
                    _ => {
                        let ctrl = Self::ctrl_of(&ev.object.value, kind);
                        if self.ctrls.get(&uid) == Some(&ctrl) {
                            return;
                        }
                        self.ctrls.insert(uid.clone(), ctrl);
                    }
                }
                self.mark_users(&uid);
            }
        }
    }

    async fn process(&mut self) {
        while let Some(key) = self.dirty.pop_first() {
            if let Err(e) = self.sync(&key).await {
                tracing::debug!(ns = %key.0, pdb = %key.1, error = %e.message, "PDB sync failed");
                self.timers
                    .schedule_earliest(key, after(self.cfg.retry_delay));
            }
        }
    }

    /// The scale of the controller of a pod: (uid the count is keyed by, replicas), and the
    /// controller uids consulted.
    async fn controller_scale(
        &self,
        ns: &str,
        pod: &PdbPod,
        deps: &mut BTreeSet<String>,
    ) -> Result<Option<(String, i64)>, String> {
        let Some((api_version, kind, name, uid)) = &pod.ctrl else {
            return Ok(None);
        };
        let uid = uid.as_str();
        deps.insert(uid.to_string());
        if let Some(c) = self.ctrls.get(uid) {
            if c.kind == "ReplicaSet"
                && let Some((okind, ouid)) = &c.owner
                && okind == "Deployment"
            {
                deps.insert(ouid.clone());
                if let Some(d) = self.ctrls.get(ouid) {
                    return Ok(Some((ouid.clone(), d.replicas)));
                }
            }
            return Ok(Some((uid.to_string(), c.replicas)));
        }
        // Any other resource with a scale subresource.
        let cl = &self.cluster;
        if let Some(info) = cl.server.registry.by_kind(api_version, kind)
            && info.has_subresource("scale")
            && let Ok(o) = cl
                .get(&info, if info.namespaced { ns } else { "" }, name)
                .await
            && uid_of(&o.value) == uid
        {
            let r = o
                .value
                .ptr("/spec/replicas")
                .and_then(Tree::as_i64)
                .unwrap_or(1);
            return Ok(Some((uid.to_string(), r)));
        }
        Err(format!("found no controllers for pod {:?}", pod.name))
    }

    async fn expected_scale(
        &self,
        ns: &str,
        pods: &[&PdbPod],
        deps: &mut BTreeSet<String>,
    ) -> Result<i64, String> {
        let mut scales: BTreeMap<String, i64> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for p in pods {
            if let Some((_, _, _, u)) = &p.ctrl
                && !seen.insert(u.as_str())
            {
                continue;
            }
            if let Some((uid, n)) = self.controller_scale(ns, p, deps).await? {
                scales.insert(uid, n);
            }
        }
        Ok(scales.values().fold(0i64, |a, b| a.saturating_add(*b)))
    }

    async fn compute(&self, pdb: &Pdb) -> Result<Computed, String> {
        let (ns, _) = key_of(&pdb.obj.value);
        let pods: Vec<&PdbPod> = match &pdb.selector {
            None => Vec::new(),
            Some(sel) => self
                .pods
                .candidates(&ns, &pdb.pairs)
                .into_iter()
                .filter(|p| sel.matches(p.obj.value.ptr("/metadata/labels")))
                .map(|p| &p.info)
                .collect(),
        };
        let spec = &pdb.obj.value["spec"];
        let mut deps = BTreeSet::new();
        let (expected, desired) = match (spec.field("maxUnavailable"), spec.field("minAvailable")) {
            (Some(mu), _) if !mu.is_null() => {
                let expected = self.expected_scale(&ns, &pods, &mut deps).await?;
                let max = scaled(mu, expected)?;
                (expected, expected.saturating_sub(max).max(0))
            }
            (_, Some(n)) if n.is_number() => (pods.len() as i64, n.as_i64().unwrap_or(0)),
            (_, Some(ma)) if !ma.is_null() => {
                let expected = self.expected_scale(&ns, &pods, &mut deps).await?;
                (expected, scaled(ma, expected)?)
            }
            _ => (0, 0),
        };
        let now = self.cluster.server.clock.now();
        let timeout = chrono::Duration::from_std(self.cfg.deletion_timeout).ok();
        let recorded = pdb
            .obj
            .value
            .ptr("/status/disruptedPods")
            .and_then(Tree::as_object);
        let mut disrupted = Map::new();
        let mut recheck: Option<DateTime<Utc>> = None;
        if let Some(rec) = recorded {
            for p in &pods {
                if p.deleting {
                    continue;
                }
                let name = p.name.as_str();
                let Some(ts) = rec.get(name) else { continue };
                let Some(t) = ts.as_str().and_then(parse_time) else {
                    continue;
                };
                // An entry whose expiry cannot be computed never expires.
                let expires = timeout.and_then(|d| t.checked_add_signed(d));
                if expires.is_some_and(|e| e < now) {
                    tracing::debug!(pod = name, "pod was expected to be deleted but it wasn't");
                    continue;
                }
                if let Some(e) = expires
                    && recheck.is_none_or(|r| e < r)
                {
                    recheck = Some(e);
                }
                disrupted.insert(name.to_string(), ts.to_value());
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| p.healthy && !p.deleting && !disrupted.contains_key(p.name.as_str()))
            .count() as i64;
        Ok(Computed {
            expected,
            desired,
            healthy,
            disrupted,
            recheck,
            deps,
        })
    }

    async fn sync(&mut self, key: &Key) -> Result<(), ApiError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(pdb) = self.pdbs.get(key) else {
                return Ok(());
            };
            let result = self.compute(pdb).await;
            let cur = pdb.obj.clone();
            let new_status = match &result {
                Ok(c) => status_for(&cur.value, c, &self.cluster.server.clock.timestamp()),
                Err(msg) => fail_safe(&cur.value, msg, &self.cluster.server.clock.timestamp()),
            };
            // Dependencies for controller changes, and the next disruptedPods expiry.
            if let Ok(c) = &result {
                let old: BTreeSet<String> = self
                    .pdbs
                    .get(key)
                    .map(|p| p.deps.clone())
                    .unwrap_or_default();
                for d in old.difference(&c.deps) {
                    self.unuse(d, key);
                }
                for d in c.deps.difference(&old) {
                    self.users.entry(d.clone()).or_default().insert(key.clone());
                }
                if let Some(p) = self.pdbs.get_mut(key) {
                    p.deps = c.deps.clone();
                }
                if let Some(r) = c.recheck {
                    let at = instant_at(&self.cluster, r)
                        .checked_add(Duration::from_millis(1))
                        .unwrap_or_else(|| instant_at(&self.cluster, r));
                    self.timers.schedule_earliest(key.clone(), at);
                }
            } else if let Err(msg) = &result {
                tracing::debug!(ns = %key.0, pdb = %key.1, error = %msg, "PDB fail-safe");
            }
            let Some(new_status) = new_status else {
                return Ok(()); // up to date
            };
            // The whole status, as a merge patch of the status subresource pinned to the version
            // it was computed from: an eviction's decrement in between is a conflict, never
            // overwritten. Applied on the stored tree (no copy of the budget).
            let patch = crate::json::object! {
                "metadata" => crate::json::object! {"resourceVersion" => cur.revision.to_string()},
                "status" => crate::patch::replacing(cur.value.field("status"), new_status),
            };
            let c = self.cluster.clone();
            match c
                .merge_patch(&c.res.pdbs, &key.0, &key.1, Some("status"), patch)
                .await
            {
                Ok(v) => {
                    // Keep the written state so that the next computation starts from it.
                    if let Some(p) = self.pdbs.get_mut(key)
                        && v.revision > p.obj.revision
                    {
                        p.obj = v;
                    }
                    return Ok(());
                }
                Err(e) if e.code == 404 => {
                    self.drop_pdb(key);
                    return Ok(());
                }
                Err(e) if e.code == 409 => {
                    // Someone (an eviction) wrote the budget meanwhile: recompute on its state.
                    match c.get(&c.res.pdbs, &key.0, &key.1).await {
                        Ok(fresh) => {
                            if let Some(p) = self.pdbs.get_mut(key)
                                && fresh.revision >= p.obj.revision
                            {
                                p.obj = fresh;
                            }
                        }
                        Err(e) if e.code == 404 => {
                            self.drop_pdb(key);
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale("poddisruptionbudgets.policy", &key.1))
    }
}

fn set_condition(
    conds: &mut Vec<Value>,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &str,
) {
    let new = |transition: &str| {
        json!({"type": CONDITION, "status": status, "observedGeneration": generation,
            "lastTransitionTime": transition, "reason": reason, "message": message})
    };
    match conds.iter_mut().find(|c| c["type"] == CONDITION) {
        Some(c) => {
            let transition = if c["status"] == status {
                c["lastTransitionTime"].as_str().unwrap_or(now).to_string()
            } else {
                now.to_string()
            };
            *c = new(&transition);
        }
        None => conds.push(new(now)),
    }
}

fn int_at(v: &Tree, ptr: &str) -> i64 {
    v.ptr(ptr).and_then(Tree::as_i64).unwrap_or(0)
}

/// The new status, or `None` when the current one is up to date (`updatePdbStatus`).
fn status_for(pdb: &Tree, c: &Computed, now: &str) -> Option<Value> {
    let generation = int_at(pdb, "/metadata/generation");
    let mut allowed = c.healthy.saturating_sub(c.desired);
    if c.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let st = &pdb["status"];
    let cur_disrupted = st.field("disruptedPods").and_then(Tree::as_object);
    let cond_ok = st
        .field("conditions")
        .and_then(Tree::as_array)
        .and_then(|cs| cs.iter().find(|x| x["type"].as_str() == Some(CONDITION)))
        .is_some_and(|x| {
            x.field("observedGeneration").and_then(Tree::as_i64)
                == st.field("observedGeneration").and_then(Tree::as_i64)
                && (x["status"].as_str() == Some("True")) == (int_at(st, "/disruptionsAllowed") > 0)
        });
    if int_at(st, "/currentHealthy") == c.healthy
        && int_at(st, "/desiredHealthy") == c.desired
        && int_at(st, "/expectedPods") == c.expected
        && st.field("disruptionsAllowed").and_then(Tree::as_i64) == Some(allowed)
        && same_map(cur_disrupted, &c.disrupted)
        && st.field("observedGeneration").and_then(Tree::as_i64) == Some(generation)
        && cond_ok
    {
        return None;
    }
    let mut conds: Vec<Value> = st
        .field("conditions")
        .and_then(Tree::as_array)
        .map(|cs| cs.iter().map(Tree::to_value).collect())
        .unwrap_or_default();
    if allowed > 0 {
        set_condition(&mut conds, "True", "SufficientPods", "", generation, now);
    } else {
        set_condition(&mut conds, "False", "InsufficientPods", "", generation, now);
    }
    let mut out = Map::new();
    out.insert("observedGeneration".into(), json!(generation));
    if !c.disrupted.is_empty() {
        out.insert("disruptedPods".into(), Value::Object(c.disrupted.clone()));
    }
    out.insert("disruptionsAllowed".into(), json!(allowed));
    out.insert("currentHealthy".into(), json!(c.healthy));
    out.insert("desiredHealthy".into(), json!(c.desired));
    out.insert("expectedPods".into(), json!(c.expected));
    out.insert("conditions".into(), Value::Array(conds));
    Some(Value::Object(out))
}

/// `failSafe`: no disruption allowed, condition `SyncFailed`; `observedGeneration` unchanged.
fn fail_safe(pdb: &Tree, msg: &str, now: &str) -> Option<Value> {
    let mut st = match pdb.field("status") {
        Some(Tree::Object(m)) => m.to_map(),
        _ => Map::new(),
    };
    let observed = st
        .field("observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut conds = st
        .field("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = (st.field("disruptionsAllowed").cloned(), conds.clone());
    set_condition(&mut conds, "False", "SyncFailed", msg, observed, now);
    st.insert("disruptionsAllowed".into(), json!(0));
    st.insert("conditions".into(), Value::Array(conds));
    let unchanged = before.0 == Some(json!(0))
        && before.1.iter().find(|c| c["type"] == CONDITION).map(|c| {
            (
                c["status"].clone(),
                c["reason"].clone(),
                c["message"].clone(),
            )
        }) == Some((json!("False"), json!("SyncFailed"), json!(msg)));
    if unchanged {
        None
    } else {
        Some(Value::Object(st))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&Tree::from(json!("50%")), 3), Ok(2));
        assert_eq!(scaled(&Tree::from(json!("34%")), 3), Ok(2));
        assert_eq!(scaled(&Tree::from(json!("0%")), 3), Ok(0));
        assert_eq!(scaled(&Tree::from(json!(2)), 3), Ok(2));
        assert!(scaled(&Tree::from(json!("x%")), 3).is_err());
    }

    #[test]
    fn status_written_only_on_change() {
        let pdb = Tree::from(json!({"metadata": {"generation": 2}, "status": {}}));
        let c = Computed {
            expected: 3,
            desired: 2,
            healthy: 3,
            disrupted: Map::new(),
            recheck: None,
            deps: BTreeSet::new(),
        };
        let st = status_for(&pdb, &c, "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(st["disruptionsAllowed"], 1);
        assert_eq!(st["observedGeneration"], 2);
        assert_eq!(st["conditions"][0]["reason"], "SufficientPods");
        let pdb = Tree::from(json!({"metadata": {"generation": 2}, "status": st}));
        assert!(status_for(&pdb, &c, "2024-01-01T00:01:00Z").is_none());
        let none = Computed {
            expected: 0,
            desired: 0,
            healthy: 3,
            ..c
        };
        let st = status_for(&pdb, &none, "2024-01-01T00:02:00Z").unwrap();
        assert_eq!(st["disruptionsAllowed"], 0);
        assert_eq!(st["conditions"][0]["status"], "False");
        assert_eq!(
            st["conditions"][0]["lastTransitionTime"],
            "2024-01-01T00:02:00Z"
        );
    }
}

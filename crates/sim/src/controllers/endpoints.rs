//! The endpoints controller (kube-controller-manager's `endpoint` controller,
//! pkg/controller/endpoint): for every Service with a selector it keeps an Endpoints object of
//! the same name listing the selected pods.
//!
//! What it models:
//! - a pod is listed when it has an IP, is not terminal (Succeeded/Failed) and is not terminating
//!   (`deletionTimestamp`), unless the Service sets `publishNotReadyAddresses` (then terminating
//!   pods stay and every listed pod counts as ready);
//! - ready pods (condition `Ready=True`) go to `addresses`, the others to `notReadyAddresses`;
//!   each address carries `ip`, `nodeName`, `targetRef` (and `hostname` when the pod's
//!   `hostname`/`subdomain` name this Service);
//! - ports come from the Service: a numeric `targetPort` is used as is, a named one resolves to
//!   the container port of that name and protocol (a pod without it is left out of that port);
//!   a headless Service without ports lists addresses without ports;
//! - subsets are repacked like `endpoints.RepackSubsets` (addresses offering the same ports share
//!   a subset; "not ready" wins over "ready" for the same address), with a deterministic order
//!   (addresses by IP and uid, ports by name/port, subsets by their addresses) instead of the real
//!   hash order;
//! - labels are the Service's plus `service.kubernetes.io/headless` for headless Services; more
//!   than 1000 addresses are truncated with the `endpoints.kubernetes.io/over-capacity` annotation;
//! - the object is written only when its subsets, labels or capacity annotation change; an
//!   Endpoints object whose Service is gone is deleted (also leftovers found at start), except
//!   leader-election records; Services without a selector are never touched.
//!
//! Not modelled: EndpointSlices, the `last-change-trigger-time` annotation, IP family selection
//! (the pod's primary IP is used).
//!
//! This file also holds small helpers the other controllers of this directory share
//! ([`PodIndex`], [`Timers`], time parsing).

use crate::json::{FastMap, Field, Json, Ptr};
use crate::tree::{Obj, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cluster::{Change, Cluster};
use crate::error::ApiError;
use crate::rest::DeleteOptions;
use crate::store::{EventType, StoredObject};

/// Addresses an Endpoints object holds at most (the real controller's `maxCapacity`).
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const WRITE_ATTEMPTS: usize = 5;

/// Settings of the endpoints controller.
#[derive(Clone, Debug)]
pub struct EndpointsConfig {
    /// Wait before retrying a Service whose sync failed with a server error.
    pub retry_delay: Duration,
    /// Changes are gathered for this long (virtual time) before the affected objects are
    /// recomputed. Zero (the default) still gathers everything that arrives within one round of
    /// the runtime's scheduler, without moving the clock: a burst of pod updates costs one
    /// recomputation per object instead of one per update.
    pub batch_period: Duration,
    /// Addresses kept per Endpoints object before truncation.
    pub max_capacity: usize,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        EndpointsConfig {
            retry_delay: Duration::from_secs(1),
            batch_period: Duration::ZERO,
            max_capacity: MAX_ENDPOINTS_CAPACITY,
        }
    }
}

// ----------------------------------------------------------------------------------------------
// helpers shared by the controllers of this directory

/// (namespace, name).
pub(crate) type Key = (String, String);

// The object readers the controllers share live with the workload controllers.
pub(crate) use super::workloads::{is_terminating, key_of, str_at, uid_of};
pub(crate) use crate::cluster::ns_name;

/// Sets `path` inside `v`, turning whatever is in the way into objects (`v["a"]["b"] = x`
/// panics on a non-object; data from the API must never make a controller panic).
pub(crate) fn set_in(v: &mut Value, path: &[&str], val: Value) {
    let mut cur = v;
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(p.to_string()).or_insert(Value::Null);
    }
    *cur = val;
}

/// A pod's `Ready` condition is `True` (`podutil.IsPodReady`).
pub(crate) fn pod_ready<V: Json>(pod: &V) -> bool {
    pod.ptr("/status/conditions")
        .and_then(Json::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.field("type").and_then(Json::as_str) == Some("Ready")
                    && c.field("status").and_then(Json::as_str) == Some("True")
            })
        })
}

pub(crate) fn pod_terminal<V: Json>(pod: &V) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// The string labels of an object.
pub(crate) fn label_pairs<V: Json>(v: &V) -> Vec<(String, String)> {
    v.ptr("/metadata/labels")
        .and_then(Json::entries)
        .map(|m| {
            m.filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a stored object's map equals `m` (an absent map equals an empty one).
pub(crate) fn same_map(o: Option<&Obj>, m: &Map<String, Value>) -> bool {
    o.map_or(m.is_empty(), |o| o == m)
}

/// The `ownerReference` with `controller: true`, as (apiVersion, kind, name, uid).
pub(crate) fn controller_ref<V: Json>(v: &V) -> Option<(&str, &str, &str, &str)> {
    v.ptr("/metadata/ownerReferences")
        .and_then(Json::as_array)?
        .iter()
        .find(|r| r.field("controller").and_then(Json::as_bool) == Some(true))
        .map(|r| {
            (
                str_at(r, "/apiVersion"),
                str_at(r, "/kind"),
                str_at(r, "/name"),
                str_at(r, "/uid"),
            )
        })
}

/// RFC 3339 time (`metav1.Time` or `MicroTime`).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The farthest a controller ever schedules anything (times from the API can be absurd).
const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `Instant::now() + d`, capped at [`FAR`] instead of overflowing.
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// The interval of a rate (`1/qps`), capped at [`FAR`].
pub(crate) fn period(qps: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / qps)
        .unwrap_or(FAR)
        .min(FAR)
}

/// The tokio instant at which the simulated clock shows `t` (now if `t` is past).
pub(crate) fn instant_at(cluster: &Cluster, t: DateTime<Utc>) -> Instant {
    let d = t
        .signed_duration_since(cluster.server.clock.now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    after(d)
}

/// Sleeps until `t`, or forever without one.
pub(crate) async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Timers keyed by `K`: at most one per key, in time order.
pub(crate) struct Timers<K> {
    at: BTreeMap<K, Instant>,
    order: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            at: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Schedules `k` at `when`, unless it is already scheduled earlier.
    pub(crate) fn schedule_earliest(&mut self, k: K, when: Instant) {
        if let Some(t) = self.at.get(&k)
            && *t <= when
        {
            return;
        }
        self.set(k, when);
    }

    /// Schedules `k` at exactly `when`.
    pub(crate) fn set(&mut self, k: K, when: Instant) {
        self.cancel(&k);
        self.at.insert(k.clone(), when);
        self.order.insert((when, k));
    }

    pub(crate) fn cancel(&mut self, k: &K) {
        if let Some(t) = self.at.remove(k) {
            self.order.remove(&(t, k.clone()));
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<Instant> {
        self.at.get(k).copied()
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.order.first().map(|(t, _)| *t)
    }

    /// Removes and returns the keys due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.order.first() {
            if *t > now {
                break;
            }
            if let Some((_, k)) = self.order.pop_first() {
                self.at.remove(&k);
                out.push(k);
            }
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }
}

/// A pod in a [`PodIndex`], with what its controller extracted from it once per change.
pub(crate) struct Indexed<T> {
    pub(crate) obj: Arc<StoredObject>,
    pub(crate) info: T,
}

/// Pods indexed by namespace and by (namespace, label key, label value), so that the pods a
/// selector can match are found without scanning the cluster. Each pod carries a summary `T`
/// (the few fields its controller reads), so recomputations do not walk the pods' JSON.
/// Lookups take `&str` (no allocation).
///
/// The maps are hashed (every pod event looks a pod up); the name sets stay ordered, so
/// [`PodIndex::candidates`] answers in name order.
pub(crate) struct PodIndex<T> {
    /// namespace → name → pod.
    pods: FastMap<String, FastMap<String, Indexed<T>>>,
    /// namespace → label key → label value → pod names.
    by_label: FastMap<String, FastMap<String, FastMap<String, BTreeSet<String>>>>,
}

impl<T> Default for PodIndex<T> {
    fn default() -> Self {
        PodIndex {
            pods: FastMap::default(),
            by_label: FastMap::default(),
        }
    }
}

impl<T> PodIndex<T> {
    pub(crate) fn get(&self, ns: &str, name: &str) -> Option<&Indexed<T>> {
        self.pods.get(ns)?.get(name)
    }

    /// Adds or replaces a pod; returns the previous state.
    pub(crate) fn insert(&mut self, obj: Arc<StoredObject>, info: T) -> Option<Indexed<T>> {
        let (ns, name) = ns_name(&obj.value);
        // The same labels (most updates are status changes): replace in place, the label index
        // stays as it is.
        if let Some(cur) = self.pods.get_mut(ns).and_then(|names| names.get_mut(name))
            && cur.obj.value.ptr("/metadata/labels") == obj.value.ptr("/metadata/labels")
        {
            let old = std::mem::replace(cur, Indexed { obj, info });
            return Some(old);
        }
        let (ns, name) = (ns.to_string(), name.to_string());
        let old = self.remove(&ns, &name);
        if let Some(labels) = obj.value.ptr("/metadata/labels").and_then(Tree::as_object) {
            let idx = self.by_label.entry(ns.clone()).or_default();
            for (k, v) in labels {
                if let Some(v) = v.as_str() {
                    idx.entry(k.to_string())
                        .or_default()
                        .entry(v.to_string())
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
        self.pods
            .entry(ns)
            .or_default()
            .insert(name, Indexed { obj, info });
        old
    }

    pub(crate) fn remove(&mut self, ns: &str, name: &str) -> Option<Indexed<T>> {
        let names = self.pods.get_mut(ns)?;
        let old = names.remove(name)?;
        if names.is_empty() {
            self.pods.remove(ns);
        }
        if let Some(labels) = old
            .obj
            .value
            .ptr("/metadata/labels")
            .and_then(Tree::as_object)
            && let Some(idx) = self.by_label.get_mut(ns)
        {
            for (k, v) in labels {
                let Some(v) = v.as_str() else { continue };
                if let Some(values) = idx.get_mut(k.as_str()) {
                    if let Some(set) = values.get_mut(v) {
                        set.remove(name);
                        if set.is_empty() {
                            values.remove(v);
                        }
                    }
                    if values.is_empty() {
                        idx.remove(k.as_str());
                    }
                }
            }
            if idx.is_empty() {
                self.by_label.remove(ns);
            }
        }
        Some(old)
    }

    pub(crate) fn clear(&mut self) {
        self.pods.clear();
        self.by_label.clear();
    }

    /// Pods of `ns` carrying every label pair of `pairs` (all pods of `ns` when `pairs` is
    /// empty), in name order. The caller still checks the full selector.
    pub(crate) fn candidates(&self, ns: &str, pairs: &[(String, String)]) -> Vec<&Indexed<T>> {
        let Some(pods) = self.pods.get(ns) else {
            return Vec::new();
        };
        let mut best: Option<&BTreeSet<String>> = None;
        for (k, v) in pairs {
            match self
                .by_label
                .get(ns)
                .and_then(|idx| idx.get(k.as_str()))
                .and_then(|values| values.get(v.as_str()))
            {
                None => return Vec::new(),
                Some(set) => {
                    if best.is_none_or(|b| set.len() < b.len()) {
                        best = Some(set);
                    }
                }
            }
        }
        match best {
            Some(names) => names.iter().filter_map(|n| pods.get(n.as_str())).collect(),
            None => {
                let mut all: Vec<(&String, &Indexed<T>)> = pods.iter().collect();
                all.sort_unstable_by(|a, b| a.0.cmp(b.0));
                all.into_iter().map(|(_, p)| p).collect()
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// the controller

struct Svc {
    obj: Arc<StoredObject>,
    /// `spec.selector`; `None` when absent or empty (the Service is left alone).
    selector: Option<BTreeMap<String, String>>,
}

fn service_selector(v: &Tree) -> Option<BTreeMap<String, String>> {
    let m = v.ptr("/spec/selector").and_then(Tree::as_object)?;
    let sel: BTreeMap<String, String> = m
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
        .collect();
    if sel.is_empty() { None } else { Some(sel) }
}

fn selector_matches(sel: &BTreeMap<String, String>, pod: &Tree) -> bool {
    let labels = pod.ptr("/metadata/labels").and_then(Tree::as_object);
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Tree::as_str) == Some(v.as_str()))
}

struct State {
    cluster: Cluster,
    cfg: EndpointsConfig,
    services: BTreeMap<Key, Svc>,
    /// Services with a selector, under (namespace, first selector pair).
    svc_index: BTreeMap<(String, String, String), BTreeSet<String>>,
    pods: PodIndex<EpPod>,
    /// Endpoints objects as last seen (watch or own write).
    endpoints: BTreeMap<Key, Arc<StoredObject>>,
    dirty: BTreeSet<Key>,
    retry: Timers<Key>,
    synced: [bool; 3],
    started: bool,
}

/// Starts the endpoints controller.
pub fn spawn(cluster: Cluster, config: EndpointsConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut svc_rx = cluster.informer_channel(&cluster.res.services);
        let mut pod_rx = cluster.informer_channel(&cluster.res.pods);
        let mut ep_rx = cluster.informer_channel(&cluster.res.endpoints);
        let mut st = State {
            cluster,
            cfg: config,
            services: BTreeMap::new(),
            svc_index: BTreeMap::new(),
            pods: PodIndex::default(),
            endpoints: BTreeMap::new(),
            dirty: BTreeSet::new(),
            retry: Timers::default(),
            synced: [false; 3],
            started: false,
        };
        let mut flush_at: Option<Instant> = None;
        loop {
            let mut flush = false;
            tokio::select! {
                biased;
                Some(c) = svc_rx.recv() => st.on_service(c),
                Some(c) = pod_rx.recv() => st.on_pod(c),
                Some(c) = ep_rx.recv() => st.on_endpoints(c),
                _ = sleep_until_opt(flush_at) => flush = true,
                _ = sleep_until_opt(st.retry.next()) => {
                    for k in st.retry.pop_due(Instant::now()) {
                        st.dirty.insert(k);
                    }
                }
                else => return,
            }
            while let Ok(c) = svc_rx.try_recv() {
                st.on_service(c);
            }
            while let Ok(c) = pod_rx.try_recv() {
                st.on_pod(c);
            }
            while let Ok(c) = ep_rx.try_recv() {
                st.on_endpoints(c);
            }
            if flush {
                flush_at = None;
            }
            if st.synced.iter().all(|s| *s) {
                if !st.started {
                    st.started = true;
                    // Leftovers: Endpoints whose Service no longer exists.
                    let orphans: Vec<Key> = st
                        .endpoints
                        .keys()
                        .filter(|k| !st.services.contains_key(*k))
                        .cloned()
                        .collect();
                    st.dirty.extend(orphans);
                }
                if flush {
                    st.process().await;
                } else if !st.dirty.is_empty() && flush_at.is_none() {
                    flush_at = Some(after(st.cfg.batch_period));
                }
            }
        }
    })
}

impl State {
    fn index_service(&mut self, key: &Key, sel: &Option<BTreeMap<String, String>>, add: bool) {
        let Some((k, v)) = sel.as_ref().and_then(|s| s.iter().next()) else {
            return;
        };
        let ik = (key.0.clone(), k.clone(), v.clone());
        if add {
            self.svc_index.entry(ik).or_default().insert(key.1.clone());
        } else if let Some(set) = self.svc_index.get_mut(&ik) {
            set.remove(&key.1);
            if set.is_empty() {
                self.svc_index.remove(&ik);
            }
        }
    }

    fn put_service(&mut self, obj: Arc<StoredObject>) {
        let key = key_of(&obj.value);
        let selector = service_selector(&obj.value);
        if let Some(old) = self.services.remove(&key) {
            self.index_service(&key, &old.selector, false);
        }
        self.index_service(&key, &selector, true);
        self.services.insert(key.clone(), Svc { obj, selector });
        self.dirty.insert(key);
    }

    fn drop_service(&mut self, key: &Key) {
        if let Some(old) = self.services.remove(key) {
            self.index_service(key, &old.selector, false);
        }
        self.dirty.insert(key.clone());
    }

    fn on_service(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[0] = true;
                let keys: Vec<Key> = self.services.keys().cloned().collect();
                for k in keys {
                    self.drop_service(&k);
                }
                for o in items {
                    self.put_service(o);
                }
            }
            Change::Event(ev) => match ev.kind {
                EventType::Added | EventType::Modified => {
                    if let Some(old) = self.services.get(&key_of(&ev.object.value))
                        && old.obj.revision > ev.object.revision
                    {
                        return;
                    }
                    self.put_service(ev.object.clone())
                }
                EventType::Deleted => self.drop_service(&key_of(&ev.object.value)),
            },
        }
    }

    /// Marks the Services in `ns` whose selector matches `pod`.
    fn mark_services_for(&mut self, pod: &Tree) {
        let ns = str_at(pod, "/metadata/namespace").to_string();
        let mut hits = Vec::new();
        for (k, v) in label_pairs(pod) {
            if let Some(names) = self.svc_index.get(&(ns.clone(), k, v)) {
                for n in names {
                    let key = (ns.clone(), n.clone());
                    if let Some(s) = self.services.get(&key)
                        && s.selector
                            .as_ref()
                            .is_some_and(|sel| selector_matches(sel, pod))
                    {
                        hits.push(key);
                    }
                }
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
                    let info = EpPod::of(&o.value);
                    self.pods.insert(o, info);
                }
                let all: Vec<Key> = self.services.keys().cloned().collect();
                self.dirty.extend(all);
            }
            Change::Event(ev) => {
                let (ns, name) = key_of(&ev.object.value);
                let old = match ev.kind {
                    EventType::Deleted => self.pods.remove(&ns, &name),
                    _ => {
                        if let Some(cur) = self.pods.get(&ns, &name)
                            && cur.obj.revision > ev.object.revision
                        {
                            return;
                        }
                        let info = EpPod::of(&ev.object.value);
                        let old = self.pods.insert(ev.object.clone(), info);
                        if let (Some(o), Some(n)) = (&old, self.pods.get(&ns, &name))
                            && o.info == n.info
                            && o.obj.value.ptr("/metadata/labels")
                                == n.obj.value.ptr("/metadata/labels")
                        {
                            return; // nothing any Endpoints shows changed
                        }
                        old
                    }
                };
                if let Some(o) = &old {
                    self.mark_services_for(&o.obj.value);
                }
                if ev.kind != EventType::Deleted {
                    self.mark_services_for(&ev.object.value);
                }
            }
        }
    }

    fn on_endpoints(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[2] = true;
                self.endpoints.clear();
                for o in items {
                    self.endpoints.insert(key_of(&o.value), o);
                }
                let all: Vec<Key> = self.services.keys().cloned().collect();
                self.dirty.extend(all);
            }
            Change::Event(ev) => {
                let key = key_of(&ev.object.value);
                match ev.kind {
                    EventType::Deleted => {
                        self.endpoints.remove(&key);
                        if self.services.contains_key(&key) {
                            self.dirty.insert(key);
                        }
                    }
                    _ => self.remember(ev.object.clone()),
                }
            }
        }
    }

    /// Caches an Endpoints object unless a newer state is known.
    fn remember(&mut self, o: Arc<StoredObject>) {
        let key = key_of(&o.value);
        if self
            .endpoints
            .get(&key)
            .is_some_and(|cur| cur.revision > o.revision)
        {
            return;
        }
        self.endpoints.insert(key, o);
    }

    async fn process(&mut self) {
        while let Some(key) = self.dirty.pop_first() {
            if let Err(e) = self.sync(&key).await {
                tracing::debug!(ns = %key.0, service = %key.1, error = %e.message, "endpoints sync failed");
                self.retry
                    .schedule_earliest(key, after(self.cfg.retry_delay));
            }
        }
    }

    async fn sync(&mut self, key: &Key) -> Result<(), ApiError> {
        let c = self.cluster.clone();
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so is its Endpoints object (leader-election records stay).
            let Some(ep) = self.endpoints.get(key) else {
                return Ok(());
            };
            if ep
                .value
                .ptr("/metadata/annotations")
                .and_then(|a| a.get(LEADER_ANNOTATION))
                .is_some()
            {
                return Ok(());
            }
            let opts = DeleteOptions {
                precondition: crate::store::Precondition {
                    uid: Some(uid_of(&ep.value).to_string()),
                    resource_version: None,
                },
                ..Default::default()
            };
            return match c.delete(&c.res.endpoints, &key.0, &key.1, &opts).await {
                Ok(_) => {
                    self.endpoints.remove(key);
                    Ok(())
                }
                Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(e),
            };
        };
        if svc.selector.is_none() {
            return Ok(()); // no selector: someone else manages its Endpoints
        }
        for _ in 0..WRITE_ATTEMPTS {
            let Some(body) = self.desired_object(key) else {
                return Ok(()); // up to date
            };
            let result = if body.ptr("/metadata/resourceVersion").is_some() {
                c.update(&c.res.endpoints, body).await
            } else {
                c.create(&c.res.endpoints, body).await
            };
            match result {
                Ok(v) => {
                    self.remember(v);
                    return Ok(());
                }
                Err(e) if e.code == 409 || e.code == 404 => self.refresh(key).await?,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale("endpoints", &key.1))
    }

    /// The Endpoints object a Service should have, or `None` when the cached one matches. It
    /// carries the cached object's resourceVersion when there is one (an update), none for a
    /// create.
    fn desired_object(&self, key: &Key) -> Option<Value> {
        let svc = self.services.get(key)?;
        let selector = svc.selector.as_ref()?;
        let svc = &svc.obj.value;
        let pairs: Vec<(String, String)> = selector
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let pods: Vec<&EpPod> = self
            .pods
            .candidates(&key.0, &pairs)
            .into_iter()
            .filter(|p| selector_matches(selector, &p.obj.value))
            .map(|p| &p.info)
            .collect();
        let mut subsets = desired_subsets(svc, &pods);
        let truncated = truncate(&mut subsets, self.cfg.max_capacity);
        let mut labels = svc
            .ptr("/metadata/labels")
            .and_then(Tree::as_object)
            .map(Obj::to_map)
            .unwrap_or_default();
        let ip = str_at(svc, "/spec/clusterIP");
        if ip.is_empty() || ip == "None" {
            labels.insert(HEADLESS_LABEL.into(), Value::from(""));
        }
        let cur = self.endpoints.get(key).map(|o| &o.value);
        let mut meta = match cur {
            Some(cur) => {
                let same_subsets = cur
                    .field("subsets")
                    .and_then(Tree::as_array)
                    .unwrap_or_default()
                    == subsets.as_slice();
                let cur_labels = cur.ptr("/metadata/labels").and_then(Tree::as_object);
                let same_labels = same_map(cur_labels, &labels);
                let cur_truncated = cur
                    .ptr("/metadata/annotations")
                    .and_then(|a| a.get(OVER_CAPACITY))
                    .is_some();
                if same_subsets && same_labels && cur_truncated == truncated {
                    return None;
                }
                cur.field("metadata")
                    .map(Tree::to_value)
                    .unwrap_or_else(|| json!({}))
            }
            None => json!({"name": key.1, "namespace": key.0}),
        };
        if labels.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("labels");
            }
        } else {
            set_in(&mut meta, &["labels"], Value::Object(labels));
        }
        let mut ann = meta
            .field("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if truncated {
            ann.insert(OVER_CAPACITY.into(), Value::from("truncated"));
        } else {
            ann.remove(OVER_CAPACITY);
        }
        if let Some(m) = meta.as_object_mut() {
            if ann.is_empty() {
                m.remove("annotations");
            } else {
                m.insert("annotations".into(), Value::Object(ann));
            }
        }
        if !meta.is_object() {
            meta = json!({"name": key.1, "namespace": key.0});
        }
        let mut obj = Map::new();
        obj.insert("apiVersion".into(), Value::from("v1"));
        obj.insert("kind".into(), Value::from("Endpoints"));
        obj.insert("metadata".into(), meta);
        if !subsets.is_empty() {
            obj.insert("subsets".into(), Value::Array(subsets));
        }
        Some(Value::Object(obj))
    }

    /// Re-reads an Endpoints object after a conflict.
    async fn refresh(&mut self, key: &Key) -> Result<(), ApiError> {
        let c = &self.cluster;
        match c.get(&c.res.endpoints, &key.0, &key.1).await {
            Ok(o) => {
                self.endpoints.insert(key.clone(), o);
                Ok(())
            }
            Err(e) if e.code == 404 => {
                self.endpoints.remove(key);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// What the Endpoints of a Service can show of a pod (`PartialEq`: a pod change that leaves it
/// and the labels alone concerns no Endpoints).
#[derive(Debug, PartialEq)]
pub(crate) struct EpPod {
    name: String,
    uid: String,
    ip: Option<String>,
    node: String,
    hostname: String,
    subdomain: String,
    ready: bool,
    terminal: bool,
    deleting: bool,
    /// Named container ports (name, protocol, number), sidecar init containers included.
    ports: Vec<(String, String, i64)>,
}

impl EpPod {
    pub(crate) fn of<V: Json>(pod: &V) -> EpPod {
        let mut ports = Vec::new();
        for (i, path) in ["/spec/containers", "/spec/initContainers"]
            .iter()
            .enumerate()
        {
            for c in pod.ptr(path).and_then(Json::as_array).unwrap_or_default() {
                // Init containers count only as sidecars (restartPolicy Always).
                if i == 1 && str_at(c, "/restartPolicy") != "Always" {
                    continue;
                }
                for p in c
                    .field("ports")
                    .and_then(Json::as_array)
                    .unwrap_or_default()
                {
                    let name = str_at(p, "/name");
                    let Some(n) = p.field("containerPort").and_then(Json::as_i64) else {
                        continue;
                    };
                    if name.is_empty() {
                        continue;
                    }
                    let proto = match str_at(p, "/protocol") {
                        "" => "TCP",
                        x => x,
                    };
                    ports.push((name.to_string(), proto.to_string(), n));
                }
            }
        }
        EpPod {
            name: str_at(pod, "/metadata/name").to_string(),
            uid: uid_of(pod).to_string(),
            ip: pod_ip(pod).map(str::to_string),
            node: str_at(pod, "/spec/nodeName").to_string(),
            hostname: str_at(pod, "/spec/hostname").to_string(),
            subdomain: str_at(pod, "/spec/subdomain").to_string(),
            ready: pod_ready(pod),
            terminal: pod_terminal(pod),
            deleting: is_terminating(pod),
            ports,
        }
    }
}

/// A Service port: name, protocol, appProtocol and its target.
struct SvcPort {
    name: String,
    protocol: String,
    app_protocol: Option<String>,
    target: Value,
}

fn service_ports<V: Json>(svc: &V) -> Vec<SvcPort> {
    svc.ptr("/spec/ports")
        .and_then(Json::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.field("port").and_then(Json::as_i64).unwrap_or(0);
                    SvcPort {
                        name: str_at(p, "/name").to_string(),
                        protocol: match str_at(p, "/protocol") {
                            "" => "TCP".to_string(),
                            x => x.to_string(),
                        },
                        app_protocol: p
                            .field("appProtocol")
                            .and_then(Json::as_str)
                            .map(str::to_string),
                        target: match p.field("targetPort") {
                            Some(t) if !t.is_null() => t.to_value(),
                            _ => json!(port),
                        },
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `podutil.FindPort`: the container port a Service port targets on this pod.
fn find_port(pod: &EpPod, sp: &SvcPort) -> Option<i64> {
    match &sp.target {
        Value::Number(n) => n.as_i64().filter(|p| *p > 0),
        Value::String(s) => {
            if let Ok(n) = s.parse::<i64>() {
                return Some(n).filter(|p| *p > 0);
            }
            pod.ports
                .iter()
                .find(|(name, proto, _)| name == s && *proto == sp.protocol)
                .map(|(_, _, n)| *n)
        }
        _ => None,
    }
}

fn pod_ip<V: Json>(pod: &V) -> Option<&str> {
    let ip = str_at(pod, "/status/podIP");
    if !ip.is_empty() {
        return Some(ip);
    }
    pod.ptr("/status/podIPs/0/ip")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
}

/// A pod listed in a Service's Endpoints.
struct Listed<'a> {
    pod: &'a EpPod,
    ip: &'a str,
    ready: bool,
    /// (Service port index, resolved port number); empty for a headless Service without ports.
    ports: Vec<(usize, i64)>,
}

fn address(svc_ns: &str, svc_name: &str, l: &Listed) -> Value {
    let pod = l.pod;
    let mut a = Map::new();
    a.insert("ip".into(), Value::from(l.ip));
    if !pod.hostname.is_empty() && pod.subdomain == svc_name {
        a.insert("hostname".into(), Value::from(pod.hostname.as_str()));
    }
    if !pod.node.is_empty() {
        a.insert("nodeName".into(), Value::from(pod.node.as_str()));
    }
    let mut r = Map::new();
    r.insert("kind".into(), Value::from("Pod"));
    r.insert("namespace".into(), Value::from(svc_ns));
    r.insert("name".into(), Value::from(pod.name.as_str()));
    r.insert("uid".into(), Value::from(pod.uid.as_str()));
    a.insert("targetRef".into(), Value::Object(r));
    Value::Object(a)
}

/// The subsets of a Service's Endpoints for the pods (of its namespace) its selector matches.
fn desired_subsets<V: Json>(svc: &V, pods: &[&EpPod]) -> Vec<Value> {
    let (svc_ns, svc_name) = ns_name(svc);
    let publish = svc
        .ptr("/spec/publishNotReadyAddresses")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let headless = str_at(svc, "/spec/clusterIP") == "None";
    let ports = service_ports(svc);
    if ports.is_empty() && !headless {
        return Vec::new();
    }
    let mut listed: Vec<Listed> = Vec::with_capacity(pods.len());
    for pod in pods {
        if pod.terminal || (!publish && pod.deleting) {
            continue;
        }
        let Some(ip) = pod.ip.as_deref() else {
            continue;
        };
        let offered: Vec<(usize, i64)> = ports
            .iter()
            .enumerate()
            .filter_map(|(i, sp)| find_port(pod, sp).map(|n| (i, n)))
            .collect();
        if !ports.is_empty() && offered.is_empty() {
            continue;
        }
        listed.push(Listed {
            pod,
            ip,
            ready: publish || pod.ready,
            ports: offered,
        });
    }
    listed.sort_by(|a, b| (a.ip, a.pod.uid.as_str()).cmp(&(b.ip, b.pod.uid.as_str())));
    // Port → the addresses offering it (in address order), then addresses offering the same
    // ports share a subset (`RepackSubsets`).
    let mut by_port: BTreeMap<Option<(usize, i64)>, Vec<usize>> = BTreeMap::new();
    for (i, l) in listed.iter().enumerate() {
        if l.ports.is_empty() {
            by_port.entry(None).or_default().push(i);
        }
        for p in &l.ports {
            by_port.entry(Some(*p)).or_default().push(i);
        }
    }
    let mut groups: BTreeMap<Vec<usize>, Vec<(usize, i64)>> = BTreeMap::new();
    for (port, members) in by_port {
        let g = groups.entry(members).or_default();
        if let Some(p) = port {
            g.push(p);
        }
    }
    let mut uses = vec![0usize; listed.len()];
    for members in groups.keys() {
        for i in members {
            uses[*i] += 1;
        }
    }
    let mut built: Vec<Option<Value>> = (0..listed.len()).map(|_| None).collect();
    let mut out = Vec::with_capacity(groups.len());
    for (members, group_ports) in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for i in members {
            let a = match built[i].take() {
                Some(a) => a,
                None => address(svc_ns, svc_name, &listed[i]),
            };
            uses[i] -= 1;
            let a = if uses[i] > 0 {
                built[i] = Some(a.clone());
                a
            } else {
                a
            };
            if listed[i].ready {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        let mut s = Map::new();
        if !ready.is_empty() {
            s.insert("addresses".into(), Value::Array(ready));
        }
        if !not_ready.is_empty() {
            s.insert("notReadyAddresses".into(), Value::Array(not_ready));
        }
        let ports: Vec<Value> = group_ports
            .into_iter()
            .map(|(i, n)| {
                let sp = &ports[i];
                let mut p = Map::new();
                if !sp.name.is_empty() {
                    p.insert("name".into(), Value::from(sp.name.as_str()));
                }
                p.insert("port".into(), Value::from(n));
                p.insert("protocol".into(), Value::from(sp.protocol.as_str()));
                if let Some(a) = &sp.app_protocol {
                    p.insert("appProtocol".into(), Value::from(a.as_str()));
                }
                Value::Object(p)
            })
            .collect();
        if !ports.is_empty() {
            s.insert("ports".into(), Value::Array(ports));
        }
        out.push(Value::Object(s));
    }
    out
}

fn count(s: &Value, field: &str) -> usize {
    s.get(field).and_then(Value::as_array).map_or(0, Vec::len)
}

/// `truncateEndpoints`: keeps at most `max` addresses, ready ones first, each subset keeping its
/// proportion (rounded up). Returns whether anything was cut.
fn truncate(subsets: &mut [Value], max: usize) -> bool {
    let ready: usize = subsets.iter().map(|s| count(s, "addresses")).sum();
    let not_ready: usize = subsets.iter().map(|s| count(s, "notReadyAddresses")).sum();
    if ready + not_ready <= max {
        return false;
    }
    let truncate_ready = ready > max;
    let (limit, total) = if truncate_ready {
        (max, ready)
    } else {
        (max - ready, not_ready)
    };
    let mut can_add = limit;
    for s in subsets.iter_mut() {
        let field = if truncate_ready {
            "addresses"
        } else {
            "notReadyAddresses"
        };
        let n = count(s, field);
        let share = if total == 0 {
            0
        } else {
            (n * limit).div_ceil(total)
        };
        let keep = share.min(can_add);
        if let Some(a) = s.get_mut(field).and_then(Value::as_array_mut) {
            a.truncate(keep);
        }
        if let Some(m) = s.as_object_mut() {
            if truncate_ready {
                m.remove("notReadyAddresses");
            }
            if m.get(field)
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                m.remove(field);
            }
        }
        can_add -= keep;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn named_ports_and_readiness_repack() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.5", "ports": [
                {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]}});
        let a = pod(
            "a",
            "10.0.0.2",
            true,
            json!([{"name": "web", "containerPort": 8080}]),
        );
        let b = pod(
            "b",
            "10.0.0.1",
            false,
            json!([{"name": "web", "containerPort": 8080}]),
        );
        let c = pod("c", "10.0.0.3", true, json!([]));
        let (a, b, c) = (EpPod::of(&a), EpPod::of(&b), EpPod::of(&c));
        let subsets = desired_subsets(&svc, &[&a, &b, &c]);
        // Port 8080 ("web") is offered by a and b, 9090 by all three: one subset per address
        // set, as RepackSubsets builds them.
        assert_eq!(subsets.len(), 2);
        let web = subsets
            .iter()
            .find(|s| s["ports"][0]["port"] == 8080)
            .unwrap();
        assert_eq!(count(web, "ports"), 1);
        assert_eq!(web["ports"][0]["name"], "http");
        assert_eq!(
            web["addresses"],
            json!([{"ip": "10.0.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod",
                "namespace": "default", "name": "a", "uid": "u-a"}}])
        );
        assert_eq!(web["notReadyAddresses"][0]["ip"], "10.0.0.1");
        let metrics = subsets
            .iter()
            .find(|s| s["ports"][0]["port"] == 9090)
            .unwrap();
        let ready: Vec<&str> = metrics["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ready, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(metrics["notReadyAddresses"][0]["targetRef"]["name"], "b");
        // The same address set offering two ports shares one subset.
        let two = desired_subsets(&svc, &[&a, &b]);
        assert_eq!(two.len(), 1);
        assert_eq!(count(&two[0], "ports"), 2);
    }

    #[test]
    fn truncation_keeps_ready_first() {
        let addrs: Vec<Value> = (0..8)
            .map(|i| json!({"ip": format!("10.0.0.{i}")}))
            .collect();
        let mut subsets = vec![json!({"addresses": addrs[..6], "notReadyAddresses": addrs[6..]})];
        assert!(truncate(&mut subsets, 5));
        assert_eq!(count(&subsets[0], "addresses"), 5);
        assert_eq!(count(&subsets[0], "notReadyAddresses"), 0);
        let mut subsets = vec![json!({"addresses": addrs[..3], "notReadyAddresses": addrs[3..]})];
        assert!(truncate(&mut subsets, 5));
        assert_eq!(count(&subsets[0], "addresses"), 3);
        assert_eq!(count(&subsets[0], "notReadyAddresses"), 2);
        assert!(!truncate(&mut subsets, 5));
    }
}

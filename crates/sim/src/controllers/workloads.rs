//! The workload controllers of kube-controller-manager: ReplicaSet, StatefulSet, DaemonSet and
//! Job (the Deployment controller is in [`super::deployment`] and shares the machinery here).
//!
//! Every controller is one task fed by informers (a list, then a watch from its revision, re-listed
//! when the watch falls behind) on its own resource and on pods. Pods are indexed by the uid of
//! their controller owner, so an event costs O(log n). Changed objects put keys on a work queue (a
//! `BTreeSet`, processed in order, so runs are deterministic). After a controller writes, the key
//! waits until the informer has delivered the revision of that write: the "expectations" of the
//! real controllers, which keep one deficit from being filled twice by a stale cache.

use crate::json::{Field, Json, Ptr, object};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::tree::Tree;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Cluster, ns_name};
use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::rest::DeleteOptions;
use crate::selector::LabelSelector;
use crate::store::{EventType, NsName, Precondition, StoredObject, WatchEvent};

// ==============================================================================================
// Shared machinery (also used by the Deployment controller)
// ==============================================================================================

/// A namespaced object: (namespace, name).
pub(crate) type Key = (String, String);

pub(crate) fn key_of<V: Json>(v: &V) -> Key {
    let (ns, name) = ns_name(v);
    (ns.to_string(), name.to_string())
}

/// What an informer delivers: the whole state with its revision, then each change.
pub(crate) enum FeedMsg {
    Sync(Vec<Arc<StoredObject>>, u64),
    Event(Arc<WatchEvent>),
}

impl FeedMsg {
    fn revision(&self) -> u64 {
        match self {
            FeedMsg::Sync(_, rev) => *rev,
            FeedMsg::Event(e) => e.revision,
        }
    }
}

/// Starts an informer on `r` whose messages go to `tx` tagged with `feed`. It lists, watches from
/// the list's revision and re-lists when the watch falls out of the history window; it ends when
/// the receiver is dropped.
pub(crate) fn spawn_feed(
    cluster: &Cluster,
    r: &ResourceInfo,
    feed: usize,
    tx: UnboundedSender<(usize, FeedMsg)>,
) {
    spawn_feed_of(cluster, r, feed, tx, None);
}

/// [`spawn_feed`] for a cache that keeps only some objects (pods of one controller kind): passes
/// on only the changes whose new or old version `keep` keeps (the initial list whole), so the
/// others' updates are not even sent.
pub(crate) fn spawn_feed_of(
    cluster: &Cluster,
    r: &ResourceInfo,
    feed: usize,
    tx: UnboundedSender<(usize, FeedMsg)>,
    keep: Option<Keep>,
) {
    let cluster = cluster.clone();
    let r = r.clone();
    tokio::spawn(async move {
        loop {
            let (items, rev) = match cluster.list(&r, None).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(resource = %r.qualified(), error = %e, "informer list failed");
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = tx.closed() => return,
                    }
                }
            };
            if tx.send((feed, FeedMsg::Sync(items, rev))).is_err() {
                return;
            }
            let mut stream = match cluster.server.store.watch(&r.key(), None, rev).await {
                Ok(s) => s,
                Err(_) => continue, // already expired: list again
            };
            loop {
                tokio::select! {
                    biased;
                    batch = stream.next() => match batch {
                        Some(Ok(events)) => {
                            for e in events {
                                if let Some(keep) = keep
                                    && !keep.keeps(&e.object.value)
                                    && !e.previous.as_ref().is_some_and(|p| keep.keeps(&p.value))
                                {
                                    continue;
                                }
                                if tx.send((feed, FeedMsg::Event(e))).is_err() {
                                    return;
                                }
                            }
                        }
                        Some(Err(_)) => break, // fell behind the history: re-list
                        None => {
                            tokio::select! {
                                biased;
                                _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                                _ = tx.closed() => return,
                            }
                        }
                    },
                    _ = tx.closed() => return,
                }
            }
        }
    });
}

/// The work queue: keys to sync (in order), keys to sync later, and keys waiting for the
/// informers to deliver the revisions of their own writes.
pub(crate) struct Queue {
    dirty: BTreeSet<Key>,
    timers: BTreeMap<Instant, BTreeSet<Key>>,
    timer_of: BTreeMap<Key, Instant>,
    waiting: BTreeMap<Key, Vec<u64>>,
    by_feed: Vec<BTreeMap<u64, BTreeSet<Key>>>,
    seen: Vec<u64>,
}

impl Queue {
    pub(crate) fn new(feeds: usize) -> Self {
        Queue {
            dirty: BTreeSet::new(),
            timers: BTreeMap::new(),
            timer_of: BTreeMap::new(),
            waiting: BTreeMap::new(),
            by_feed: (0..feeds).map(|_| BTreeMap::new()).collect(),
            seen: vec![0; feeds],
        }
    }

    /// Syncs `k` soon (once its expectations, if any, are met).
    pub(crate) fn add(&mut self, k: Key) {
        if !self.waiting.contains_key(&k) {
            self.dirty.insert(k);
        }
    }

    /// Syncs `k` after `d` (virtual time), unless an earlier sync is already planned.
    pub(crate) fn add_after(&mut self, k: Key, d: Duration) {
        let at = Instant::now() + d;
        if let Some(old) = self.timer_of.get(&k).copied() {
            if old <= at {
                return;
            }
            if let Some(set) = self.timers.get_mut(&old) {
                set.remove(&k);
                if set.is_empty() {
                    self.timers.remove(&old);
                }
            }
        }
        self.timers.entry(at).or_default().insert(k.clone());
        self.timer_of.insert(k, at);
    }

    /// `k` must not be synced again before `feed` has delivered revision `rev` (a write of ours).
    pub(crate) fn expect(&mut self, k: &Key, feed: usize, rev: u64) {
        if feed >= self.seen.len() || rev <= self.seen[feed] {
            return;
        }
        let n = self.seen.len();
        let w = self.waiting.entry(k.clone()).or_insert_with(|| vec![0; n]);
        if rev > w[feed] {
            w[feed] = rev;
            self.by_feed[feed].entry(rev).or_default().insert(k.clone());
        }
        self.dirty.remove(k);
    }

    /// Whether `k` still waits for its own writes to be observed.
    pub(crate) fn is_waiting(&self, k: &Key) -> bool {
        self.waiting.contains_key(k)
    }

    /// Drops what is known about a key whose object is gone.
    pub(crate) fn forget(&mut self, k: &Key) {
        self.waiting.remove(k);
    }

    fn observe(&mut self, feed: usize, rev: u64) {
        if feed >= self.seen.len() || rev <= self.seen[feed] {
            return;
        }
        self.seen[feed] = rev;
        while let Some(entry) = self.by_feed[feed].first_entry() {
            if *entry.key() > rev {
                break;
            }
            for k in entry.remove() {
                let done = match self.waiting.get_mut(&k) {
                    Some(w) if w[feed] <= rev => {
                        w[feed] = 0;
                        w.iter().all(|r| *r == 0)
                    }
                    _ => false,
                };
                if done {
                    self.waiting.remove(&k);
                    self.dirty.insert(k);
                }
            }
        }
    }

    fn fire(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for k in entry.remove() {
                self.timer_of.remove(&k);
                self.add(k);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().copied()
    }

    fn take(&mut self) -> BTreeSet<Key> {
        std::mem::take(&mut self.dirty)
    }
}

/// A controller: how informer messages become keys, and how a key is synced.
pub(crate) trait Reconciler: Send + 'static {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue);
    fn sync(&mut self, key: Key, q: &mut Queue) -> impl Future<Output = ()> + Send;
}

/// The loop every controller runs: apply everything the informers delivered, then sync the keys
/// that are due, in order.
pub(crate) async fn run<R: Reconciler>(
    mut r: R,
    mut rx: UnboundedReceiver<(usize, FeedMsg)>,
    feeds: usize,
) {
    let mut q = Queue::new(feeds);
    loop {
        let deadline = q.next_deadline();
        let first = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => return,
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        if let Some((feed, msg)) = first {
            r.handle(feed, &msg, &mut q);
            q.observe(feed, msg.revision());
        }
        while let Ok((feed, msg)) = rx.try_recv() {
            r.handle(feed, &msg, &mut q);
            q.observe(feed, msg.revision());
        }
        q.fire(Instant::now());
        for key in q.take() {
            r.sync(key, &mut q).await;
        }
    }
}

/// One change of a cached object.
pub(crate) struct Diff {
    pub key: Key,
    pub old: Option<Arc<StoredObject>>,
    pub new: Option<Arc<StoredObject>>,
}

/// Which objects a [`Cache`] keeps: with `owner_kind`, only those controlled by that kind (plus
/// orphans when `keep_orphans`); without, all. Its feed applies the same rule
/// ([`spawn_feed_of`]).
#[derive(Clone, Copy)]
pub(crate) struct Keep {
    owner_kind: Option<&'static str>,
    keep_orphans: bool,
}

impl Keep {
    fn keeps(self, v: &Tree) -> bool {
        self.class_ref(v).is_some()
    }

    /// Some(Some(uid)) controlled, Some(None) orphan, None not kept.
    fn class_ref(self, v: &Tree) -> Option<Option<&str>> {
        match controller_of(v) {
            Some(r) => {
                let kind = r.field("kind").and_then(Json::as_str).unwrap_or("");
                if self.owner_kind.is_none_or(|k| k == kind) {
                    Some(Some(r.field("uid").and_then(Json::as_str).unwrap_or("")))
                } else {
                    None
                }
            }
            None if self.keep_orphans || self.owner_kind.is_none() => Some(None),
            None => None,
        }
    }
}

/// An informer's cache: objects by key, indexed by the uid of their controller owner, holding
/// the objects its [`Keep`] keeps.
pub(crate) struct Cache {
    keep: Keep,
    /// Hashed: looked up for every event of the resource (a pod change reaches a dozen caches).
    map: crate::json::FastMap<Key, Arc<StoredObject>>,
    by_owner: BTreeMap<String, BTreeSet<Key>>,
    orphans: BTreeSet<Key>,
}

impl Cache {
    pub(crate) fn new(owner_kind: Option<&'static str>, keep_orphans: bool) -> Self {
        Cache {
            keep: Keep {
                owner_kind,
                keep_orphans,
            },
            map: crate::json::FastMap::default(),
            by_owner: BTreeMap::new(),
            orphans: BTreeSet::new(),
        }
    }

    /// What this cache keeps (for its feed).
    pub(crate) fn keeps(&self) -> Keep {
        self.keep
    }

    /// Some(Some(uid)) controlled, Some(None) orphan, None not kept.
    fn class(&self, v: &Tree) -> Option<Option<String>> {
        self.class_ref(v).map(|o| o.map(str::to_string))
    }

    fn class_ref<'a>(&self, v: &'a Tree) -> Option<Option<&'a str>> {
        self.keep.class_ref(v)
    }

    fn unindex(&mut self, key: &Key, old: &StoredObject) {
        match self.class(&old.value) {
            Some(Some(uid)) => {
                if let Some(set) = self.by_owner.get_mut(&uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_owner.remove(&uid);
                    }
                }
            }
            Some(None) => {
                self.orphans.remove(key);
            }
            None => {}
        }
    }

    fn upsert(&mut self, obj: Arc<StoredObject>) -> Option<Diff> {
        // Most objects a cache sees are not for it (other controllers' pods), or are updates
        // that keep their owner: both without touching the indices.
        {
            let class = self.class_ref(&obj.value);
            let (ns, name) = ns_name(&obj.value);
            match (self.map.get(&(ns, name) as &dyn NsName), class) {
                (None, None) => return None,
                (Some(o), _) if o.revision == obj.revision => return None,
                (Some(o), Some(c)) if self.class_ref(&o.value) == Some(c) => {
                    let key = key_of(&obj.value);
                    let slot = self.map.get_mut(&key)?;
                    let old = std::mem::replace(slot, obj.clone());
                    return Some(Diff {
                        key,
                        old: Some(old),
                        new: Some(obj),
                    });
                }
                _ => {}
            }
        }
        let key = key_of(&obj.value);
        let old = self.map.remove(&key);
        if let Some(o) = &old {
            if o.revision == obj.revision {
                self.map.insert(key, o.clone());
                return None;
            }
            self.unindex(&key, o);
        }
        match self.class(&obj.value) {
            None => old.map(|o| Diff {
                key,
                old: Some(o),
                new: None,
            }),
            Some(owner) => {
                match owner {
                    Some(uid) => {
                        self.by_owner.entry(uid).or_default().insert(key.clone());
                    }
                    None => {
                        self.orphans.insert(key.clone());
                    }
                }
                self.map.insert(key.clone(), obj.clone());
                Some(Diff {
                    key,
                    old,
                    new: Some(obj),
                })
            }
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Diff> {
        let old = self.map.remove(key)?;
        self.unindex(key, &old);
        Some(Diff {
            key: key.clone(),
            old: Some(old),
            new: None,
        })
    }

    /// Applies an informer message; returns what changed.
    pub(crate) fn apply(&mut self, msg: &FeedMsg) -> Vec<Diff> {
        match msg {
            FeedMsg::Sync(items, _) => {
                let mut diffs = Vec::new();
                let mut present = BTreeSet::new();
                for it in items {
                    present.insert(key_of(&it.value));
                    diffs.extend(self.upsert(it.clone()));
                }
                for k in crate::cluster::absent(self.map.keys(), &present) {
                    diffs.extend(self.remove(&k));
                }
                diffs
            }
            FeedMsg::Event(e) => match e.kind {
                EventType::Deleted => {
                    let (ns, name) = ns_name(&e.object.value);
                    if !self.map.contains_key(&(ns, name) as &dyn NsName) {
                        return Vec::new();
                    }
                    let key = key_of(&e.object.value);
                    // A later object of the same name may already be cached: only drop this one.
                    let same = self.map.get(&key).is_some_and(|c| {
                        uid_of(&c.value) == uid_of(&e.object.value)
                            || c.revision <= e.object.revision
                    });
                    if same {
                        self.remove(&key).into_iter().collect()
                    } else {
                        Vec::new()
                    }
                }
                _ => self.upsert(e.object.clone()).into_iter().collect(),
            },
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Arc<StoredObject>> {
        self.map.get(key)
    }

    /// Objects controlled by the owner with this uid, in key order.
    pub(crate) fn owned(&self, uid: &str) -> Vec<Arc<StoredObject>> {
        self.by_owner
            .get(uid)
            .map(|set| {
                set.iter()
                    .filter_map(|k| self.map.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Objects without a controller in a namespace.
    pub(crate) fn orphans_in(&self, ns: &str) -> Vec<Arc<StoredObject>> {
        self.orphans
            .range((ns.to_string(), String::new())..)
            .take_while(|(n, _)| n == ns)
            .filter_map(|k| self.map.get(k).cloned())
            .collect()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys()
    }
}

// ----------------------------------------------------------------------------------------------
// JSON helpers

pub(crate) fn str_at<'a, V: Json>(v: &'a V, p: &str) -> &'a str {
    v.ptr(p).and_then(Json::as_str).unwrap_or("")
}

pub(crate) fn i64_at<V: Json>(v: &V, p: &str) -> Option<i64> {
    v.ptr(p).and_then(Json::as_i64)
}

pub(crate) fn uid_of<V: Json>(v: &V) -> &str {
    str_at(v, "/metadata/uid")
}

/// The revision of an object returned by a write.
pub(crate) fn rv_of<V: Json>(v: &V) -> u64 {
    str_at(v, "/metadata/resourceVersion").parse().unwrap_or(0)
}

pub(crate) fn labels_of<V: Json>(v: &V) -> Option<&V> {
    v.ptr("/metadata/labels")
}

pub(crate) fn label<'a, V: Json>(v: &'a V, k: &str) -> Option<&'a str> {
    v.ptr("/metadata/labels")
        .and_then(|l| l.field(k))
        .and_then(Json::as_str)
}

pub(crate) fn annotation<'a, V: Json>(v: &'a V, k: &str) -> Option<&'a str> {
    v.ptr("/metadata/annotations")
        .and_then(|l| l.field(k))
        .and_then(Json::as_str)
}

pub(crate) fn is_terminating<V: Json>(v: &V) -> bool {
    v.ptr("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn created_at<V: Json>(v: &V) -> Option<DateTime<Utc>> {
    parse_time(str_at(v, "/metadata/creationTimestamp"))
}

/// The virtual time until `t` (zero when past).
pub(crate) fn until(cluster: &Cluster, t: DateTime<Utc>) -> Duration {
    (t - cluster.server.clock.now())
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// The ownerReference that marks the controller of an object.
pub(crate) fn controller_of<V: Json>(v: &V) -> Option<&V> {
    v.ptr("/metadata/ownerReferences")
        .and_then(Json::as_array)?
        .iter()
        .find(|r| r.field("controller").and_then(Json::as_bool) == Some(true))
}

/// (kind, name, uid) of the controller owner.
pub(crate) fn controller_parts<V: Json>(v: &V) -> Option<(&str, &str, &str)> {
    let r = controller_of(v)?;
    Some((
        r.field("kind").and_then(Json::as_str).unwrap_or(""),
        r.field("name").and_then(Json::as_str).unwrap_or(""),
        r.field("uid").and_then(Json::as_str).unwrap_or(""),
    ))
}

/// A controller ownerReference to `owner`.
pub(crate) fn owner_ref<V: Json>(owner: &V, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": str_at(owner, "/metadata/name"),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// An int-or-percent (`maxSurge`, `maxUnavailable`) scaled to `total`.
pub(crate) fn scaled_value<V: Json>(
    v: Option<&V>,
    total: i64,
    round_up: bool,
    default: i64,
) -> i64 {
    let limit = i64::from(i32::MAX);
    scaled_raw(v, total, round_up, default).clamp(-limit, limit)
}

fn scaled_raw<V: Json>(v: Option<&V>, total: i64, round_up: bool, default: i64) -> i64 {
    if let Some(n) = v.and_then(Json::number) {
        return n.as_i64().unwrap_or(default);
    }
    match v.and_then(Json::as_str) {
        Some(s) => match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<i64>() {
                Ok(p) => {
                    let x = p.saturating_mul(total);
                    if round_up {
                        x.saturating_add(99).div_euclid(100)
                    } else {
                        x.div_euclid(100)
                    }
                }
                Err(_) => default,
            },
            None => s.trim().parse().unwrap_or(default),
        },
        _ => default,
    }
}

/// The JSON text of a value with object keys sorted, so equal objects hash equally.
pub(crate) fn canonical<V: Json>(v: &V, out: &mut String) {
    if let Some(entries) = v.entries() {
        let mut entries: Vec<(&str, &V)> = entries.collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        out.push('{');
        for (i, (k, x)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            canonical(*x, out);
        }
        out.push('}');
    } else if let Some(a) = v.as_array() {
        out.push('[');
        for (i, x) in a.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            canonical(x, out);
        }
        out.push(']');
    } else {
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
}

/// A pod-template hash like `controller.ComputeHash`: FNV-32a over the template (and the collision
/// count), printed in decimal and mapped to the alphabet of `rand.SafeEncodeString`.
pub(crate) fn template_hash<V: Json>(template: &V, collision_count: Option<i64>) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(text.as_bytes());
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        feed(&b);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Pod state

pub(crate) fn phase<V: Json>(p: &V) -> &str {
    str_at(p, "/status/phase")
}

pub(crate) fn is_terminal<V: Json>(p: &V) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// Counted by controllers as an existing replica: not finished and not being deleted.
pub(crate) fn is_active<V: Json>(p: &V) -> bool {
    !is_terminal(p) && !is_terminating(p)
}

fn ready_condition<V: Json>(p: &V) -> Option<&V> {
    p.ptr("/status/conditions")
        .and_then(Json::as_array)?
        .iter()
        .find(|c| c.ptr("/type").and_then(Json::as_str) == Some("Ready"))
}

pub(crate) fn is_ready<V: Json>(p: &V) -> bool {
    ready_condition(p).and_then(|c| c.ptr("/status").and_then(Json::as_str)) == Some("True")
}

/// Whether two versions of a pod look the same to a ReplicaSet's sync: what it claims by (labels,
/// controller), what it counts (active: a terminal phase and deletion; ready and since when).
/// What it reads only to choose pods to delete (node, phase, restarts, deletion cost) is read
/// from the cache when a sync runs for another reason; a scale-down never waits for a pod
/// update.
pub(crate) fn same_for_replica_set<V: Json>(old: &V, new: &V) -> bool {
    is_terminating(old) == is_terminating(new)
        // Of the phase, a sync reads only whether it is terminal (Ready is the condition).
        && is_terminal(old) == is_terminal(new)
        && same_at(ready_condition(old), ready_condition(new))
        && same_at(old.ptr("/metadata/labels"), new.ptr("/metadata/labels"))
        && same_at(
            old.ptr("/metadata/ownerReferences"),
            new.ptr("/metadata/ownerReferences"),
        )
        && old.ptr("/metadata/uid") == new.ptr("/metadata/uid")
}

fn same_at<V: Json>(a: Option<&V>, b: Option<&V>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (a, b) => a == b,
    }
}

pub(crate) fn is_running_and_ready<V: Json>(p: &V) -> bool {
    phase(p) == "Running" && is_ready(p)
}

pub(crate) fn ready_since<V: Json>(p: &V) -> Option<DateTime<Utc>> {
    ready_condition(p)
        .and_then(|c| c.field("lastTransitionTime"))
        .and_then(Json::as_str)
        .and_then(parse_time)
}

/// Whether a pod is available (ready for `minReadySeconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Avail {
    No,
    Yes,
    /// Ready, and available from this time on.
    At(DateTime<Utc>),
}

/// `podutil.IsPodAvailable`: ready, and for more than `min_ready` seconds.
pub(crate) fn availability<V: Json>(p: &V, min_ready: i64, now: DateTime<Utc>) -> Avail {
    if !is_ready(p) {
        return Avail::No;
    }
    if min_ready <= 0 {
        return Avail::Yes;
    }
    match ready_since(p) {
        Some(t) => {
            let at = t + chrono::Duration::seconds(min_ready);
            if at < now { Avail::Yes } else { Avail::At(at) }
        }
        None => Avail::No,
    }
}

/// The virtual delay after which a pod that becomes available at `at` is seen as available.
pub(crate) fn avail_delay(cluster: &Cluster, at: DateTime<Utc>) -> Duration {
    until(cluster, at) + Duration::from_secs(1)
}

/// How a new pod is named.
pub(crate) enum PodName<'a> {
    Generate(&'a str),
    Fixed(&'a str),
}

/// `controller.GetPodFromTemplate`: labels, annotations and finalizers of the template, an
/// ownerReference to the controller, the template's spec.
pub(crate) fn pod_from_template<V: Json>(
    template: &V,
    ns: &str,
    name: PodName<'_>,
    owner: Value,
    extra_labels: &[(&str, String)],
) -> Value {
    let mut meta = Map::new();
    match name {
        PodName::Generate(prefix) => meta.insert("generateName".into(), json!(prefix)),
        PodName::Fixed(n) => meta.insert("name".into(), json!(n)),
    };
    meta.insert("namespace".into(), json!(ns));
    let mut labels: Map<String, Value> = template
        .ptr("/metadata/labels")
        .and_then(Json::entries)
        .map(|e| e.map(|(k, v)| (k.to_string(), v.to_value())).collect())
        .unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), json!(v));
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    for f in ["annotations", "finalizers"] {
        if let Some(x) = template.ptr(&format!("/metadata/{f}")).filter(|x| {
            x.entries().is_some_and(|mut o| o.next().is_some())
                || x.as_array().is_some_and(|a| !a.is_empty())
        }) {
            meta.insert(f.into(), x.to_value());
        }
    }
    meta.insert("ownerReferences".into(), Value::Array(vec![owner]));
    object! {
        "apiVersion" => "v1",
        "kind" => "Pod",
        "metadata" => meta,
        "spec" => template.field("spec").map_or_else(|| object! {}, Json::to_value),
    }
}

// ----------------------------------------------------------------------------------------------
// Writes

/// How a failed write is retried: never for 404 (gone), soon for 409, later otherwise.
pub(crate) fn retry_later(q: &mut Queue, key: &Key, e: &ApiError) {
    tracing::debug!(namespace = %key.0, name = %key.1, code = e.code, error = %e.message, "write failed");
    match e.code {
        404 => {}
        409 => q.add_after(key.clone(), Duration::from_millis(100)),
        403 | 422 => q.add_after(key.clone(), Duration::from_secs(10)),
        _ => q.add_after(key.clone(), Duration::from_secs(1)),
    }
}

/// Deletes an object (only this incarnation: uid precondition); returns the write's revision.
pub(crate) async fn delete_obj<V: Json>(
    cluster: &Cluster,
    r: &ResourceInfo,
    obj: &V,
) -> Result<u64, ApiError> {
    let (ns, name) = ns_name(obj);
    let opts = DeleteOptions {
        precondition: Precondition {
            resource_version: None,
            uid: Some(uid_of(obj).to_string()).filter(|u| !u.is_empty()),
        },
        ..Default::default()
    };
    let ns = if ns.is_empty() { None } else { Some(ns) };
    let (_, v) = crate::rest::delete(&cluster.server, r, ns, name, &opts).await?;
    Ok(rv_of(&v.value))
}

/// Writes `status` when it differs from the object's (a merge patch of the status subresource;
/// fields no longer present are removed). Returns the object written, None when unchanged.
pub(crate) async fn write_status<V: Json + PartialEq<Value>>(
    cluster: &Cluster,
    r: &ResourceInfo,
    obj: &V,
    status: Value,
) -> Result<Option<Arc<StoredObject>>, ApiError> {
    let unchanged = match obj.field("status") {
        Some(old) => old == &status,
        None => status.as_object().is_some_and(Map::is_empty),
    };
    if unchanged {
        return Ok(None);
    }
    let mut patch = match status {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(o) = obj.field("status").and_then(Json::entries) {
        for (k, _) in o {
            if !patch.contains_key(k) {
                patch.insert(k.to_string(), Value::Null);
            }
        }
    }
    let (ns, name) = ns_name(obj);
    let out = cluster
        .merge_patch(r, ns, name, Some("status"), object! { "status" => patch })
        .await?;
    Ok(Some(out))
}

/// Adds `owner` as the controller of `obj` (ControllerRefManager adoption), pinned to the cached
/// resourceVersion so that a stale cache fails with 409.
pub(crate) async fn adopt<V: Json>(
    cluster: &Cluster,
    r: &ResourceInfo,
    obj: &V,
    owner: Value,
) -> Result<u64, ApiError> {
    let mut refs: Vec<Value> = obj
        .ptr("/metadata/ownerReferences")
        .and_then(Json::as_array)
        .map(|a| a.iter().map(Json::to_value).collect())
        .unwrap_or_default();
    refs.push(owner);
    let (ns, name) = ns_name(obj);
    let patch = object! {"metadata" => object! {
        "ownerReferences" => refs,
        "resourceVersion" => str_at(obj, "/metadata/resourceVersion"),
    }};
    let out = cluster.merge_patch(r, ns, name, None, patch).await?;
    Ok(out.revision)
}

/// Removes the ownerReference of `owner_uid` from `obj` (release of an object that no longer
/// matches the selector).
pub(crate) async fn release<V: Json>(
    cluster: &Cluster,
    r: &ResourceInfo,
    obj: &V,
    owner_uid: &str,
) -> Result<u64, ApiError> {
    let refs: Vec<Value> = obj
        .ptr("/metadata/ownerReferences")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter(|r| r.field("uid").and_then(Json::as_str) != Some(owner_uid))
                .map(Json::to_value)
                .collect()
        })
        .unwrap_or_default();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        Value::Array(refs)
    };
    let (ns, name) = ns_name(obj);
    let patch = object! {"metadata" => object! {
        "ownerReferences" => refs,
        "resourceVersion" => str_at(obj, "/metadata/resourceVersion"),
    }};
    let out = cluster.merge_patch(r, ns, name, None, patch).await?;
    Ok(out.revision)
}

/// Records an Event when enabled.
pub(crate) async fn record<V: Json>(
    cluster: &Cluster,
    enabled: bool,
    obj: &V,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    if enabled {
        cluster.event(obj, type_, reason, message, component).await;
    }
}

/// A selector of a workload object (`spec.selector`); None when missing or invalid.
pub(crate) fn selector_of<V: Json>(v: &V) -> Option<LabelSelector> {
    match v.ptr("/spec/selector") {
        Some(s) => LabelSelector::from_json(s).ok(),
        None => LabelSelector::from_json(&Value::Null).ok(),
    }
}

/// Whether only the status (or nothing a controller reads) changed between two versions.
pub(crate) fn spec_changed<V: Json>(old: &V, new: &V) -> bool {
    old.ptr("/metadata/generation") != new.ptr("/metadata/generation")
        || is_terminating(old) != is_terminating(new)
        || uid_of(old) != uid_of(new)
        || old.ptr("/metadata/labels") != new.ptr("/metadata/labels")
        || old.ptr("/metadata/annotations") != new.ptr("/metadata/annotations")
}

// ==============================================================================================
// ReplicaSet
// ==============================================================================================

/// Settings of the ReplicaSet controller.
#[derive(Clone, Debug)]
pub struct ReplicaSetConfig {
    /// Most pods created or deleted in one sync (kube-controller-manager's `burstReplicas`).
    pub burst_replicas: usize,
    /// Whether to record Events (`SuccessfulCreate`, `SuccessfulDelete`).
    pub events: bool,
}

impl Default for ReplicaSetConfig {
    fn default() -> Self {
        ReplicaSetConfig {
            burst_replicas: 500,
            events: true,
        }
    }
}

const RS_FEED: usize = 0;
const RS_PODS: usize = 1;
const RS_COMPONENT: &str = "replicaset-controller";

/// Starts the ReplicaSet controller: keeps `spec.replicas` active pods per ReplicaSet, adopts
/// matching orphans, releases pods that stopped matching, and reports status.
pub fn spawn_replicaset(cluster: Cluster, cfg: ReplicaSetConfig) -> JoinHandle<()> {
    let (tx, rx) = unbounded_channel();
    spawn_feed(&cluster, &cluster.res.replicasets, RS_FEED, tx.clone());
    spawn_feed(&cluster, &cluster.res.pods, RS_PODS, tx);
    let ctl = RsController {
        cluster,
        cfg,
        sets: Cache::new(None, false),
        selectors: BTreeMap::new(),
        adopt: BTreeSet::new(),
        pods: Cache::new(Some("ReplicaSet"), true),
    };
    tokio::spawn(run(ctl, rx, 2))
}

struct RsController {
    cluster: Cluster,
    cfg: ReplicaSetConfig,
    sets: Cache,
    selectors: BTreeMap<Key, Arc<LabelSelector>>,
    /// Sets that may have orphans to adopt (new sets, and sets matching a new orphan).
    adopt: BTreeSet<Key>,
    pods: Cache,
}

/// Enqueues the owners of pods that changed, and the sets of a namespace that could adopt an
/// orphan. Shared by the ReplicaSet and StatefulSet controllers.
fn enqueue_pod_owners(
    diffs: Vec<Diff>,
    kind: &str,
    selectors: &BTreeMap<Key, Arc<LabelSelector>>,
    adopt: &mut BTreeSet<Key>,
    q: &mut Queue,
) {
    for d in diffs {
        for v in [&d.old, &d.new].into_iter().flatten() {
            if let Some((k, name, _)) = controller_parts(&v.value)
                && k == kind
            {
                q.add((d.key.0.clone(), name.to_string()));
            }
        }
        if let Some(n) = &d.new
            && controller_of(&n.value).is_none()
            && is_active(&n.value)
        {
            let ns = d.key.0.clone();
            let labels = labels_of(&n.value);
            for (k, sel) in selectors
                .range((ns.clone(), String::new())..)
                .take_while(|((n, _), _)| *n == ns)
            {
                if !sel.is_empty() && sel.matches(labels) {
                    adopt.insert(k.clone());
                    q.add(k.clone());
                }
            }
        }
    }
}

impl Reconciler for RsController {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue) {
        match feed {
            RS_FEED => {
                for d in self.sets.apply(msg) {
                    match &d.new {
                        Some(n) => {
                            // The selector is in the spec: parsed again only when it changed.
                            if d.old
                                .as_ref()
                                .is_none_or(|o| spec_changed(&o.value, &n.value))
                            {
                                if let Some(sel) = selector_of(&n.value) {
                                    self.selectors.insert(d.key.clone(), Arc::new(sel));
                                }
                                self.adopt.insert(d.key.clone());
                                q.add(d.key);
                            }
                        }
                        None => {
                            self.selectors.remove(&d.key);
                            self.adopt.remove(&d.key);
                            q.forget(&d.key);
                        }
                    }
                }
            }
            _ => {
                let mut diffs = self.pods.apply(msg);
                // A pod update that changes nothing a ReplicaSet counts (most are kubelet status
                // writes: container states, IPs) would only make its sync find the same status.
                diffs.retain(|d| match (&d.old, &d.new) {
                    (Some(o), Some(n)) => !same_for_replica_set(&o.value, &n.value),
                    _ => true,
                });
                enqueue_pod_owners(diffs, "ReplicaSet", &self.selectors, &mut self.adopt, q);
            }
        }
    }

    async fn sync(&mut self, key: Key, q: &mut Queue) {
        let Some(rs) = self.sets.get(&key).cloned() else {
            return;
        };
        let v = &rs.value;
        // Parsed by `handle` when the set's spec last changed.
        let Some(selector) = self.selectors.get(&key).cloned() else {
            return;
        };
        let cluster = self.cluster.clone();
        let pods_res = cluster.res.pods.clone();
        let uid = uid_of(v).to_string();
        let deleting = is_terminating(v);
        let replicas = i64_at(v, "/spec/replicas")
            .unwrap_or(1)
            .clamp(0, i64::from(i32::MAX));
        let min_ready = i64_at(v, "/spec/minReadySeconds").unwrap_or(0).max(0);
        let mut pods: Vec<Arc<StoredObject>> = self
            .pods
            .owned(&uid)
            .into_iter()
            .filter(|p| is_active(&p.value))
            .collect();

        // Claim: release pods that stopped matching, adopt matching orphans.
        if !deleting && !selector.is_empty() {
            let mut claimed = false;
            let (keep, stray): (Vec<_>, Vec<_>) = pods
                .into_iter()
                .partition(|p| selector.matches(labels_of(&p.value)));
            pods = keep;
            for p in stray {
                match release(&cluster, &pods_res, &p.value, &uid).await {
                    Ok(rev) => {
                        q.expect(&key, RS_PODS, rev);
                        claimed = true;
                    }
                    Err(e) => retry_later(q, &key, &e),
                }
            }
            let orphans = if self.adopt.remove(&key) {
                self.pods.orphans_in(&key.0)
            } else {
                Vec::new()
            };
            let owner = if orphans.is_empty() {
                Value::Null
            } else {
                owner_ref(v, "apps/v1", "ReplicaSet")
            };
            for p in orphans {
                if !is_active(&p.value) || !selector.matches(labels_of(&p.value)) {
                    continue;
                }
                match adopt(&cluster, &pods_res, &p.value, owner.clone()).await {
                    Ok(rev) => {
                        q.expect(&key, RS_PODS, rev);
                        claimed = true;
                    }
                    Err(e) => {
                        self.adopt.insert(key.clone());
                        retry_later(q, &key, &e);
                    }
                }
            }
            if claimed {
                return; // count again once the informer shows the new owners
            }
        }

        // Manage replicas.
        let mut deleted: BTreeSet<Key> = BTreeSet::new();
        let diff = pods.len() as i64 - replicas;
        if !deleting && diff < 0 {
            let want = (-diff).min(self.cfg.burst_replicas as i64);
            let template = v.ptr("/spec/template").cloned().unwrap_or_default();
            let owner = owner_ref(v, "apps/v1", "ReplicaSet");
            let prefix = format!("{}-", key.1);
            for _ in 0..want {
                let pod = pod_from_template(
                    &template,
                    &key.0,
                    PodName::Generate(&prefix),
                    owner.clone(),
                    &[],
                );
                match cluster.create(&pods_res, pod).await {
                    Ok(created) => {
                        q.expect(&key, RS_PODS, created.revision);
                        let msg =
                            format!("Created pod: {}", str_at(&created.value, "/metadata/name"));
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Normal",
                            "SuccessfulCreate",
                            &msg,
                            RS_COMPONENT,
                        )
                        .await;
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {}", e.message);
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Warning",
                            "FailedCreate",
                            &msg,
                            RS_COMPONENT,
                        )
                        .await;
                        retry_later(q, &key, &e);
                        break;
                    }
                }
            }
        } else if !deleting && diff > 0 {
            let n = diff.min(self.cfg.burst_replicas as i64) as usize;
            let order = deletion_order(&pods);
            for p in order.into_iter().take(n) {
                match delete_obj(&cluster, &pods_res, &p.value).await {
                    Ok(rev) => {
                        q.expect(&key, RS_PODS, rev);
                        deleted.insert(key_of(&p.value));
                        let msg = format!("Deleted pod: {}", str_at(&p.value, "/metadata/name"));
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Normal",
                            "SuccessfulDelete",
                            &msg,
                            RS_COMPONENT,
                        )
                        .await;
                    }
                    Err(e) if e.code == 404 || e.code == 409 => {
                        deleted.insert(key_of(&p.value));
                    }
                    Err(e) => {
                        retry_later(q, &key, &e);
                        break;
                    }
                }
            }
        }

        // Status, counting what is left after our deletions.
        let now = cluster.server.clock.now();
        let template_labels = v
            .ptr("/spec/template/metadata/labels")
            .and_then(Tree::as_object);
        let (mut count, mut labeled, mut ready, mut available) = (0i64, 0i64, 0i64, 0i64);
        let mut next: Option<DateTime<Utc>> = None;
        for p in pods
            .iter()
            .filter(|p| deleted.is_empty() || !deleted.contains(&key_of(&p.value)))
        {
            count += 1;
            let pl = labels_of(&p.value);
            if template_labels.is_none_or(|t| {
                t.iter()
                    .all(|(k, val)| pl.and_then(|m| m.field(k)) == Some(val))
            }) {
                labeled += 1;
            }
            if is_ready(&p.value) {
                ready += 1;
            }
            match availability(&p.value, min_ready, now) {
                Avail::Yes => available += 1,
                Avail::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Avail::No => {}
            }
        }
        let mut status = Map::new();
        status.insert("replicas".into(), json!(count));
        for (k, n) in [
            ("fullyLabeledReplicas", labeled),
            ("readyReplicas", ready),
            ("availableReplicas", available),
        ] {
            if n != 0 {
                status.insert(k.into(), json!(n));
            }
        }
        if let Some(g) = i64_at(v, "/metadata/generation") {
            status.insert("observedGeneration".into(), json!(g));
        }
        if let Some(c) = v.ptr("/status/conditions") {
            status.insert("conditions".into(), c.to_value());
        }
        match write_status(&cluster, &cluster.res.replicasets, v, Value::Object(status)).await {
            Ok(Some(w)) => q.expect(&key, RS_FEED, w.revision),
            Ok(None) => {}
            Err(e) => retry_later(q, &key, &e),
        }
        if let Some(t) = next {
            q.add_after(key, avail_delay(&cluster, t));
        }
    }
}

/// Pods in the order the ReplicaSet controller deletes them (`ActivePodsWithRanks`): unscheduled,
/// then pending < unknown < running, not ready, lower deletion cost, more pods of the set on the
/// same node, ready for less time, more restarts, newer.
fn deletion_order(pods: &[Arc<StoredObject>]) -> Vec<Arc<StoredObject>> {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods {
        let n = str_at(&p.value, "/spec/nodeName");
        if !n.is_empty() {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Tree| {
        let n = str_at(p, "/spec/nodeName");
        if n.is_empty() {
            0
        } else {
            per_node.get(n).copied().unwrap_or(0)
        }
    };
    let phase_ord = |p: &Tree| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let cost = |p: &Tree| {
        annotation(p, "controller.kubernetes.io/pod-deletion-cost")
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let restarts = |p: &Tree| {
        p.ptr("/status/containerStatuses")
            .and_then(Tree::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.field("restartCount").and_then(Tree::as_i64))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let mut out: Vec<Arc<StoredObject>> = pods.to_vec();
    out.sort_by(|a, b| {
        let (a, b) = (&a.value, &b.value);
        let (ua, ub) = (
            str_at(a, "/spec/nodeName").is_empty(),
            str_at(b, "/spec/nodeName").is_empty(),
        );
        ub.cmp(&ua)
            .then(phase_ord(a).cmp(&phase_ord(b)))
            .then(is_ready(a).cmp(&is_ready(b)))
            .then(cost(a).cmp(&cost(b)))
            .then(rank(b).cmp(&rank(a)))
            .then_with(|| {
                if is_ready(a) && is_ready(b) {
                    ready_since(b).cmp(&ready_since(a))
                } else {
                    Ordering::Equal
                }
            })
            .then(restarts(b).cmp(&restarts(a)))
            .then(created_at(b).cmp(&created_at(a)))
            .then(str_at(b, "/metadata/name").cmp(str_at(a, "/metadata/name")))
    });
    out
}

/// The child of `v` at `key`, making `v` an object first if it is not one.
pub(crate) fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m.entry(key.to_string()).or_insert(Value::Null),
        other => other,
    }
}

// ==============================================================================================
// StatefulSet
// ==============================================================================================

/// Settings of the StatefulSet controller.
#[derive(Clone, Debug)]
pub struct StatefulSetConfig {
    /// Whether to record Events (`SuccessfulCreate`, `SuccessfulDelete`).
    pub events: bool,
}

impl Default for StatefulSetConfig {
    fn default() -> Self {
        StatefulSetConfig { events: true }
    }
}

const STS_FEED: usize = 0;
const STS_PODS: usize = 1;
const STS_COMPONENT: &str = "statefulset-controller";

/// Starts the StatefulSet controller: pods `<name>-<ordinal>` created in order (OrderedReady) or
/// all at once (Parallel), scaled down from the highest ordinal, replaced under the same name once
/// the old pod is gone, rolled to a new template from the highest ordinal down to the partition.
pub fn spawn_statefulset(cluster: Cluster, cfg: StatefulSetConfig) -> JoinHandle<()> {
    let (tx, rx) = unbounded_channel();
    spawn_feed(&cluster, &cluster.res.statefulsets, STS_FEED, tx.clone());
    // Its own pods, and orphans it may adopt.
    let pods = Cache::new(Some("StatefulSet"), true);
    spawn_feed_of(
        &cluster,
        &cluster.res.pods,
        STS_PODS,
        tx,
        Some(pods.keeps()),
    );
    let ctl = StsController {
        cluster,
        cfg,
        sets: Cache::new(None, false),
        selectors: BTreeMap::new(),
        adopt: BTreeSet::new(),
        pods,
        revisions: BTreeMap::new(),
    };
    tokio::spawn(run(ctl, rx, 2))
}

struct StsController {
    cluster: Cluster,
    cfg: StatefulSetConfig,
    sets: Cache,
    selectors: BTreeMap<Key, Arc<LabelSelector>>,
    /// Sets that may have orphans to adopt (new sets, and sets matching a new orphan).
    adopt: BTreeSet<Key>,
    pods: Cache,
    /// Templates by (namespace, revision name): the controller's memory of ControllerRevisions,
    /// used to create pods below the partition at the current revision.
    revisions: BTreeMap<Key, Value>,
}

/// The ordinal of a pod of the set `set` (`<set>-<n>`), None for a pod that is not a member.
pub(crate) fn ordinal_of(set: &str, pod: &str) -> Option<i64> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn is_healthy<V: Json>(p: &V) -> bool {
    is_running_and_ready(p) && !is_terminating(p)
}

/// Largest number of replicas a StatefulSet is managed with (guards against absurd specs).
const MAX_STS_REPLICAS: i64 = 1_000_000;

impl Reconciler for StsController {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue) {
        match feed {
            STS_FEED => {
                for d in self.sets.apply(msg) {
                    match &d.new {
                        Some(n) => {
                            // The selector is in the spec: parsed again only when it changed.
                            if d.old
                                .as_ref()
                                .is_none_or(|o| spec_changed(&o.value, &n.value))
                            {
                                if let Some(sel) = selector_of(&n.value) {
                                    self.selectors.insert(d.key.clone(), Arc::new(sel));
                                }
                                self.adopt.insert(d.key.clone());
                                q.add(d.key);
                            }
                        }
                        None => {
                            self.selectors.remove(&d.key);
                            self.adopt.remove(&d.key);
                            let prefix = format!("{}-", d.key.1);
                            let ns = d.key.0.clone();
                            self.revisions
                                .retain(|(n, r), _| *n != ns || !r.starts_with(&prefix));
                            q.forget(&d.key);
                        }
                    }
                }
            }
            _ => {
                let diffs = self.pods.apply(msg);
                enqueue_pod_owners(diffs, "StatefulSet", &self.selectors, &mut self.adopt, q);
            }
        }
    }

    async fn sync(&mut self, key: Key, q: &mut Queue) {
        let Some(set) = self.sets.get(&key).cloned() else {
            return;
        };
        let owned = set.value.to_value();
        let v = &owned;
        let Some(selector) = selector_of(v) else {
            return;
        };
        let cluster = self.cluster.clone();
        let pods_res = cluster.res.pods.clone();
        let uid = uid_of(v).to_string();
        let name = key.1.clone();
        let deleting = is_terminating(v);
        let replicas = i64_at(v, "/spec/replicas")
            .unwrap_or(1)
            .clamp(0, MAX_STS_REPLICAS);
        let start = i64_at(v, "/spec/ordinals/start")
            .unwrap_or(0)
            .clamp(0, i64::from(i32::MAX));
        let monotonic = str_at(v, "/spec/podManagementPolicy") != "Parallel";
        let strategy = match str_at(v, "/spec/updateStrategy/type") {
            "" => "RollingUpdate",
            s => s,
        };
        let rolling = v.ptr("/spec/updateStrategy/rollingUpdate");
        let partition = rolling
            .and_then(|r| r.field("partition"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0);
        let min_ready = i64_at(v, "/spec/minReadySeconds").unwrap_or(0).max(0);
        let template = v.ptr("/spec/template").cloned().unwrap_or_default();
        let collision = i64_at(v, "/status/collisionCount").unwrap_or(0);
        let update_rev = format!("{name}-{}", template_hash(&template, Some(collision)));
        self.revisions
            .insert((key.0.clone(), update_rev.clone()), template.clone());
        let mut current_rev = match str_at(v, "/status/currentRevision") {
            "" => update_rev.clone(),
            s => s.to_string(),
        };
        let status_current = i64_at(v, "/status/currentReplicas").unwrap_or(0);

        // Claim: members (name `<set>-<n>`) that match the selector.
        let pods = self.pods.owned(&uid);
        if !deleting && !selector.is_empty() {
            let mut claimed = false;
            for p in &pods {
                let member = ordinal_of(&name, str_at(&p.value, "/metadata/name")).is_some();
                if member && selector.matches(labels_of(&p.value)) {
                    continue;
                }
                match release(&cluster, &pods_res, &p.value, &uid).await {
                    Ok(rev) => {
                        q.expect(&key, STS_PODS, rev);
                        claimed = true;
                    }
                    Err(e) => retry_later(q, &key, &e),
                }
            }
            let owner = owner_ref(v, "apps/v1", "StatefulSet");
            let orphans = if self.adopt.remove(&key) {
                self.pods.orphans_in(&key.0)
            } else {
                Vec::new()
            };
            for p in orphans {
                let member = ordinal_of(&name, str_at(&p.value, "/metadata/name")).is_some();
                if !member || is_terminating(&p.value) || !selector.matches(labels_of(&p.value)) {
                    continue;
                }
                match adopt(&cluster, &pods_res, &p.value, owner.clone()).await {
                    Ok(rev) => {
                        q.expect(&key, STS_PODS, rev);
                        claimed = true;
                    }
                    Err(e) => {
                        self.adopt.insert(key.clone());
                        retry_later(q, &key, &e);
                    }
                }
            }
            if claimed {
                return;
            }
        }

        let mut slots: Vec<Option<Arc<StoredObject>>> = vec![None; replicas as usize];
        let mut condemned: Vec<(i64, Arc<StoredObject>)> = Vec::new();
        for p in pods {
            let Some(ord) = ordinal_of(&name, str_at(&p.value, "/metadata/name")) else {
                continue;
            };
            if ord >= start && ord < start + replicas {
                slots[(ord - start) as usize] = Some(p);
            } else {
                condemned.push((ord, p));
            }
        }
        condemned.sort_by_key(|c| std::cmp::Reverse(c.0));

        // Status of what exists now (like computeReplicaStatus).
        let now = cluster.server.clock.now();
        let (mut count, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
        let mut next: Option<DateTime<Utc>> = None;
        for p in slots
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
        {
            let pv = &p.value;
            count += 1;
            if is_running_and_ready(pv) {
                ready += 1;
                match availability(pv, min_ready, now) {
                    Avail::Yes => available += 1,
                    Avail::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                    Avail::No => {}
                }
            }
            if !is_terminating(pv) {
                let rev = label(pv, "controller-revision-hash").unwrap_or("");
                if rev == current_rev {
                    current += 1;
                }
                if rev == update_rev {
                    updated += 1;
                }
            }
        }

        if !deleting {
            let mut blocked = false;
            let cur_template = self
                .revisions
                .get(&(key.0.clone(), current_rev.clone()))
                .cloned();
            // Living replicas, in ordinal order.
            for (i, slot) in slots.iter().enumerate() {
                let ord = start + i as i64;
                let Some(p) = slot else {
                    let below = if strategy == "RollingUpdate" {
                        match rolling {
                            Some(_) => ord < start + partition,
                            None => ord < start + status_current,
                        }
                    } else {
                        false
                    };
                    let (rev, tpl) = match (&cur_template, below) {
                        (Some(t), true) => (current_rev.clone(), t),
                        _ => (update_rev.clone(), &template),
                    };
                    let pod = sts_pod(v, tpl, ord, &rev);
                    let pname = format!("{name}-{ord}");
                    match cluster.create(&pods_res, pod).await {
                        Ok(created) => {
                            q.expect(&key, STS_PODS, created.revision);
                            let msg =
                                format!("create Pod {pname} in StatefulSet {name} successful");
                            record(
                                &cluster,
                                self.cfg.events,
                                v,
                                "Normal",
                                "SuccessfulCreate",
                                &msg,
                                STS_COMPONENT,
                            )
                            .await;
                        }
                        Err(e) if e.reason == "AlreadyExists" => {
                            // The old incarnation is still there; its removal wakes us up.
                            q.add_after(key.clone(), Duration::from_secs(5));
                        }
                        Err(e) => {
                            let msg = format!(
                                "create Pod {pname} in StatefulSet {name} failed error: {}",
                                e.message
                            );
                            record(
                                &cluster,
                                self.cfg.events,
                                v,
                                "Warning",
                                "FailedCreate",
                                &msg,
                                STS_COMPONENT,
                            )
                            .await;
                            retry_later(q, &key, &e);
                            blocked = true;
                            break;
                        }
                    }
                    if monotonic {
                        blocked = true;
                        break;
                    }
                    continue;
                };
                let pv = &p.value;
                if is_terminal(pv) {
                    // A finished pod is deleted and created again once it is gone.
                    if !is_terminating(pv) {
                        self.delete_pod(&key, v, pv, q).await;
                    }
                    if monotonic {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                if is_terminating(pv) || !is_running_and_ready(pv) {
                    if monotonic {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                if availability(pv, min_ready, now) != Avail::Yes && monotonic {
                    blocked = true;
                    break;
                }
            }
            // Condemned pods (scale down), highest ordinal first.
            if !blocked {
                let first_unhealthy = condemned
                    .iter()
                    .find(|(_, p)| !is_healthy(&p.value))
                    .map(|(_, p)| key_of(&p.value));
                for (_, c) in &condemned {
                    let cv = &c.value;
                    if is_terminating(cv) {
                        if monotonic {
                            blocked = true;
                            break;
                        }
                        continue;
                    }
                    let first = first_unhealthy.as_ref() == Some(&key_of(cv));
                    if monotonic
                        && !first
                        && (!is_running_and_ready(cv)
                            || availability(cv, min_ready, now) != Avail::Yes)
                    {
                        blocked = true;
                        break;
                    }
                    self.delete_pod(&key, v, cv, q).await;
                    if monotonic {
                        blocked = true;
                        break;
                    }
                }
            }
            // Rolling update: the highest ordinal not at the update revision, one at a time.
            if !blocked && strategy == "RollingUpdate" {
                let update_min = partition.min(replicas) as usize;
                for i in (update_min..replicas as usize).rev() {
                    let Some(p) = &slots[i] else { break };
                    let pv = &p.value;
                    if label(pv, "controller-revision-hash") != Some(update_rev.as_str())
                        && !is_terminating(pv)
                    {
                        self.delete_pod(&key, v, pv, q).await;
                        break;
                    }
                    if !is_healthy(pv) {
                        break;
                    }
                }
            }
        }

        // completeRollingUpdate
        let mut current_count = current;
        if strategy == "RollingUpdate" && updated == count && ready == count {
            current_count = updated;
            current_rev = update_rev.clone();
        }
        let mut status = Map::new();
        if let Some(g) = i64_at(v, "/metadata/generation") {
            status.insert("observedGeneration".into(), json!(g));
        }
        status.insert("replicas".into(), json!(count));
        for (k, n) in [
            ("readyReplicas", ready),
            ("currentReplicas", current_count),
            ("updatedReplicas", updated),
        ] {
            if n != 0 {
                status.insert(k.into(), json!(n));
            }
        }
        status.insert("currentRevision".into(), json!(current_rev));
        status.insert("updateRevision".into(), json!(update_rev));
        status.insert("collisionCount".into(), json!(collision));
        status.insert("availableReplicas".into(), json!(available));
        if let Some(c) = v.ptr("/status/conditions") {
            status.insert("conditions".into(), c.clone());
        }
        match write_status(
            &cluster,
            &cluster.res.statefulsets,
            v,
            Value::Object(status),
        )
        .await
        {
            Ok(Some(w)) => q.expect(&key, STS_FEED, w.revision),
            Ok(None) => {}
            Err(e) => retry_later(q, &key, &e),
        }
        if let Some(t) = next {
            q.add_after(key, avail_delay(&cluster, t));
        }
    }
}

impl StsController {
    async fn delete_pod(&mut self, key: &Key, set: &Value, pod: &Tree, q: &mut Queue) {
        let pname = str_at(pod, "/metadata/name").to_string();
        match delete_obj(&self.cluster, &self.cluster.res.pods, pod).await {
            Ok(rev) => {
                q.expect(key, STS_PODS, rev);
                let msg = format!("delete Pod {pname} in StatefulSet {} successful", key.1);
                record(
                    &self.cluster,
                    self.cfg.events,
                    set,
                    "Normal",
                    "SuccessfulDelete",
                    &msg,
                    STS_COMPONENT,
                )
                .await;
            }
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => retry_later(q, key, &e),
        }
    }
}

/// `newStatefulSetPod`: the template, named `<set>-<ordinal>`, with the identity labels, hostname
/// and subdomain, and the volumes of its claims.
fn sts_pod(set: &Value, template: &Value, ord: i64, revision: &str) -> Value {
    let (ns, name) = ns_name(set);
    let pname = format!("{name}-{ord}");
    let mut pod = pod_from_template(
        template,
        ns,
        PodName::Fixed(&pname),
        owner_ref(set, "apps/v1", "StatefulSet"),
        &[
            ("statefulset.kubernetes.io/pod-name", pname.clone()),
            ("apps.kubernetes.io/pod-index", ord.to_string()),
            ("controller-revision-hash", revision.to_string()),
        ],
    );
    let spec = entry(&mut pod, "spec");
    *entry(spec, "hostname") = json!(pname);
    let service = str_at(set, "/spec/serviceName");
    if !service.is_empty() {
        *entry(spec, "subdomain") = json!(service);
    }
    let claims = set
        .ptr("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !claims.is_empty() {
        let vols = entry(spec, "volumes");
        if !vols.is_array() {
            *vols = json!([]);
        }
        if let Value::Array(vols) = vols {
            for c in &claims {
                let cname = str_at(c, "/metadata/name");
                if cname.is_empty() {
                    continue;
                }
                vols.retain(|v| v.field("name").and_then(Value::as_str) != Some(cname));
                vols.push(json!({"name": cname,
                    "persistentVolumeClaim": {"claimName": format!("{cname}-{pname}")}}));
            }
        }
    }
    pod
}

// ==============================================================================================
// DaemonSet
// ==============================================================================================

/// Settings of the DaemonSet controller.
#[derive(Clone, Debug)]
pub struct DaemonSetConfig {
    /// Most pods created in one sync (kube-controller-manager's `BurstReplicas` for DaemonSets).
    pub burst_replicas: usize,
    /// Whether to record Events (`SuccessfulCreate`, `SuccessfulDelete`).
    pub events: bool,
}

impl Default for DaemonSetConfig {
    fn default() -> Self {
        DaemonSetConfig {
            burst_replicas: 250,
            events: true,
        }
    }
}

const DS_FEED: usize = 0;
const DS_PODS: usize = 1;
const DS_NODES: usize = 2;
const DS_COMPONENT: &str = "daemonset-controller";

/// Starts the DaemonSet controller: one pod per eligible node (node selector, required node
/// affinity, taints not tolerated by the template plus the DaemonSet default tolerations), pinned
/// to its node by a required node affinity on `metadata.name` and left for the scheduler to bind;
/// pods on nodes that are gone or no longer eligible are deleted; RollingUpdate replaces old pods
/// up to `maxUnavailable` at a time. Work per event is proportional to the nodes it touches.
pub fn spawn_daemonset(cluster: Cluster, cfg: DaemonSetConfig) -> JoinHandle<()> {
    let (tx, rx) = unbounded_channel();
    spawn_feed(&cluster, &cluster.res.daemonsets, DS_FEED, tx.clone());
    let pods = Cache::new(Some("DaemonSet"), false);
    spawn_feed_of(
        &cluster,
        &cluster.res.pods,
        DS_PODS,
        tx.clone(),
        Some(pods.keeps()),
    );
    spawn_feed(&cluster, &cluster.res.nodes, DS_NODES, tx);
    let ctl = DsController {
        cluster,
        cfg,
        cache: Cache::new(None, false),
        sets: BTreeMap::new(),
        nodes: Cache::new(None, false),
        pods,
        placed: BTreeMap::new(),
    };
    tokio::spawn(run(ctl, rx, 3))
}

struct DsController {
    cluster: Cluster,
    cfg: DaemonSetConfig,
    cache: Cache,
    sets: BTreeMap<Key, DsState>,
    nodes: Cache,
    pods: Cache,
    /// DaemonSet uid → target node → pods.
    placed: BTreeMap<String, BTreeMap<String, BTreeSet<Key>>>,
}

/// What the controller knows of one DaemonSet: per-node contributions to its status and rolling
/// update, kept up to date incrementally.
struct DsState {
    obj: Arc<StoredObject>,
    full: bool,
    dirty: BTreeSet<String>,
    contrib: BTreeMap<String, Contrib>,
    totals: Totals,
    avail_at: BTreeMap<DateTime<Utc>, BTreeSet<String>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Contrib {
    desired: bool,
    current: bool,
    ready: bool,
    available: bool,
    updated: bool,
    misscheduled: bool,
    roll: Roll,
}

/// A node in a rolling update (`findUpdatedPodsOnNode`).
#[derive(Clone, Debug, Default, PartialEq)]
enum Roll {
    /// No pods, an available new pod, or several pods (the manage loop's business).
    #[default]
    Fine,
    /// Counted against `maxUnavailable`.
    Unavailable,
    /// An old pod that is not available: replaced regardless of the budget.
    Replace(Key),
    /// An old available pod: replaced within the budget.
    Candidate(Key),
}

#[derive(Clone, Debug, Default)]
struct Totals {
    desired: i64,
    current: i64,
    ready: i64,
    available: i64,
    updated: i64,
    misscheduled: i64,
    unavailable: i64,
    replace: BTreeSet<String>,
    candidates: BTreeSet<String>,
}

impl Totals {
    fn apply(&mut self, node: &str, c: &Contrib, sign: i64) {
        let b = |x: bool| if x { sign } else { 0 };
        self.desired += b(c.desired);
        self.current += b(c.current);
        self.ready += b(c.ready);
        self.available += b(c.available);
        self.updated += b(c.updated);
        self.misscheduled += b(c.misscheduled);
        match &c.roll {
            Roll::Fine => {}
            Roll::Unavailable => self.unavailable += sign,
            Roll::Replace(_) => {
                if sign > 0 {
                    self.replace.insert(node.to_string());
                } else {
                    self.replace.remove(node);
                }
            }
            Roll::Candidate(_) => {
                if sign > 0 {
                    self.candidates.insert(node.to_string());
                } else {
                    self.candidates.remove(node);
                }
            }
        }
    }
}

/// The node a DaemonSet pod is for: its `spec.nodeName`, else the `metadata.name` its required
/// node affinity names (`util.GetTargetNodeName`).
pub(crate) fn target_node<V: Json>(pod: &V) -> Option<&str> {
    let n = str_at(pod, "/spec/nodeName");
    if !n.is_empty() {
        return Some(n);
    }
    pod.ptr(
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    )
    .and_then(Json::as_array)?
    .iter()
    .filter_map(|t| t.field("matchFields").and_then(Json::as_array))
    .flatten()
    .find(|f| str_at(*f, "/key") == "metadata.name" && str_at(*f, "/operator") == "In")
    .and_then(|f| f.ptr("/values/0"))
    .and_then(Json::as_str)
}

/// A node selector requirement against a value (a label, or the node name for matchFields).
pub(crate) fn node_requirement<V: Json>(req: &V, value: Option<&str>) -> bool {
    let vals: Vec<&str> = req
        .field("values")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let num = |s: Option<&str>| s.and_then(|x| x.parse::<i64>().ok());
    match str_at(req, "/operator") {
        "In" => value.is_some_and(|v| vals.contains(&v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((num(value), num(vals.first().copied())), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((num(value), num(vals.first().copied())), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

/// Whether a node matches one node selector term (an empty term matches nothing).
pub(crate) fn node_matches_term<V: Json, N: Json>(term: &V, node: &N) -> bool {
    let none = Vec::new();
    let exprs = term
        .field("matchExpressions")
        .and_then(Json::as_array)
        .unwrap_or(&none);
    let fields = term
        .field("matchFields")
        .and_then(Json::as_array)
        .unwrap_or(&none);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = str_at(node, "/metadata/name");
    exprs
        .iter()
        .all(|e| node_requirement(e, label(node, str_at(e, "/key"))))
        && fields
            .iter()
            .all(|f| str_at(f, "/key") == "metadata.name" && node_requirement(f, Some(name)))
}

/// Whether a toleration list tolerates a taint (`Toleration.ToleratesTaint`).
pub(crate) fn tolerates<V: Json, T: Json>(tols: &[V], taint: &T) -> bool {
    tols.iter().any(|t| {
        let effect = str_at(t, "/effect");
        if !effect.is_empty() && effect != str_at(taint, "/effect") {
            return false;
        }
        let key = str_at(t, "/key");
        if !key.is_empty() && key != str_at(taint, "/key") {
            return false;
        }
        match str_at(t, "/operator") {
            "Exists" => true,
            "" | "Equal" => str_at(t, "/value") == str_at(taint, "/value"),
            _ => false,
        }
    })
}

/// The template's tolerations plus the ones every DaemonSet pod gets
/// (`util.AddOrUpdateDaemonPodTolerations`).
pub(crate) fn daemon_tolerations(spec: &Value) -> Vec<Value> {
    let mut tols: Vec<Value> = spec
        .field("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut defaults = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.field("hostNetwork").and_then(Value::as_bool) == Some(true) {
        defaults.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in defaults {
        let new = json!({"key": key, "operator": "Exists", "effect": effect});
        match tols.iter().position(|t| {
            str_at(t, "/key") == key
                && str_at(t, "/operator") == "Exists"
                && str_at(t, "/effect") == effect
        }) {
            Some(i) => tols[i] = new,
            None => tols.push(new),
        }
    }
    tols
}

/// The scheduling-relevant parts of a DaemonSet's template.
struct DsSpec {
    node_name: String,
    node_selector: Vec<(String, String)>,
    terms: Option<Vec<Value>>,
    tolerations: Vec<Value>,
}

impl DsSpec {
    fn parse(ds: &Value) -> Self {
        let spec = ds.ptr("/spec/template/spec").cloned().unwrap_or_default();
        DsSpec {
            node_name: str_at(&spec, "/nodeName").to_string(),
            node_selector: spec
                .field("nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            terms: spec
                .ptr(
                    "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                )
                .and_then(Value::as_array)
                .cloned(),
            tolerations: daemon_tolerations(&spec),
        }
    }

    /// `NodeShouldRunDaemonPod`: (should run, should continue running).
    fn evaluate<V: Json>(&self, node: &V) -> (bool, bool) {
        let name = str_at(node, "/metadata/name");
        if !self.node_name.is_empty() && self.node_name != name {
            return (false, false);
        }
        let selector_ok = self
            .node_selector
            .iter()
            .all(|(k, v)| label(node, k) == Some(v.as_str()));
        let affinity_ok = self
            .terms
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| node_matches_term(t, node)));
        if !selector_ok || !affinity_ok {
            return (false, false);
        }
        let mut untolerated_schedule = false;
        let mut untolerated_execute = false;
        for t in node
            .ptr("/spec/taints")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let effect = str_at(t, "/effect");
            if !matches!(effect, "NoSchedule" | "NoExecute") || tolerates(&self.tolerations, t) {
                continue;
            }
            if effect == "NoExecute" {
                untolerated_execute = true;
            } else {
                untolerated_schedule = true;
            }
        }
        if untolerated_schedule || untolerated_execute {
            return (false, !untolerated_execute);
        }
        (true, true)
    }
}

/// Whether a node change can change where DaemonSet pods belong.
fn node_placement_changed<V: Json>(old: &V, new: &V) -> bool {
    old.ptr("/metadata/labels") != new.ptr("/metadata/labels")
        || old.ptr("/spec/taints") != new.ptr("/spec/taints")
}

impl DsController {
    fn place(&mut self, pod: &Tree, add: bool, q: &mut Queue) {
        let Some((kind, owner, uid)) = controller_parts(pod) else {
            return;
        };
        if kind != "DaemonSet" {
            return;
        }
        let Some(node) = target_node(pod) else {
            return;
        };
        let pkey = key_of(pod);
        let dkey = (pkey.0.clone(), owner.to_string());
        let by_node = self.placed.entry(uid.to_string()).or_default();
        if add {
            by_node.entry(node.to_string()).or_default().insert(pkey);
        } else {
            if let Some(set) = by_node.get_mut(node) {
                set.remove(&pkey);
                if set.is_empty() {
                    by_node.remove(node);
                }
            }
            if by_node.is_empty() {
                self.placed.remove(uid);
            }
        }
        if let Some(st) = self.sets.get_mut(&dkey)
            && uid_of(&st.obj.value) == uid
        {
            st.dirty.insert(node.to_string());
            q.add(dkey);
        }
    }
}

impl Reconciler for DsController {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue) {
        match feed {
            DS_FEED => {
                for d in self.cache.apply(msg) {
                    match d.new {
                        Some(n) => {
                            let changed = d
                                .old
                                .as_ref()
                                .is_none_or(|o| spec_changed(&o.value, &n.value));
                            let st = self.sets.entry(d.key.clone()).or_insert_with(|| DsState {
                                obj: n.clone(),
                                full: true,
                                dirty: BTreeSet::new(),
                                contrib: BTreeMap::new(),
                                totals: Totals::default(),
                                avail_at: BTreeMap::new(),
                            });
                            st.obj = n;
                            if changed {
                                st.full = true;
                                q.add(d.key);
                            }
                        }
                        None => {
                            self.sets.remove(&d.key);
                            q.forget(&d.key);
                        }
                    }
                }
            }
            DS_PODS => {
                for d in self.pods.apply(msg) {
                    if let Some(o) = &d.old {
                        self.place(&o.value, false, q);
                    }
                    if let Some(n) = &d.new {
                        self.place(&n.value, true, q);
                    }
                }
            }
            _ => {
                for d in self.nodes.apply(msg) {
                    let relevant = match (&d.old, &d.new) {
                        (Some(o), Some(n)) => node_placement_changed(&o.value, &n.value),
                        _ => true,
                    };
                    if !relevant {
                        continue;
                    }
                    for (k, st) in self.sets.iter_mut() {
                        st.dirty.insert(d.key.1.clone());
                        q.add(k.clone());
                    }
                }
            }
        }
    }

    async fn sync(&mut self, key: Key, q: &mut Queue) {
        let cluster = self.cluster.clone();
        let pods_res = cluster.res.pods.clone();
        let Some(st) = self.sets.get_mut(&key) else {
            return;
        };
        let obj = st.obj.clone();
        let owned = obj.value.to_value();
        let v = &owned;
        let uid = uid_of(v).to_string();
        let deleting = is_terminating(v);
        let spec = DsSpec::parse(v);
        let template = v.ptr("/spec/template").cloned().unwrap_or_default();
        let collision = i64_at(v, "/status/collisionCount");
        let hash = template_hash(&template, collision);
        let min_ready = i64_at(v, "/spec/minReadySeconds").unwrap_or(0).max(0);
        let now = cluster.server.clock.now();
        if st.full {
            st.full = false;
            st.contrib.clear();
            st.totals = Totals::default();
            st.avail_at.clear();
            st.dirty.extend(self.nodes.keys().map(|k| k.1.clone()));
            if let Some(m) = self.placed.get(&uid) {
                st.dirty.extend(m.keys().cloned());
            }
        }
        let due: Vec<DateTime<Utc>> = st.avail_at.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            if let Some(nodes) = st.avail_at.remove(&t) {
                st.dirty.extend(nodes);
            }
        }
        let dirty = std::mem::take(&mut st.dirty);
        let mut creates: Vec<String> = Vec::new();
        let mut deletes: Vec<Arc<StoredObject>> = Vec::new();
        for node in &dirty {
            let here: Vec<Arc<StoredObject>> = self
                .placed
                .get(&uid)
                .and_then(|m| m.get(node))
                .map(|s| s.iter().filter_map(|k| self.pods.get(k).cloned()).collect())
                .unwrap_or_default();
            let mut daemon: Vec<Arc<StoredObject>> = here
                .into_iter()
                .filter(|p| !(is_terminal(&p.value) && is_terminating(&p.value)))
                .collect();
            daemon.sort_by(|a, b| {
                created_at(&a.value).cmp(&created_at(&b.value)).then(
                    str_at(&a.value, "/metadata/name").cmp(str_at(&b.value, "/metadata/name")),
                )
            });
            let node_obj = self.nodes.get(&(String::new(), node.clone())).cloned();
            let (should_run, should_continue) = node_obj
                .as_ref()
                .map_or((false, false), |n| spec.evaluate(&n.value));
            let live: Vec<&Arc<StoredObject>> = daemon
                .iter()
                .filter(|p| !is_terminating(&p.value))
                .collect();
            if !deleting {
                if node_obj.is_none() {
                    deletes.extend(live.iter().map(|p| (*p).clone()));
                } else if should_run && daemon.is_empty() {
                    creates.push(node.clone());
                } else if should_continue {
                    let mut running = Vec::new();
                    for p in &live {
                        match phase(&p.value) {
                            "Failed" | "Succeeded" => deletes.push((*p).clone()),
                            _ => running.push((*p).clone()),
                        }
                    }
                    if running.len() > 1 {
                        deletes.extend(running.into_iter().skip(1));
                    }
                } else {
                    deletes.extend(live.iter().map(|p| (*p).clone()));
                }
            }
            let mut c = Contrib::default();
            if node_obj.is_some() {
                if should_run {
                    c.desired = true;
                    if let Some(oldest) = daemon.first() {
                        c.current = true;
                        let ov = &oldest.value;
                        if is_ready(ov) {
                            c.ready = true;
                            match availability(ov, min_ready, now) {
                                Avail::Yes => c.available = true,
                                Avail::At(t) => {
                                    st.avail_at.entry(t).or_default().insert(node.clone());
                                }
                                Avail::No => {}
                            }
                        }
                        c.updated = label(ov, "controller-revision-hash") == Some(hash.as_str());
                    }
                } else if !daemon.is_empty() {
                    c.misscheduled = true;
                }
                if !daemon.is_empty() {
                    let (new, old): (Vec<&Arc<StoredObject>>, Vec<&Arc<StoredObject>>) =
                        live.iter().partition(|p| {
                            label(&p.value, "controller-revision-hash") == Some(hash.as_str())
                        });
                    let avail = |p: &Arc<StoredObject>| {
                        availability(&p.value, min_ready, now) == Avail::Yes
                    };
                    c.roll = if new.len() > 1 || old.len() > 1 {
                        Roll::Fine
                    } else {
                        match (new.first(), old.first()) {
                            (None, None) | (Some(_), Some(_)) => Roll::Unavailable,
                            (Some(n), None) if avail(n) => Roll::Fine,
                            (Some(_), None) => Roll::Unavailable,
                            (None, Some(o)) if avail(o) => Roll::Candidate(key_of(&o.value)),
                            (None, Some(o)) => Roll::Replace(key_of(&o.value)),
                        }
                    };
                }
            }
            if let Some(old) = st.contrib.remove(node) {
                st.totals.apply(node, &old, -1);
            }
            st.totals.apply(node, &c, 1);
            if c != Contrib::default() {
                st.contrib.insert(node.clone(), c);
            }
        }
        if deleting {
            return;
        }

        let mut wrote = false;
        let burst = self.cfg.burst_replicas.max(1);
        if creates.len() > burst {
            // The rest waits for the next round (after these creations are observed).
            st.dirty.extend(creates.split_off(burst));
        }
        for (i, node) in creates.iter().enumerate() {
            let pod = daemon_pod(v, &template, node, &hash);
            match cluster.create(&pods_res, pod).await {
                Ok(created) => {
                    wrote = true;
                    q.expect(&key, DS_PODS, created.revision);
                    let msg = format!("Created pod: {}", str_at(&created.value, "/metadata/name"));
                    record(
                        &cluster,
                        self.cfg.events,
                        v,
                        "Normal",
                        "SuccessfulCreate",
                        &msg,
                        DS_COMPONENT,
                    )
                    .await;
                }
                Err(e) => {
                    let msg = format!("Error creating: {}", e.message);
                    record(
                        &cluster,
                        self.cfg.events,
                        v,
                        "Warning",
                        "FailedCreate",
                        &msg,
                        DS_COMPONENT,
                    )
                    .await;
                    st.dirty.extend(creates[i..].iter().cloned());
                    retry_later(q, &key, &e);
                    break;
                }
            }
        }
        for p in &deletes {
            match delete_obj(&cluster, &pods_res, &p.value).await {
                Ok(rev) => {
                    wrote = true;
                    q.expect(&key, DS_PODS, rev);
                    let msg = format!("Deleted pod: {}", str_at(&p.value, "/metadata/name"));
                    record(
                        &cluster,
                        self.cfg.events,
                        v,
                        "Normal",
                        "SuccessfulDelete",
                        &msg,
                        DS_COMPONENT,
                    )
                    .await;
                }
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => retry_later(q, &key, &e),
            }
        }

        // Rolling update, once the manage step has nothing left to do.
        if !wrote && matches!(str_at(v, "/spec/updateStrategy/type"), "" | "RollingUpdate") {
            let ru = v.ptr("/spec/updateStrategy/rollingUpdate");
            let desired = st.totals.desired;
            let mut max_unavailable =
                scaled_value(ru.and_then(|r| r.field("maxUnavailable")), desired, true, 1);
            let max_surge = scaled_value(ru.and_then(|r| r.field("maxSurge")), desired, true, 0);
            if max_unavailable <= 0 && max_surge <= 0 {
                max_unavailable = 1;
            }
            // Surge is not modelled: a surge-only strategy replaces one pod at a time.
            let max_unavailable = max_unavailable.max(1);
            let remaining = (max_unavailable - st.totals.unavailable).max(0) as usize;
            let mut victims: Vec<Key> = Vec::new();
            for n in st.totals.replace.iter() {
                if let Some(Contrib {
                    roll: Roll::Replace(k),
                    ..
                }) = st.contrib.get(n)
                {
                    victims.push(k.clone());
                }
            }
            for n in st.totals.candidates.iter().take(remaining) {
                if let Some(Contrib {
                    roll: Roll::Candidate(k),
                    ..
                }) = st.contrib.get(n)
                {
                    victims.push(k.clone());
                }
            }
            for k in victims {
                let Some(p) = self.pods.get(&k).cloned() else {
                    continue;
                };
                match delete_obj(&cluster, &pods_res, &p.value).await {
                    Ok(rev) => {
                        q.expect(&key, DS_PODS, rev);
                        let msg = format!("Deleted pod: {}", k.1);
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Normal",
                            "SuccessfulDelete",
                            &msg,
                            DS_COMPONENT,
                        )
                        .await;
                    }
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => retry_later(q, &key, &e),
                }
            }
        }
        if !st.dirty.is_empty() && !q.is_waiting(&key) {
            q.add_after(key.clone(), Duration::from_millis(10));
        }

        let t = &st.totals;
        let mut status = Map::new();
        status.insert("currentNumberScheduled".into(), json!(t.current));
        status.insert("numberMisscheduled".into(), json!(t.misscheduled));
        status.insert("desiredNumberScheduled".into(), json!(t.desired));
        status.insert("numberReady".into(), json!(t.ready));
        if let Some(g) = i64_at(v, "/metadata/generation") {
            status.insert("observedGeneration".into(), json!(g));
        }
        for (k, n) in [
            ("updatedNumberScheduled", t.updated),
            ("numberAvailable", t.available),
            ("numberUnavailable", t.desired - t.available),
        ] {
            if n != 0 {
                status.insert(k.into(), json!(n));
            }
        }
        if let Some(c) = v.ptr("/status/collisionCount") {
            status.insert("collisionCount".into(), c.clone());
        }
        if let Some(c) = v.ptr("/status/conditions") {
            status.insert("conditions".into(), c.clone());
        }
        let next = st.avail_at.keys().next().copied();
        match write_status(&cluster, &cluster.res.daemonsets, v, Value::Object(status)).await {
            Ok(Some(w)) => q.expect(&key, DS_FEED, w.revision),
            Ok(None) => {}
            Err(e) => retry_later(q, &key, &e),
        }
        if let Some(t) = next {
            q.add_after(key, avail_delay(&cluster, t));
        }
    }
}

/// `NewPod` for a DaemonSet: the template with the revision hash label, the DaemonSet tolerations
/// and a required node affinity on the node's name.
fn daemon_pod(ds: &Value, template: &Value, node: &str, hash: &str) -> Value {
    let (ns, name) = ns_name(ds);
    let mut extra = vec![("controller-revision-hash", hash.to_string())];
    if let Some(g) = annotation(ds, "deprecated.daemonset.template.generation") {
        extra.push(("pod-template-generation", g.to_string()));
    }
    let prefix = format!("{name}-");
    let mut pod = pod_from_template(
        template,
        ns,
        PodName::Generate(&prefix),
        owner_ref(ds, "apps/v1", "DaemonSet"),
        &extra,
    );
    let spec = entry(&mut pod, "spec");
    let tols = daemon_tolerations(spec);
    *entry(spec, "tolerations") = Value::from(tols);
    let affinity = entry(spec, "affinity");
    let na = entry(affinity, "nodeAffinity");
    *entry(na, "requiredDuringSchedulingIgnoredDuringExecution") = json!({
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}
        ]}]
    });
    pod
}

// ==============================================================================================
// Job
// ==============================================================================================

/// Settings of the Job controller.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Most pods created in one sync.
    pub burst_replicas: usize,
    /// Whether to record Events (`SuccessfulCreate`, `Completed`, `BackoffLimitExceeded`).
    pub events: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            burst_replicas: 500,
            events: true,
        }
    }
}

const JOB_FEED: usize = 0;
const JOB_PODS: usize = 1;
const JOB_COMPONENT: &str = "job-controller";

/// Starts the Job controller (NonIndexed completion): up to `parallelism` active pods until
/// `completions` pods have succeeded, failures retried with exponential back-off up to
/// `backoffLimit`, `activeDeadlineSeconds`, `suspend`; conditions `SuccessCriteriaMet`/`Complete`
/// and `FailureTarget`/`Failed` (the terminal one once no pod is left running).
pub fn spawn_job(cluster: Cluster, cfg: JobConfig) -> JoinHandle<()> {
    let (tx, rx) = unbounded_channel();
    spawn_feed(&cluster, &cluster.res.jobs, JOB_FEED, tx.clone());
    let pods = Cache::new(Some("Job"), false);
    spawn_feed_of(
        &cluster,
        &cluster.res.pods,
        JOB_PODS,
        tx,
        Some(pods.keeps()),
    );
    let ctl = JobController {
        cluster,
        cfg,
        jobs: Cache::new(None, false),
        pods,
    };
    tokio::spawn(run(ctl, rx, 2))
}

struct JobController {
    cluster: Cluster,
    cfg: JobConfig,
    jobs: Cache,
    pods: Cache,
}

fn condition_true(conds: &[Value], type_: &str) -> bool {
    conds.iter().any(|c| {
        c.field("type").and_then(Value::as_str) == Some(type_)
            && c.field("status").and_then(Value::as_str) == Some("True")
    })
}

/// Sets a Job condition (keeps lastTransitionTime when the status does not change).
fn set_job_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    if let Some(c) = conds
        .iter_mut()
        .find(|c| c.field("type").and_then(Value::as_str) == Some(type_))
    {
        if c.field("status").and_then(Value::as_str) == Some(status) {
            return;
        }
        *c = json!({"type": type_, "status": status, "lastProbeTime": now,
            "lastTransitionTime": now, "reason": reason, "message": message});
        return;
    }
    conds.push(
        json!({"type": type_, "status": status, "lastProbeTime": now,
        "lastTransitionTime": now, "reason": reason, "message": message}),
    );
}

/// When a failed pod finished: its containers' finish time, else its Ready transition, else its
/// creation.
fn finished_at<V: Json>(p: &V) -> Option<DateTime<Utc>> {
    let from_containers = p
        .ptr("/status/containerStatuses")
        .and_then(Json::as_array)
        .and_then(|a| {
            a.iter()
                .filter_map(|c| c.ptr("/state/terminated/finishedAt"))
                .filter_map(Json::as_str)
                .filter_map(parse_time)
                .max()
        });
    from_containers
        .or_else(|| ready_since(p))
        .or_else(|| created_at(p))
}

impl Reconciler for JobController {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue) {
        match feed {
            JOB_FEED => {
                for d in self.jobs.apply(msg) {
                    match &d.new {
                        Some(n) => {
                            if d.old
                                .as_ref()
                                .is_none_or(|o| spec_changed(&o.value, &n.value))
                            {
                                q.add(d.key);
                            }
                        }
                        None => q.forget(&d.key),
                    }
                }
            }
            _ => {
                for d in self.pods.apply(msg) {
                    for v in [&d.old, &d.new].into_iter().flatten() {
                        if let Some(("Job", name, _)) = controller_parts(&v.value) {
                            q.add((d.key.0.clone(), name.to_string()));
                        }
                    }
                }
            }
        }
    }

    async fn sync(&mut self, key: Key, q: &mut Queue) {
        let Some(job) = self.jobs.get(&key).cloned() else {
            return;
        };
        let owned = job.value.to_value();
        let v = &owned;
        if is_terminating(v) {
            return;
        }
        let cluster = self.cluster.clone();
        let pods_res = cluster.res.pods.clone();
        let uid = uid_of(v).to_string();
        let now = cluster.server.clock.now();
        let now_s = crate::server::format_time(now);
        let mut conds: Vec<Value> = v
            .ptr("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let finished = condition_true(&conds, "Complete") || condition_true(&conds, "Failed");
        let pods = self.pods.owned(&uid);
        let active: Vec<&Arc<StoredObject>> = pods.iter().filter(|p| is_active(&p.value)).collect();
        let terminating = pods
            .iter()
            .filter(|p| is_terminating(&p.value) && !is_terminal(&p.value))
            .count() as i64;
        let count_phase = |ph: &str| pods.iter().filter(|p| phase(&p.value) == ph).count() as i64;
        let succeeded = count_phase("Succeeded").max(i64_at(v, "/status/succeeded").unwrap_or(0));
        let failed = count_phase("Failed").max(i64_at(v, "/status/failed").unwrap_or(0));
        let ready = active.iter().filter(|p| is_ready(&p.value)).count() as i64;
        let parallelism = i64_at(v, "/spec/parallelism")
            .unwrap_or(1)
            .clamp(0, i64::from(i32::MAX));
        let completions = i64_at(v, "/spec/completions").map(|c| c.clamp(0, i64::from(i32::MAX)));
        let backoff_limit = i64_at(v, "/spec/backoffLimit").unwrap_or(6).max(0);
        let suspend = v.ptr("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let start_time = v
            .ptr("/status/startTime")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| (!suspend).then(|| now_s.clone()));

        let mut to_delete: Vec<Arc<StoredObject>> = Vec::new();
        let mut to_create = 0i64;
        let mut completion_time = v
            .ptr("/status/completionTime")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut events: Vec<(&str, &str, String)> = Vec::new();
        if finished {
            to_delete.extend(active.iter().map(|p| (*p).clone()));
        } else {
            let deadline = i64_at(v, "/spec/activeDeadlineSeconds").filter(|d| *d > 0);
            let started = start_time.as_deref().and_then(parse_time);
            let past_deadline = match (deadline, started) {
                (Some(d), Some(s)) if !suspend => {
                    let end = s + chrono::Duration::seconds(d);
                    if end <= now {
                        true
                    } else {
                        q.add_after(key.clone(), until(&cluster, end) + Duration::from_secs(1));
                        false
                    }
                }
                _ => false,
            };
            let failure_target = conds
                .iter()
                .find(|c| {
                    c.field("type").and_then(Value::as_str) == Some("FailureTarget")
                        && c.field("status").and_then(Value::as_str) == Some("True")
                })
                .map(|c| {
                    (
                        str_at(c, "/reason").to_string(),
                        str_at(c, "/message").to_string(),
                    )
                });
            let failure = failure_target.or_else(|| {
                if failed > backoff_limit {
                    Some((
                        "BackoffLimitExceeded".into(),
                        "Job has reached the specified backoff limit".into(),
                    ))
                } else if past_deadline {
                    Some((
                        "DeadlineExceeded".into(),
                        "Job was active longer than specified deadline".into(),
                    ))
                } else {
                    None
                }
            });
            let success = condition_true(&conds, "SuccessCriteriaMet")
                || match completions {
                    Some(c) => succeeded >= c,
                    None => succeeded >= 1 && active.is_empty(),
                };
            if let Some((reason, message)) = failure {
                set_job_condition(
                    &mut conds,
                    "FailureTarget",
                    "True",
                    &reason,
                    &message,
                    &now_s,
                );
                to_delete.extend(active.iter().map(|p| (*p).clone()));
                if active.is_empty() && terminating == 0 {
                    set_job_condition(&mut conds, "Failed", "True", &reason, &message, &now_s);
                    events.push(("Warning", "BackoffLimitExceeded", message.clone()));
                    if reason == "DeadlineExceeded" {
                        events.pop();
                        events.push(("Warning", "DeadlineExceeded", message));
                    }
                }
            } else if success {
                let msg = "Reached expected number of succeeded pods";
                set_job_condition(
                    &mut conds,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    msg,
                    &now_s,
                );
                to_delete.extend(active.iter().map(|p| (*p).clone()));
                if active.is_empty() && terminating == 0 {
                    set_job_condition(
                        &mut conds,
                        "Complete",
                        "True",
                        "CompletionsReached",
                        msg,
                        &now_s,
                    );
                    completion_time = Some(now_s.clone());
                    events.push(("Normal", "Completed", "Job completed".into()));
                }
            } else if suspend {
                to_delete.extend(active.iter().map(|p| (*p).clone()));
                set_job_condition(
                    &mut conds,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    &now_s,
                );
            } else {
                if condition_true(&conds, "Suspended") {
                    set_job_condition(
                        &mut conds,
                        "Suspended",
                        "False",
                        "JobResumed",
                        "Job resumed",
                        &now_s,
                    );
                }
                let want = match completions {
                    Some(c) => parallelism.min(c - succeeded),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                }
                .max(0);
                let have = active.len() as i64;
                if have < want {
                    // Exponential back-off after failures: 10 s, 20 s, ... at most 10 min.
                    let last_fail = pods
                        .iter()
                        .filter(|p| phase(&p.value) == "Failed")
                        .filter_map(|p| finished_at(&p.value))
                        .max();
                    let wait = match last_fail {
                        Some(t) if failed > 0 => {
                            let exp = (failed - 1).clamp(0, 6) as u32;
                            let delay = (10i64 * 2i64.pow(exp)).min(600);
                            until(&cluster, t + chrono::Duration::seconds(delay))
                        }
                        _ => Duration::ZERO,
                    };
                    if wait > Duration::ZERO {
                        q.add_after(key.clone(), wait);
                    } else {
                        to_create = (want - have).min(self.cfg.burst_replicas as i64);
                    }
                } else if have > want {
                    let mut extra: Vec<Arc<StoredObject>> =
                        active.iter().map(|p| (*p).clone()).collect();
                    extra.sort_by(|a, b| {
                        created_at(&b.value).cmp(&created_at(&a.value)).then(
                            str_at(&b.value, "/metadata/name")
                                .cmp(str_at(&a.value, "/metadata/name")),
                        )
                    });
                    to_delete.extend(extra.into_iter().take((have - want) as usize));
                }
            }
        }

        let mut deleted = 0i64;
        for p in &to_delete {
            match delete_obj(&cluster, &pods_res, &p.value).await {
                Ok(rev) => {
                    q.expect(&key, JOB_PODS, rev);
                    deleted += 1;
                }
                Err(e) if e.code == 404 || e.code == 409 => deleted += 1,
                Err(e) => retry_later(q, &key, &e),
            }
        }
        let mut created = 0i64;
        if to_create > 0 {
            let template = v.ptr("/spec/template").cloned().unwrap_or_default();
            let owner = owner_ref(v, "batch/v1", "Job");
            let prefix = format!("{}-", key.1);
            let extra = [
                ("batch.kubernetes.io/controller-uid", uid.clone()),
                ("batch.kubernetes.io/job-name", key.1.clone()),
                ("controller-uid", uid.clone()),
                ("job-name", key.1.clone()),
            ];
            for _ in 0..to_create {
                let pod = pod_from_template(
                    &template,
                    &key.0,
                    PodName::Generate(&prefix),
                    owner.clone(),
                    &extra,
                );
                match cluster.create(&pods_res, pod).await {
                    Ok(c) => {
                        created += 1;
                        q.expect(&key, JOB_PODS, c.revision);
                        let msg = format!("Created pod: {}", str_at(&c.value, "/metadata/name"));
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Normal",
                            "SuccessfulCreate",
                            &msg,
                            JOB_COMPONENT,
                        )
                        .await;
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {}", e.message);
                        record(
                            &cluster,
                            self.cfg.events,
                            v,
                            "Warning",
                            "FailedCreate",
                            &msg,
                            JOB_COMPONENT,
                        )
                        .await;
                        retry_later(q, &key, &e);
                        break;
                    }
                }
            }
        }
        for (t, reason, msg) in &events {
            record(&cluster, self.cfg.events, v, t, reason, msg, JOB_COMPONENT).await;
        }

        let active_now = active.len() as i64 - deleted.min(active.len() as i64) + created;
        let mut status = Map::new();
        if !conds.is_empty() {
            status.insert("conditions".into(), Value::from(conds));
        }
        if let Some(s) = &start_time {
            status.insert("startTime".into(), json!(s));
        }
        if let Some(c) = &completion_time {
            status.insert("completionTime".into(), json!(c));
        }
        for (k, n) in [
            ("active", active_now),
            ("succeeded", succeeded),
            ("failed", failed),
        ] {
            if n != 0 {
                status.insert(k.into(), json!(n));
            }
        }
        status.insert("terminating".into(), json!(terminating));
        status.insert("ready".into(), json!(ready.min(active_now)));
        status.insert("uncountedTerminatedPods".into(), json!({}));
        match write_status(&cluster, &cluster.res.jobs, v, Value::Object(status)).await {
            Ok(Some(w)) => q.expect(&key, JOB_FEED, w.revision),
            Ok(None) => {}
            Err(e) => retry_later(q, &key, &e),
        }
    }
}

// ==============================================================================================
// All of them
// ==============================================================================================

/// Starts the Deployment, ReplicaSet, StatefulSet, DaemonSet and Job controllers with their
/// default settings.
pub fn spawn_all(cluster: Cluster) -> Vec<JoinHandle<()>> {
    vec![
        super::deployment::spawn_deployment(cluster.clone(), Default::default()),
        spawn_replicaset(cluster.clone(), ReplicaSetConfig::default()),
        spawn_statefulset(cluster.clone(), StatefulSetConfig::default()),
        spawn_daemonset(cluster.clone(), DaemonSetConfig::default()),
        spawn_job(cluster, JobConfig::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_set_ignores_pod_updates_that_change_nothing_it_counts() {
        let pod = json!({
            "metadata": {"name": "p", "uid": "u1", "labels": {"app": "a"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "r1", "controller": true}]},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"waiting": {}}}]}
        });
        let changed = |f: &dyn Fn(&mut Value)| {
            let mut p = pod.clone();
            f(&mut p);
            p
        };
        // Container states, restarts, IPs, the node and a phase that stays non-terminal: the
        // same to a ReplicaSet.
        let status_only = changed(&|p| {
            p["status"]["phase"] = json!("Pending");
            p["status"]["containerStatuses"][0]["restartCount"] = json!(3);
            p["status"]["containerStatuses"][0]["state"] = json!({"running": {}});
            p["status"]["podIP"] = json!("10.0.0.2");
            p["spec"]["nodeName"] = json!("n2");
        });
        assert!(same_for_replica_set(&pod, &status_only));
        // What it counts or claims by: each one is a change.
        let counted: [&dyn Fn(&mut Value); 7] = [
            &|p| p["status"]["conditions"][0]["status"] = json!("True"),
            &|p| p["status"]["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:01:00Z"),
            &|p| p["status"]["phase"] = json!("Succeeded"),
            &|p| p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:02:00Z"),
            &|p| p["metadata"]["labels"]["app"] = json!("b"),
            &|p| p["metadata"]["ownerReferences"] = json!([]),
            &|p| p["metadata"]["uid"] = json!("u2"),
        ];
        for (i, f) in counted.iter().enumerate() {
            assert!(!same_for_replica_set(&pod, &changed(f)), "change {i}");
        }
    }

    #[test]
    fn template_hash_is_stable_and_key_order_free() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let b = json!({"spec": {"x": [1, 2]}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        let h = template_hash(&a, None);
        assert!(!h.is_empty() && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn int_or_percent() {
        assert_eq!(scaled_value(Some(&json!("25%")), 10, true, 0), 3);
        assert_eq!(scaled_value(Some(&json!("25%")), 10, false, 0), 2);
        assert_eq!(scaled_value(Some(&json!(4)), 10, false, 0), 4);
        assert_eq!(scaled_value(None::<&Value>, 10, false, 7), 7);
        assert_eq!(scaled_value(Some(&json!("x%")), 10, false, 1), 1);
        assert_eq!(
            scaled_value(Some(&json!(i64::MAX)), 10, true, 0),
            i64::from(i32::MAX)
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x-1"), None);
        assert_eq!(ordinal_of("web", "webb-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn node_terms_and_taints() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a", "gen": "5"}}});
        let term = |v: Value| node_matches_term(&v, &node);
        assert!(term(
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]})
        ));
        assert!(!term(
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]})
        ));
        assert!(term(
            json!({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]})
        ));
        assert!(term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        ));
        assert!(!term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})
        ));
        assert!(!term(json!({})));
        let tols = daemon_tolerations(&json!({"hostNetwork": true}));
        assert_eq!(tols.len(), 7);
        let taint = |k: &str, e: &str| json!({"key": k, "effect": e});
        assert!(tolerates(
            &tols,
            &taint("node.kubernetes.io/unschedulable", "NoSchedule")
        ));
        assert!(tolerates(
            &tols,
            &taint("node.kubernetes.io/unreachable", "NoExecute")
        ));
        assert!(!tolerates(&tols, &taint("dedicated", "NoSchedule")));
        let all = [json!({"operator": "Exists"})];
        assert!(tolerates(&all, &taint("anything", "NoExecute")));
        let spec = DsSpec::parse(&json!({"spec": {"template": {"spec": {}}}}));
        let tainted = |e: &str| json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": e}]}});
        assert_eq!(spec.evaluate(&tainted("NoSchedule")), (false, true));
        assert_eq!(spec.evaluate(&tainted("NoExecute")), (false, false));
        assert_eq!(spec.evaluate(&tainted("PreferNoSchedule")), (true, true));
    }

    #[test]
    fn queue_holds_a_key_until_its_writes_are_observed() {
        let mut q = Queue::new(2);
        let k: Key = ("ns".into(), "a".into());
        q.add(k.clone());
        assert_eq!(q.take().len(), 1);
        q.expect(&k, 1, 10);
        q.add(k.clone());
        assert!(q.take().is_empty(), "waits for revision 10 of feed 1");
        q.observe(0, 20);
        assert!(q.take().is_empty(), "another feed does not count");
        q.observe(1, 9);
        assert!(q.take().is_empty());
        q.observe(1, 10);
        assert_eq!(q.take().into_iter().collect::<Vec<_>>(), vec![k.clone()]);
        q.expect(&k, 1, 5);
        assert!(!q.is_waiting(&k), "already seen");
    }
}

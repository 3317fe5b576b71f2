//! The object store: one global, monotonically increasing revision, optimistic concurrency, and a
//! bounded per-resource watch history.
//!
//! The [`Store`] trait is what the API server needs from its storage and nothing more; it mirrors
//! what etcd offers (revisions, compare-and-swap on a revision, watch from a revision, compaction),
//! so that an etcd-backed implementation can sit behind it. The store only assigns
//! `metadata.resourceVersion`; every other piece of API semantics (uid, generation, defaults,
//! graceful deletion) lives in the API layer, exactly as in kube-apiserver.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::tree::Tree;
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

/// A resource type, independent of its version: (`apps`, `deployments`). The core group is "".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: String,
    pub resource: String,
}

impl ResourceKey {
    pub fn new(group: &str, resource: &str) -> Self {
        ResourceKey {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One object: its resource, namespace ("" when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: ResourceKey,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(resource: &ResourceKey, namespace: &str, name: &str) -> Self {
        ObjectKey {
            resource: resource.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// An object as stored: the JSON value, its serialized form (computed on first use, once per
/// write, and shared by every list and watch that sends it) and the revision of its last write.
/// In-process components never need the serialized form, so they never pay for it.
#[derive(Debug)]
pub struct StoredObject {
    pub value: Tree,
    json: std::sync::OnceLock<Bytes>,
    pub revision: u64,
}

impl StoredObject {
    fn of(value: Tree, revision: u64) -> Self {
        StoredObject {
            value,
            json: std::sync::OnceLock::new(),
            revision,
        }
    }

    fn new(mut value: Value, revision: u64) -> Self {
        set_revision(&mut value, revision);
        StoredObject::of(Tree::from(&value), revision)
    }

    /// A new version of `old`, sharing with it every part that did not change.
    fn new_version(mut value: Value, old: &Tree, revision: u64) -> Self {
        set_revision(&mut value, revision);
        StoredObject::of(Tree::shared_with(&value, old), revision)
    }

    /// `value` at a new revision (its resourceVersion set): an update built as a tree, or a
    /// deletion's last state.
    fn from_tree(value: &Tree, revision: u64) -> Self {
        let rv = Tree::String(crate::tree::Str::from(revision.to_string().as_str()));
        StoredObject::of(
            value.with_at(&["metadata", "resourceVersion"], rv),
            revision,
        )
    }

    /// An object that was never stored (a dry run's result): revision 0, no resourceVersion set.
    pub fn unstored(value: Value) -> Self {
        StoredObject::of(Tree::from(&value), 0)
    }

    /// A stored object whose revision is known (e.g. a component caching what it wrote).
    pub fn with_revision(value: Value, revision: u64) -> Self {
        StoredObject::of(Tree::from(&value), revision)
    }

    /// The serialized object, as sent on the wire.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }

    pub fn namespace(&self) -> &str {
        self.value
            .ptr("/metadata/namespace")
            .and_then(Tree::as_str)
            .unwrap_or("")
    }
}

fn set_revision(value: &mut Value, revision: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_string(),
            Value::String(revision.to_string()),
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object. `object` is the state after the change (for `Deleted`, the last state,
/// carrying the deletion's revision); `previous` the state before it.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: Arc<StoredObject>,
    pub previous: Option<Arc<StoredObject>>,
    pub revision: u64,
}

/// A write precondition, as in `DeleteOptions.preconditions` and optimistic concurrency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    pub resource_version: Option<u64>,
    pub uid: Option<String>,
}

impl Precondition {
    pub fn revision(rv: u64) -> Self {
        Precondition {
            resource_version: Some(rv),
            uid: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("conflict on {key}: {reason}")]
    Conflict { key: String, reason: String },
    /// The requested revision has been compacted out of the history window.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("store failure: {0}")]
    Internal(String),
}

/// The items of one list, consistent at `revision`.
#[derive(Debug, Default)]
pub struct ListResult {
    pub items: Vec<Arc<StoredObject>>,
    pub revision: u64,
    /// Items after the last returned one (only when a limit cut the list). When the list was
    /// asked not to count them, 1 means "at least one more".
    pub remaining: usize,
}

/// What a list asks for: a namespace (or all), a starting key for pagination and a limit, at the
/// current revision or at an exact older one.
#[derive(Clone, Default)]
pub struct ListOptions {
    pub namespace: Option<String>,
    /// Return items strictly after this (namespace, name).
    pub after: Option<(String, String)>,
    pub limit: Option<usize>,
    /// Read at this revision (exact); `None` reads the current state.
    pub at_revision: Option<u64>,
    /// Filter run inside the store, so that a limit counts matching items, like the real
    /// apiserver's paged lists with selectors.
    #[allow(clippy::type_complexity)]
    pub filter: Option<Arc<dyn Fn(&Tree) -> bool + Send + Sync>>,
    /// Count every item after the limit (for `remainingItemCount`); otherwise stop at the first.
    pub count_remaining: bool,
    /// Only pods whose `spec.nodeName` (as a field selector reads it) is this: served from an
    /// index of the current state (the kubelets' and drains' `fieldSelector=spec.nodeName=X`),
    /// without visiting the other pods. `filter` still applies. Ignored for other resources.
    pub node_name: Option<String>,
    /// Only objects carrying every one of these labels (`key`, `value`): served from an index
    /// of the current state. `filter` still applies.
    pub label_pairs: Vec<(String, String)>,
}

/// Storage behind the API server. All methods are async so that a networked (etcd) implementation
/// fits; the memory implementation never awaits inside a lock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &ObjectKey) -> Result<Arc<StoredObject>, StoreError>;
    async fn list(&self, res: &ResourceKey, opts: &ListOptions) -> Result<ListResult, StoreError>;
    /// Creates; fails with `AlreadyExists`. Sets `metadata.resourceVersion`.
    async fn create(&self, key: &ObjectKey, obj: Value) -> Result<Arc<StoredObject>, StoreError>;
    /// Replaces; fails with `NotFound` or, when the precondition does not hold, `Conflict`.
    async fn update(
        &self,
        key: &ObjectKey,
        obj: Value,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError>;
    /// [`Store::update`] with the new version already a tree (one that shares what it did not
    /// change with the current version, e.g. [`Tree::merge_patched`]'s result).
    async fn update_tree(
        &self,
        key: &ObjectKey,
        obj: Tree,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError>;
    /// Removes; returns the last state with the deletion's revision.
    async fn delete(
        &self,
        key: &ObjectKey,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError>;
    /// Events of `res` (in `namespace` if given) with a revision greater than `after`.
    /// `Expired` when `after` is older than the history window.
    async fn watch(
        &self,
        res: &ResourceKey,
        namespace: Option<&str>,
        after: u64,
    ) -> Result<WatchStream, StoreError>;
    /// The revision of the last write (the global resourceVersion).
    fn revision(&self) -> u64;
    /// A number that changes whenever an object of `res` is created or deleted, or changes its
    /// `metadata.generation` (its spec, for the resources that track one), and stays the same
    /// across other writes (status): callers may cache what they derive from the specs. `None`:
    /// not tracked (derive every time).
    fn spec_epoch(&self, _res: &ResourceKey) -> Option<u64> {
        None
    }
}

struct Table {
    objects: BTreeMap<(String, String), Arc<StoredObject>>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Events with a revision at or below this are gone from `history`.
    compacted: u64,
    /// Pods only: keys by `spec.nodeName` ("" when unset).
    by_node: Option<BTreeMap<String, BTreeSet<(String, String)>>>,
    /// Keys by label (key, value).
    by_label: BTreeMap<(String, String), BTreeSet<(String, String)>>,
    /// See [`Store::spec_epoch`].
    spec_epoch: u64,
    /// Wakes the watches of this resource after a write, always in the same order (a
    /// `tokio::sync::watch` channel spreads its waiters over randomly chosen queues, which made
    /// runs nondeterministic). One per resource: a write wakes only the watches it concerns.
    notify: Arc<tokio::sync::Notify>,
}

/// The resource whose objects are indexed by `spec.nodeName`.
fn node_indexed(res: &ResourceKey) -> bool {
    res.group.is_empty() && res.resource == "pods"
}

/// `spec.nodeName` as a field selector reads it.
fn node_of(v: &Tree) -> std::borrow::Cow<'_, str> {
    match v.ptr("/spec/nodeName") {
        Some(Tree::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
        _ => std::borrow::Cow::Owned(crate::selector::field_value(v, "spec.nodeName")),
    }
}

impl Table {
    fn new(res: &ResourceKey, compacted: u64) -> Self {
        // A new table has lost no events: watching it from any revision is valid.
        Table {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            by_node: node_indexed(res).then(BTreeMap::new),
            by_label: BTreeMap::new(),
            spec_epoch: 0,
            compacted,
            notify: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Records an object under each of its string labels.
    fn index_labels(&mut self, k: (&str, &str), v: &Tree) {
        let Some(labels) = v.ptr("/metadata/labels").and_then(Tree::as_object) else {
            return;
        };
        for (lk, lv) in labels {
            let Some(lv) = lv.as_str() else { continue };
            self.by_label
                .entry((lk.to_string(), lv.to_string()))
                .or_default()
                .insert((k.0.to_string(), k.1.to_string()));
        }
    }

    fn unindex_labels(&mut self, k: (&str, &str), v: &Tree) {
        let Some(labels) = v.ptr("/metadata/labels").and_then(Tree::as_object) else {
            return;
        };
        for (lk, lv) in labels {
            let Some(lv) = lv.as_str() else { continue };
            let lkey = (lk.as_str(), lv);
            if let Some(set) = self.by_label.get_mut(&lkey as &dyn NsName) {
                set.remove(&k as &dyn NsName);
                if set.is_empty() {
                    self.by_label.remove(&lkey as &dyn NsName);
                }
            }
        }
    }

    /// Records a pod under its node (other resources have no node index).
    fn index(&mut self, k: (&str, &str), v: &Tree) {
        if let Some(idx) = self.by_node.as_mut() {
            let node = node_of(v);
            let set = match idx.get_mut(node.as_ref()) {
                Some(set) => set,
                None => idx.entry(node.into_owned()).or_default(),
            };
            set.insert((k.0.to_string(), k.1.to_string()));
        }
    }

    fn unindex(&mut self, k: (&str, &str), v: &Tree) {
        if let Some(idx) = self.by_node.as_mut() {
            let node = node_of(v);
            if let Some(set) = idx.get_mut(node.as_ref()) {
                set.remove(&k as &dyn NsName);
                if set.is_empty() {
                    idx.remove(node.as_ref());
                }
            }
        }
    }

    /// Index of the first event with revision > `after`.
    fn first_after(&self, after: u64) -> usize {
        self.history.partition_point(|e| e.revision <= after)
    }
}

struct Inner {
    revision: u64,
    tables: HashMap<ResourceKey, Table, crate::json::FastBuild>,
}

/// A (namespace, name) key as two borrowed strings, to look up the `(String, String)` keys of a
/// table without copying them; ordered like the tuple.
pub(crate) trait NsName {
    fn parts(&self) -> (&str, &str);
}

impl NsName for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl NsName for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn NsName + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn NsName + 'a) {
        self
    }
}

impl PartialEq for dyn NsName + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn NsName + '_ {}

/// Hashes like the `(String, String)` it stands for, so hash maps keyed by pairs can be looked up
/// with borrowed strings.
impl std::hash::Hash for dyn NsName + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialOrd for dyn NsName + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn NsName + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl ObjectKey {
    /// The key within its table, borrowed.
    fn pair(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

/// The in-memory store used by the simulator.
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    history_limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic in a critical section; the data is still consistent
        // because every critical section finishes its mutation before anything can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryStore {
    /// `history_limit` is the number of events kept per resource for watches (the watch cache
    /// size); older revisions answer 410 Gone.
    pub fn new(history_limit: usize) -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    revision: 1,
                    tables: HashMap::default(),
                }),
                history_limit: history_limit.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    fn record(&self, inner: &mut Inner, res: &ResourceKey, event: WatchEvent) {
        let limit = self.shared.history_limit;
        let table = inner
            .tables
            .entry(res.clone())
            .or_insert_with(|| Table::new(res, 0));
        table.history.push_back(Arc::new(event));
        while table.history.len() > limit {
            if let Some(old) = table.history.pop_front() {
                table.compacted = old.revision;
                // Most often the last reference to an old version: free it on another core.
                crate::offload::drop_later(old);
            }
        }
        table.notify.notify_waiters();
    }

    fn check(
        key: &ObjectKey,
        current: &StoredObject,
        pre: &Precondition,
    ) -> Result<(), StoreError> {
        if let Some(rv) = pre.resource_version
            && rv != current.revision
        {
            return Err(StoreError::Conflict {
                key: key_string(key),
                reason: format!(
                    "resourceVersion {rv} does not match the current {}",
                    current.revision
                ),
            });
        }
        if let Some(uid) = &pre.uid {
            let cur = current
                .value
                .ptr("/metadata/uid")
                .and_then(Tree::as_str)
                .unwrap_or("");
            if cur != uid {
                return Err(StoreError::Conflict {
                    key: key_string(key),
                    reason: format!("uid {uid} does not match the current {cur}"),
                });
            }
        }
        Ok(())
    }
}

fn key_string(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("{} \"{}\"", key.resource, key.name)
    } else {
        format!("{} \"{}/{}\"", key.resource, key.namespace, key.name)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &ObjectKey) -> Result<Arc<StoredObject>, StoreError> {
        let inner = self.lock();
        inner
            .tables
            .get(&key.resource)
            .and_then(|t| t.objects.get(&key.pair() as &dyn NsName))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key_string(key)))
    }

    async fn list(&self, res: &ResourceKey, opts: &ListOptions) -> Result<ListResult, StoreError> {
        let inner = self.lock();
        let revision = opts.at_revision.unwrap_or(inner.revision);
        let Some(table) = inner.tables.get(res) else {
            if revision > inner.revision {
                return Err(StoreError::Expired {
                    requested: revision,
                    oldest: inner.revision,
                });
            }
            return Ok(ListResult {
                items: Vec::new(),
                revision,
                remaining: 0,
            });
        };
        // State at an older revision: undo, per key, every change made after it.
        let mut overrides: BTreeMap<(String, String), Option<Arc<StoredObject>>> = BTreeMap::new();
        if let Some(at) = opts.at_revision {
            if at < table.compacted {
                return Err(StoreError::Expired {
                    requested: at,
                    oldest: table.compacted,
                });
            }
            if at > inner.revision {
                return Err(StoreError::Expired {
                    requested: at,
                    oldest: inner.revision,
                });
            }
            for ev in table.history.range(table.first_after(at)..) {
                let k = (
                    ev.object.namespace().to_string(),
                    name_of(&ev.object.value).to_string(),
                );
                overrides.entry(k).or_insert_with(|| match ev.kind {
                    EventType::Added => None,
                    _ => ev.previous.clone(),
                });
            }
        }
        let ns = opts.namespace.as_deref();
        let start = match &opts.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => match ns {
                Some(ns) => std::ops::Bound::Included((ns.to_string(), String::new())),
                None => std::ops::Bound::Unbounded,
            },
        };
        // The current state of a node's pods, or of the objects with some labels, comes from
        // an index (the smallest set that holds every wanted object).
        let mut by_node: Option<Option<&BTreeSet<(String, String)>>> = None;
        if opts.at_revision.is_none() {
            if let (Some(node), Some(idx)) = (&opts.node_name, &table.by_node) {
                by_node = Some(idx.get(node.as_str()));
            }
            for (lk, lv) in &opts.label_pairs {
                let set = table
                    .by_label
                    .get(&(lk.as_str(), lv.as_str()) as &dyn NsName);
                if by_node
                    .is_none_or(|cur| set.map_or(0, BTreeSet::len) < cur.map_or(0, BTreeSet::len))
                {
                    by_node = Some(set);
                }
            }
        }
        let merged: Box<dyn Iterator<Item = (&(String, String), Option<&Arc<StoredObject>>)>> =
            match by_node {
                Some(keys) => Box::new(
                    keys.into_iter()
                        .flat_map(|set| set.range((start.clone(), std::ops::Bound::Unbounded)))
                        .filter_map(|k| table.objects.get_key_value(k))
                        .map(|(k, v)| (k, Some(v))),
                ),
                None => {
                    let current = table
                        .objects
                        .range((start.clone(), std::ops::Bound::Unbounded))
                        .filter(|(k, _)| !overrides.contains_key(*k))
                        .map(|(k, v)| (k, Some(v)));
                    let older = overrides
                        .range((start, std::ops::Bound::Unbounded))
                        .map(|(k, v)| (k, v.as_ref()));
                    Box::new(merge_sorted(current, older))
                }
            };
        let mut items = Vec::new();
        let mut remaining = 0usize;
        let limit = opts.limit.unwrap_or(usize::MAX);
        for ((k_ns, _), obj) in merged {
            if let Some(ns) = ns
                && k_ns != ns
            {
                if k_ns.as_str() > ns {
                    break;
                }
                continue;
            }
            let Some(obj) = obj else { continue };
            if let Some(f) = &opts.filter
                && !f(&obj.value)
            {
                continue;
            }
            if items.len() < limit {
                items.push(obj.clone());
            } else {
                remaining += 1;
                if !opts.count_remaining {
                    break;
                }
            }
        }
        Ok(ListResult {
            items,
            revision,
            remaining,
        })
    }

    async fn create(&self, key: &ObjectKey, obj: Value) -> Result<Arc<StoredObject>, StoreError> {
        let mut inner = self.lock();
        let k = (key.namespace.clone(), key.name.clone());
        if inner
            .tables
            .get(&key.resource)
            .is_some_and(|t| t.objects.contains_key(&k))
        {
            return Err(StoreError::AlreadyExists(key_string(key)));
        }
        let rev = inner.revision + 1;
        inner.revision = rev;
        let stored = Arc::new(StoredObject::new(obj, rev));
        let res = &key.resource;
        let table = inner
            .tables
            .entry(res.clone())
            .or_insert_with(|| Table::new(res, 0));
        table.index(key.pair(), &stored.value);
        table.index_labels(key.pair(), &stored.value);
        table.spec_epoch += 1;
        table.objects.insert(k, stored.clone());
        self.record(
            &mut inner,
            &key.resource,
            WatchEvent {
                kind: EventType::Added,
                object: stored.clone(),
                previous: None,
                revision: rev,
            },
        );
        Ok(stored)
    }

    async fn update(
        &self,
        key: &ObjectKey,
        obj: Value,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError> {
        self.replace(key, pre, |previous, rev| {
            StoredObject::new_version(obj, previous, rev)
        })
    }

    async fn update_tree(
        &self,
        key: &ObjectKey,
        obj: Tree,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError> {
        self.replace(key, pre, |_, rev| StoredObject::from_tree(&obj, rev))
    }

    async fn delete(
        &self,
        key: &ObjectKey,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let mut inner = self.lock();
        let (previous, rev) = Self::next_write(&mut inner, key, pre)?;
        if let Some(t) = inner.tables.get_mut(&key.resource) {
            t.unindex(key.pair(), &previous.value);
            t.unindex_labels(key.pair(), &previous.value);
            t.objects.remove(&key.pair() as &dyn NsName);
            t.spec_epoch += 1;
        }
        let last = Arc::new(StoredObject::from_tree(&previous.value, rev));
        self.record(
            &mut inner,
            &key.resource,
            WatchEvent {
                kind: EventType::Deleted,
                object: last.clone(),
                previous: Some(previous),
                revision: rev,
            },
        );
        Ok(last)
    }

    async fn watch(
        &self,
        res: &ResourceKey,
        namespace: Option<&str>,
        after: u64,
    ) -> Result<WatchStream, StoreError> {
        let mut inner = self.lock();
        let revision = inner.revision;
        // A watch of a resource never written yet creates its (empty) table, for its wake-ups.
        let table = inner
            .tables
            .entry(res.clone())
            .or_insert_with(|| Table::new(res, 0));
        let compacted = table.compacted.min(revision);
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                oldest: compacted,
            });
        }
        let state = MemoryWatch {
            notify: table.notify.clone(),
            shared: self.shared.clone(),
            resource: res.clone(),
            namespace: namespace.map(str::to_string),
            cursor: after,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut w| async move {
                if w.done {
                    return None;
                }
                let batch = w.next_batch().await;
                w.done = batch.is_err();
                Some((batch, w))
            },
        )))
    }

    fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn spec_epoch(&self, res: &ResourceKey) -> Option<u64> {
        Some(self.lock().tables.get(res).map_or(0, |t| t.spec_epoch))
    }
}

impl MemoryStore {
    /// The current version of `key` once `pre` holds, and the revision of the write about to
    /// replace or remove it (taken).
    fn next_write(
        inner: &mut Inner,
        key: &ObjectKey,
        pre: &Precondition,
    ) -> Result<(Arc<StoredObject>, u64), StoreError> {
        let previous = inner
            .tables
            .get(&key.resource)
            .and_then(|t| t.objects.get(&key.pair() as &dyn NsName))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key_string(key)))?;
        Self::check(key, &previous, pre)?;
        inner.revision += 1;
        Ok((previous, inner.revision))
    }

    /// The common part of the updates: check, make the new version, index, record.
    fn replace(
        &self,
        key: &ObjectKey,
        pre: &Precondition,
        make: impl FnOnce(&Tree, u64) -> StoredObject,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let mut inner = self.lock();
        let (previous, rev) = Self::next_write(&mut inner, key, pre)?;
        let stored = Arc::new(make(&previous.value, rev));
        if let Some(t) = inner.tables.get_mut(&key.resource) {
            if t.by_node.is_some() && node_of(&previous.value) != node_of(&stored.value) {
                t.unindex(key.pair(), &previous.value);
                t.index(key.pair(), &stored.value);
            }
            if previous.value.ptr("/metadata/generation")
                != stored.value.ptr("/metadata/generation")
            {
                t.spec_epoch += 1;
            }
            if previous.value.ptr("/metadata/labels") != stored.value.ptr("/metadata/labels") {
                t.unindex_labels(key.pair(), &previous.value);
                t.index_labels(key.pair(), &stored.value);
            }
            if let Some(slot) = t.objects.get_mut(&key.pair() as &dyn NsName) {
                *slot = stored.clone();
            }
        }
        self.record(
            &mut inner,
            &key.resource,
            WatchEvent {
                kind: EventType::Modified,
                object: stored.clone(),
                previous: Some(previous),
                revision: rev,
            },
        );
        Ok(stored)
    }
}

fn name_of(v: &Tree) -> &str {
    v.ptr("/metadata/name").and_then(Tree::as_str).unwrap_or("")
}

/// Merges two iterators sorted by key into one sorted iterator.
fn merge_sorted<'a, A, B>(
    a: A,
    b: B,
) -> impl Iterator<Item = (&'a (String, String), Option<&'a Arc<StoredObject>>)>
where
    A: Iterator<Item = (&'a (String, String), Option<&'a Arc<StoredObject>>)>,
    B: Iterator<Item = (&'a (String, String), Option<&'a Arc<StoredObject>>)>,
{
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => {
            if x.0 <= y.0 {
                a.next()
            } else {
                b.next()
            }
        }
        (Some(_), None) => a.next(),
        (None, Some(_)) => b.next(),
        (None, None) => None,
    })
}

/// Batches of events in revision order. An `Err(Expired)` ends the stream: the watcher fell behind
/// the history window and must re-list, as with a real API server.
pub type WatchStream =
    futures::stream::BoxStream<'static, Result<Vec<Arc<WatchEvent>>, StoreError>>;

struct MemoryWatch {
    shared: Arc<Shared>,
    notify: Arc<tokio::sync::Notify>,
    resource: ResourceKey,
    namespace: Option<String>,
    cursor: u64,
    done: bool,
}

impl MemoryWatch {
    async fn next_batch(&mut self) -> Result<Vec<Arc<WatchEvent>>, StoreError> {
        loop {
            // Created before looking, so that a write in between still wakes it.
            let notify = self.notify.clone();
            let notified = notify.notified();
            {
                let inner = self.shared.lock();
                if let Some(table) = inner.tables.get(&self.resource) {
                    if self.cursor < table.compacted {
                        return Err(StoreError::Expired {
                            requested: self.cursor,
                            oldest: table.compacted,
                        });
                    }
                    let start = table.first_after(self.cursor);
                    let batch: Vec<_> = table
                        .history
                        .range(start..)
                        .filter(|e| {
                            self.namespace
                                .as_deref()
                                .is_none_or(|ns| e.object.namespace() == ns)
                        })
                        .cloned()
                        .collect();
                    if let Some(last) = table.history.back() {
                        self.cursor = self.cursor.max(last.revision);
                    }
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn borrowed_pairs_find_owned_keys_in_hash_maps() {
        let mut m: crate::json::FastMap<(String, String), u32> = Default::default();
        m.insert(("ns".into(), "a".into()), 1);
        m.insert(("n".into(), "sa".into()), 2);
        assert_eq!(m.get(&("ns", "a") as &dyn NsName), Some(&1));
        assert_eq!(m.get(&("n", "sa") as &dyn NsName), Some(&2));
        assert_eq!(m.get(&("nsa", "") as &dyn NsName), None);
        assert!(!m.contains_key(&("ns", "b") as &dyn NsName));
    }

    fn pod(name: &str, node: Option<&str>, app: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    async fn names(s: &MemoryStore, opts: &ListOptions) -> Vec<String> {
        let pods = ResourceKey::new("", "pods");
        s.list(&pods, opts)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| name_of(&o.value).to_string())
            .collect()
    }

    #[tokio::test]
    async fn point_lookups_go_by_the_key_not_the_metadata() {
        let s = MemoryStore::new(100);
        let pods = ResourceKey::new("", "pods");
        let key = |n: &str| ObjectKey::new(&pods, "ns", n);
        for n in ["a", "b", "c"] {
            s.create(&key(n), pod(n, None, "web")).await.unwrap();
        }
        assert!(s.get(&key("zz")).await.is_err());
        // Stored under a key its metadata does not name: found all the same, before and after
        // an update.
        s.create(&key("odd"), pod("other", None, "web"))
            .await
            .unwrap();
        assert_eq!(name_of(&s.get(&key("odd")).await.unwrap().value), "other");
        s.update(
            &key("odd"),
            pod("other", Some("n1"), "web"),
            &Precondition::default(),
        )
        .await
        .unwrap();
        let odd = s.get(&key("odd")).await.unwrap();
        assert_eq!(node_of(&odd.value), "n1");
        assert!(matches!(
            s.create(&key("odd"), pod("odd", None, "web")).await,
            Err(StoreError::AlreadyExists(_))
        ));
        // Updates replace, deletions remove, a new creation under a freed name is found.
        s.update(
            &key("b"),
            pod("b", Some("n2"), "db"),
            &Precondition::default(),
        )
        .await
        .unwrap();
        assert_eq!(node_of(&s.get(&key("b")).await.unwrap().value), "n2");
        s.delete(&key("b"), &Precondition::default()).await.unwrap();
        assert!(matches!(
            s.get(&key("b")).await,
            Err(StoreError::NotFound(_))
        ));
        s.delete(&key("odd"), &Precondition::default())
            .await
            .unwrap();
        assert!(s.get(&key("odd")).await.is_err());
        s.create(&key("b"), pod("b", None, "x")).await.unwrap();
        assert_eq!(
            s.get(&key("b"))
                .await
                .unwrap()
                .value
                .ptr("/metadata/labels/app")
                .and_then(Tree::as_str),
            Some("x")
        );
        assert_eq!(names(&s, &ListOptions::default()).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn node_and_label_indices_follow_writes() {
        let s = MemoryStore::new(100);
        let pods = ResourceKey::new("", "pods");
        let key = |n: &str| ObjectKey::new(&pods, "ns", n);
        for (n, node, app) in [
            ("a", Some("n1"), "web"),
            ("b", Some("n2"), "web"),
            ("c", None, "db"),
            ("d", Some("n1"), "db"),
        ] {
            s.create(&key(n), pod(n, node, app)).await.unwrap();
        }
        let on = |node: &str| ListOptions {
            node_name: Some(node.to_string()),
            ..Default::default()
        };
        let with = |app: &str| ListOptions {
            label_pairs: vec![("app".into(), app.into())],
            ..Default::default()
        };
        assert_eq!(names(&s, &on("n1")).await, ["a", "d"]);
        assert_eq!(names(&s, &on("")).await, ["c"]);
        assert_eq!(names(&s, &with("web")).await, ["a", "b"]);
        // A binding and a relabeling move the objects between index entries.
        s.update(
            &key("c"),
            pod("c", Some("n1"), "web"),
            &Precondition::default(),
        )
        .await
        .unwrap();
        assert_eq!(names(&s, &on("n1")).await, ["a", "c", "d"]);
        assert!(names(&s, &on("")).await.is_empty());
        assert_eq!(names(&s, &with("web")).await, ["a", "b", "c"]);
        assert_eq!(names(&s, &with("db")).await, ["d"]);
        s.delete(&key("a"), &Precondition::default()).await.unwrap();
        assert_eq!(names(&s, &on("n1")).await, ["c", "d"]);
        assert_eq!(names(&s, &with("web")).await, ["b", "c"]);
        // Both, a limit, and an older revision (served without the indices).
        let both = ListOptions {
            node_name: Some("n1".into()),
            label_pairs: vec![("app".into(), "web".into())],
            ..Default::default()
        };
        let mut page = both.clone();
        page.limit = Some(1);
        assert_eq!(names(&s, &page).await, ["c"]);
        let s2 = MemoryStore::new(100);
        s2.create(&key("x"), pod("x", Some("n1"), "web"))
            .await
            .unwrap();
        let rev = s2.revision();
        s2.update(
            &key("x"),
            pod("x", Some("n1"), "db"),
            &Precondition::default(),
        )
        .await
        .unwrap();
        let mut old = with("web");
        old.at_revision = Some(rev);
        old.filter = Some(Arc::new(|v: &Tree| v["metadata"]["labels"]["app"] == "web"));
        assert_eq!(names(&s2, &old).await, ["x"]);
        assert!(names(&s2, &with("web")).await.is_empty());
    }
}

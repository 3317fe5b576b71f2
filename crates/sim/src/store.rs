//! The object store: one global, monotonically increasing revision, optimistic concurrency, and a
//! bounded per-resource watch history.
//!
//! The [`Store`] trait is what the API server needs from its storage and nothing more; it mirrors
//! what etcd offers (revisions, compare-and-swap on a revision, watch from a revision, compaction),
//! so that an etcd-backed implementation can sit behind it. The store only assigns
//! `metadata.resourceVersion`; every other piece of API semantics (uid, generation, defaults,
//! graceful deletion) lives in the API layer, exactly as in kube-apiserver.

use crate::json::Ptr;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

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
    pub value: Value,
    json: std::sync::OnceLock<Bytes>,
    pub revision: u64,
}

impl StoredObject {
    fn new(mut value: Value, revision: u64) -> Self {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".to_string(),
                Value::String(revision.to_string()),
            );
        }
        StoredObject {
            value,
            json: std::sync::OnceLock::new(),
            revision,
        }
    }

    /// An object that was never stored (a dry run's result): revision 0, no resourceVersion set.
    pub fn unstored(value: Value) -> Self {
        StoredObject {
            value,
            json: std::sync::OnceLock::new(),
            revision: 0,
        }
    }

    /// A stored object whose revision is known (e.g. a component caching what it wrote).
    pub fn with_revision(value: Value, revision: u64) -> Self {
        StoredObject {
            value,
            json: std::sync::OnceLock::new(),
            revision,
        }
    }

    /// The serialized object, as sent on the wire.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }

    pub fn namespace(&self) -> &str {
        self.value
            .ptr("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
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
    pub filter: Option<Arc<dyn Fn(&Value) -> bool + Send + Sync>>,
    /// Count every item after the limit (for `remainingItemCount`); otherwise stop at the first.
    pub count_remaining: bool,
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
}

struct Table {
    objects: BTreeMap<(String, String), Arc<StoredObject>>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Events with a revision at or below this are gone from `history`.
    compacted: u64,
}

impl Table {
    fn new(compacted: u64) -> Self {
        // A new table has lost no events: watching it from any revision is valid.
        Table {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted,
        }
    }

    /// Index of the first event with revision > `after`.
    fn first_after(&self, after: u64) -> usize {
        self.history.partition_point(|e| e.revision <= after)
    }
}

struct Inner {
    revision: u64,
    tables: HashMap<ResourceKey, Table>,
}

/// The in-memory store used by the simulator.
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    history_limit: usize,
    /// Wakes the watches after a write, always in the same order (a `tokio::sync::watch`
    /// channel spreads its waiters over randomly chosen queues, which made runs nondeterministic).
    notify: tokio::sync::Notify,
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
                    tables: HashMap::new(),
                }),
                history_limit: history_limit.max(1),
                notify: tokio::sync::Notify::new(),
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
            .or_insert_with(|| Table::new(0));
        table.history.push_back(Arc::new(event));
        while table.history.len() > limit {
            if let Some(old) = table.history.pop_front() {
                table.compacted = old.revision;
            }
        }
        self.shared.notify.notify_waiters();
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
                .and_then(Value::as_str)
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
            .and_then(|t| t.objects.get(&(key.namespace.clone(), key.name.clone())))
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
        let current = table
            .objects
            .range((start.clone(), std::ops::Bound::Unbounded))
            .filter(|(k, _)| !overrides.contains_key(*k))
            .map(|(k, v)| (k, Some(v)));
        let older = overrides
            .range((start, std::ops::Bound::Unbounded))
            .map(|(k, v)| (k, v.as_ref()));
        let merged = merge_sorted(current, older);
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
        inner
            .tables
            .entry(key.resource.clone())
            .or_insert_with(|| Table::new(0))
            .objects
            .insert(k, stored.clone());
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
        let mut inner = self.lock();
        let k = (key.namespace.clone(), key.name.clone());
        let previous = inner
            .tables
            .get(&key.resource)
            .and_then(|t| t.objects.get(&k))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key_string(key)))?;
        Self::check(key, &previous, pre)?;
        let rev = inner.revision + 1;
        inner.revision = rev;
        let stored = Arc::new(StoredObject::new(obj, rev));
        if let Some(t) = inner.tables.get_mut(&key.resource) {
            t.objects.insert(k, stored.clone());
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

    async fn delete(
        &self,
        key: &ObjectKey,
        pre: &Precondition,
    ) -> Result<Arc<StoredObject>, StoreError> {
        let mut inner = self.lock();
        let k = (key.namespace.clone(), key.name.clone());
        let previous = inner
            .tables
            .get(&key.resource)
            .and_then(|t| t.objects.get(&k))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key_string(key)))?;
        Self::check(key, &previous, pre)?;
        let rev = inner.revision + 1;
        inner.revision = rev;
        if let Some(t) = inner.tables.get_mut(&key.resource) {
            t.objects.remove(&k);
        }
        let last = Arc::new(StoredObject::new(previous.value.clone(), rev));
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
        let inner = self.lock();
        let compacted = inner
            .tables
            .get(res)
            .map(|t| t.compacted)
            .unwrap_or(0)
            .min(inner.revision);
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                oldest: compacted,
            });
        }
        let state = MemoryWatch {
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
}

fn name_of(v: &Value) -> &str {
    v.ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
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
    resource: ResourceKey,
    namespace: Option<String>,
    cursor: u64,
    done: bool,
}

impl MemoryWatch {
    async fn next_batch(&mut self) -> Result<Vec<Arc<WatchEvent>>, StoreError> {
        loop {
            // Created before looking, so that a write in between still wakes it.
            let shared = self.shared.clone();
            let notified = shared.notify.notified();
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

//! The garbage collector (pkg/controller/garbagecollector): deletes objects whose owners are
//! gone, and carries out foreground and orphan deletion.
//!
//! It keeps a graph of every object of every served resource (built-ins and custom resources,
//! picked up as their CRDs appear; events are left out) with its `ownerReferences`, indexed by
//! owner uid, and works like the real one:
//! - **Background** (the owner is simply gone): a dependent whose owners are all absent (or whose
//!   owner reference names an object with another uid, or an owner in another namespace) is
//!   deleted, with the propagation its own finalizers ask for (`orphan`, `foregroundDeletion`,
//!   else background) and a uid precondition. A dependent with at least one live owner only
//!   loses its references to the absent (or foreground-deleting) owners.
//! - **Foreground**: an owner with `deletionTimestamp` and the `foregroundDeletion` finalizer has
//!   its dependents deleted (those that have dependents themselves are deleted in the foreground
//!   too, so the deletion cascades); once no dependent with `blockOwnerDeletion: true` remains in
//!   the store, the finalizer is removed and the API server removes the owner.
//! - **Orphan**: an owner with `deletionTimestamp` and the `orphan` finalizer has its references
//!   removed from all its dependents, then the finalizer removed.
//!
//! An owner that is not in the graph is looked up through the API (by the reference's
//! apiVersion, kind and name, then compared by uid) before anything is deleted, so objects whose
//! owners are simply not observed yet are safe. Owner kinds the server does not serve are left
//! alone (the real collector retries them forever).

use crate::json::{FastMap, FastSet, Ptr};
use crate::tree::Tree;
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::cluster::{Change, Cluster};
use crate::controllers::endpoints::{
    Timers, after, is_terminating, sleep_until_opt, str_at, uid_of,
};
use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::rest::DeleteOptions;
use crate::store::{EventType, Precondition, StoredObject};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
const WRITE_ATTEMPTS: usize = 5;

/// Settings of the garbage collector.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Wait before retrying an item that failed with a server error.
    pub retry_delay: Duration,
    /// How often newly served resources (CRDs) are picked up.
    pub discovery_period: Duration,
    /// Items processed before pending watch events are looked at again.
    pub batch: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            retry_delay: Duration::from_secs(1),
            discovery_period: Duration::from_secs(10),
            batch: 500,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct OwnerRef {
    uid: String,
    api_version: String,
    kind: String,
    name: String,
    block: bool,
}

fn owner_refs(v: &Tree) -> Vec<OwnerRef> {
    v.ptr("/metadata/ownerReferences")
        .and_then(Tree::as_array)
        .map(|a| {
            a.iter()
                .map(|r| OwnerRef {
                    uid: str_at(r, "/uid").to_string(),
                    api_version: str_at(r, "/apiVersion").to_string(),
                    kind: str_at(r, "/kind").to_string(),
                    name: str_at(r, "/name").to_string(),
                    block: r.field("blockOwnerDeletion").and_then(Tree::as_bool) == Some(true),
                })
                .filter(|r| !r.uid.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizer(v: &Tree, f: &str) -> bool {
    v.ptr("/metadata/finalizers")
        .and_then(Tree::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(f)))
}

struct Node {
    res: usize,
    ns: String,
    name: String,
    owners: Vec<OwnerRef>,
    deleting: bool,
    fg: bool,
    orphan: bool,
}

impl Node {
    fn deleting_dependents(&self) -> bool {
        self.deleting && self.fg
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnerState {
    Solid,
    Dangling,
    Waiting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    Attempt,
    Orphan,
}

struct State {
    cluster: Cluster,
    cfg: GcConfig,
    resources: Vec<ResourceInfo>,
    synced: Vec<bool>,
    /// Hashed, like `by_res` and `dependents`: looked up for every event of every resource.
    /// Whoever walks one of them sorts first.
    nodes: FastMap<String, Node>,
    by_res: Vec<FastSet<String>>,
    /// Owner uid → uids of objects referencing it.
    dependents: FastMap<String, BTreeSet<String>>,
    attempt: BTreeSet<String>,
    orphan: BTreeSet<String>,
    retry: Timers<(Work, String)>,
    tx: UnboundedSender<(usize, Change)>,
}

/// Starts the garbage collector.
pub fn spawn(cluster: Cluster, config: GcConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut discovery = tokio::time::interval(config.discovery_period);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut st = State {
            cluster,
            cfg: config,
            resources: Vec::new(),
            synced: Vec::new(),
            nodes: FastMap::default(),
            by_res: Vec::new(),
            dependents: FastMap::default(),
            attempt: BTreeSet::new(),
            orphan: BTreeSet::new(),
            retry: Timers::default(),
            tx,
        };
        st.discover();
        loop {
            let busy = st.has_work();
            tokio::select! {
                biased;
                Some((i, c)) = rx.recv() => st.on_change(i, c),
                _ = discovery.tick() => st.discover(),
                _ = sleep_until_opt(st.retry.next()) => {
                    for (w, uid) in st.retry.pop_due(Instant::now()) {
                        match w {
                            Work::Attempt => st.attempt.insert(uid),
                            Work::Orphan => st.orphan.insert(uid),
                        };
                    }
                }
                _ = tokio::task::yield_now(), if busy => {}
            }
            while let Ok((i, c)) = rx.try_recv() {
                st.on_change(i, c);
            }
            if st.synced.iter().all(|s| *s) {
                st.process_some().await;
            }
        }
    })
}

impl State {
    fn has_work(&self) -> bool {
        self.synced.iter().all(|s| *s) && (!self.attempt.is_empty() || !self.orphan.is_empty())
    }

    /// Starts watching every served resource not watched yet.
    fn discover(&mut self) {
        for r in self.cluster.server.registry.all() {
            if r.resource == "events" && (r.group.is_empty() || r.group == "events.k8s.io") {
                continue;
            }
            if self
                .resources
                .iter()
                .any(|w| w.group == r.group && w.resource == r.resource)
            {
                continue;
            }
            let idx = self.resources.len();
            let tx = self.tx.clone();
            let cluster = self.cluster.clone();
            let info = r.clone();
            // Feeds the collector's single queue directly; ends when the collector is gone.
            tokio::spawn(async move {
                let watch_closed = tx.clone();
                tokio::select! {
                    _ = cluster.informer(&info, move |c| {
                        let _ = tx.send((idx, c));
                    }) => {}
                    _ = watch_closed.closed() => {}
                }
            });
            self.resources.push(r);
            self.synced.push(false);
            self.by_res.push(FastSet::default());
        }
    }

    fn on_change(&mut self, idx: usize, c: Change) {
        match c {
            Change::Sync(items) => {
                if let Some(s) = self.synced.get_mut(idx) {
                    *s = true;
                }
                let present: BTreeSet<&str> = items.iter().map(|o| uid_of(&o.value)).collect();
                let mut gone: Vec<String> = self
                    .by_res
                    .get(idx)
                    .map(|s| {
                        s.iter()
                            .filter(|u| !present.contains(u.as_str()))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                gone.sort_unstable();
                for uid in gone {
                    self.remove_node(&uid);
                }
                for o in items {
                    self.upsert(idx, &o);
                }
            }
            Change::Event(ev) => match ev.kind {
                EventType::Deleted => {
                    let uid = uid_of(&ev.object.value).to_string();
                    if self.nodes.get(&uid).is_some_and(|n| n.res == idx) {
                        self.remove_node(&uid);
                    }
                }
                _ => {
                    // Skip updates that change nothing the graph holds (status, leases, ...).
                    if let Some(prev) = &ev.previous
                        && [
                            "/metadata/uid",
                            "/metadata/ownerReferences",
                            "/metadata/finalizers",
                        ]
                        .iter()
                        .all(|p| prev.value.ptr(p) == ev.object.value.ptr(p))
                        && is_terminating(&prev.value) == is_terminating(&ev.object.value)
                        && self.nodes.contains_key(uid_of(&ev.object.value))
                    {
                        return;
                    }
                    self.upsert(idx, &ev.object)
                }
            },
        }
    }

    fn owner_deleting_dependents(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(Node::deleting_dependents)
    }

    fn upsert(&mut self, idx: usize, obj: &StoredObject) {
        let v = &obj.value;
        let uid = uid_of(v).to_string();
        if uid.is_empty() {
            return;
        }
        let node = Node {
            res: idx,
            ns: str_at(v, "/metadata/namespace").to_string(),
            name: str_at(v, "/metadata/name").to_string(),
            owners: owner_refs(v),
            deleting: is_terminating(v),
            fg: has_finalizer(v, FOREGROUND),
            orphan: has_finalizer(v, ORPHAN),
        };
        let new_owners = node.owners.clone();
        let starts_orphaning = node.deleting && node.orphan;
        let starts_foreground = node.deleting_dependents();
        let old = self.nodes.insert(uid.clone(), node);
        if let Some(s) = self.by_res.get_mut(idx) {
            s.insert(uid.clone());
        }
        let (old_owners, was_orphaning, was_foreground) = match &old {
            Some(o) => (
                o.owners.clone(),
                o.deleting && o.orphan,
                o.deleting_dependents(),
            ),
            None => (Vec::new(), false, false),
        };
        // Owner reference changes.
        for r in &old_owners {
            if !new_owners.iter().any(|n| n.uid == r.uid) {
                self.unlink(&r.uid, &uid);
                if self.owner_deleting_dependents(&r.uid) {
                    self.attempt.insert(r.uid.clone());
                }
            }
        }
        for r in &new_owners {
            match old_owners.iter().find(|o| o.uid == r.uid) {
                None => {
                    self.dependents
                        .entry(r.uid.clone())
                        .or_default()
                        .insert(uid.clone());
                    if !self.nodes.contains_key(&r.uid) {
                        // An owner not observed (yet): verify it.
                        self.attempt.insert(uid.clone());
                    } else if self.owner_deleting_dependents(&r.uid) {
                        self.attempt.insert(uid.clone());
                        self.attempt.insert(r.uid.clone());
                    }
                }
                Some(o) => {
                    if o.block && !r.block && self.owner_deleting_dependents(&r.uid) {
                        self.attempt.insert(r.uid.clone());
                    }
                }
            }
        }
        if starts_orphaning && !was_orphaning {
            self.orphan.insert(uid.clone());
        }
        if starts_foreground && !was_foreground {
            if let Some(deps) = self.dependents.get(&uid) {
                self.attempt.extend(deps.iter().cloned());
            }
            self.attempt.insert(uid);
        }
    }

    fn unlink(&mut self, owner: &str, dep: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dep);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    fn remove_node(&mut self, uid: &str) {
        let Some(node) = self.nodes.remove(uid) else {
            return;
        };
        if let Some(s) = self.by_res.get_mut(node.res) {
            s.remove(uid);
        }
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if self.owner_deleting_dependents(&r.uid) {
                self.attempt.insert(r.uid.clone());
            }
        }
        if let Some(deps) = self.dependents.get(uid) {
            self.attempt.extend(deps.iter().cloned());
        }
        self.attempt.remove(uid);
        self.orphan.remove(uid);
    }

    async fn process_some(&mut self) {
        for _ in 0..self.cfg.batch.max(1) {
            let (work, uid) = if let Some(u) = self.orphan.pop_first() {
                (Work::Orphan, u)
            } else if let Some(u) = self.attempt.pop_first() {
                (Work::Attempt, u)
            } else {
                return;
            };
            let r = match work {
                Work::Orphan => self.orphan_item(&uid).await,
                Work::Attempt => self.attempt_item(&uid).await,
            };
            if let Err(e) = r {
                tracing::debug!(uid = %uid, error = %e.message, "garbage collection failed; will retry");
                self.retry
                    .schedule_earliest((work, uid), after(self.cfg.retry_delay));
            }
        }
    }

    /// Owner state from the graph, if the owner is in it.
    fn graph_owner_state(&self, dep: &Node, o: &OwnerRef) -> Option<OwnerState> {
        let n = self.nodes.get(&o.uid)?;
        let dep_namespaced = self.resources.get(dep.res).is_some_and(|r| r.namespaced);
        let owner_namespaced = self.resources.get(n.res).is_some_and(|r| r.namespaced);
        if owner_namespaced && (!dep_namespaced || n.ns != dep.ns) {
            return Some(OwnerState::Dangling);
        }
        Some(if n.deleting_dependents() {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        })
    }

    async fn owner_state(&self, dep: &Node, o: &OwnerRef) -> Result<OwnerState, ApiError> {
        if let Some(s) = self.graph_owner_state(dep, o) {
            return Ok(s);
        }
        let Some(info) = self
            .cluster
            .server
            .registry
            .by_kind(&o.api_version, &o.kind)
        else {
            return Ok(OwnerState::Solid); // cannot be verified: keep the dependent
        };
        let dep_namespaced = self.resources.get(dep.res).is_some_and(|r| r.namespaced);
        let ns = if info.namespaced {
            if !dep_namespaced {
                return Ok(OwnerState::Dangling);
            }
            dep.ns.as_str()
        } else {
            ""
        };
        match self.cluster.get(&info, ns, &o.name).await {
            Ok(obj) if uid_of(&obj.value) == o.uid => Ok(
                if is_terminating(&obj.value) && has_finalizer(&obj.value, FOREGROUND) {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                },
            ),
            Ok(_) => Ok(OwnerState::Dangling),
            Err(e) if e.code == 404 => Ok(OwnerState::Dangling),
            Err(e) => Err(e),
        }
    }

    /// `attemptToDeleteItem`.
    async fn attempt_item(&mut self, uid: &str) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(uid) else {
            return Ok(());
        };
        if node.deleting && !node.fg {
            return Ok(()); // on its way out; its dependents are handled when it is gone
        }
        if node.deleting_dependents() {
            return self.process_deleting_dependents(uid).await;
        }
        if node.owners.is_empty()
            || node
                .owners
                .iter()
                .all(|o| self.graph_owner_state(node, o) == Some(OwnerState::Solid))
        {
            return Ok(());
        }
        let Some(info) = self.resources.get(node.res).cloned() else {
            return Ok(());
        };
        let live = match self.cluster.get(&info, &node.ns, &node.name).await {
            Ok(o) if uid_of(&o.value) == uid => o,
            Ok(_) => return Ok(()),
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        let owners = owner_refs(&live.value);
        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for o in owners {
            match self.owner_state(node, &o).await? {
                OwnerState::Solid => solid.push(o),
                OwnerState::Dangling => dangling.push(o),
                OwnerState::Waiting => waiting.push(o),
            }
        }
        let c = self.cluster.clone();
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Keep the object, drop the references that hold nothing (or block an owner).
            let drop: BTreeSet<String> = dangling
                .iter()
                .chain(waiting.iter())
                .map(|o| o.uid.clone())
                .collect();
            return self
                .edit_owner_refs(&info, uid, |r| !drop.contains(str_at(r, "/uid")), |_| {})
                .await;
        }
        let has_dependents = self.dependents.get(uid).is_some_and(|d| !d.is_empty());
        let policy = if !waiting.is_empty() && has_dependents {
            // Unblock owners that wait on this object while it waits on its own dependents.
            let cycle = self
                .dependents
                .get(uid)
                .is_some_and(|ds| ds.iter().any(|d| self.owner_deleting_dependents(d)));
            if cycle {
                let waiting_uids: BTreeSet<String> =
                    waiting.iter().map(|o| o.uid.clone()).collect();
                self.edit_owner_refs(
                    &info,
                    uid,
                    |_| true,
                    |r| {
                        if waiting_uids.contains(str_at(r, "/uid")) {
                            r["blockOwnerDeletion"] = Value::Bool(false);
                        }
                    },
                )
                .await?;
            }
            "Foreground"
        } else if has_finalizer(&live.value, ORPHAN) {
            "Orphan"
        } else if has_finalizer(&live.value, FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        let (ns, name) = (node.ns.clone(), node.name.clone());
        tracing::debug!(resource = %info.resource, ns = %ns, name = %name, policy, "deleting object whose owners are gone");
        let opts = DeleteOptions {
            propagation: Some(policy.to_string()),
            precondition: Precondition {
                uid: Some(uid.to_string()),
                resource_version: None,
            },
            ..Default::default()
        };
        match c.delete(&info, &ns, &name, &opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `processDeletingDependentsItem`: an owner in foreground deletion.
    async fn process_deleting_dependents(&mut self, uid: &str) -> Result<(), ApiError> {
        let blocking: Vec<String> = self
            .dependents
            .get(uid)
            .map(|deps| {
                deps.iter()
                    .filter(|d| {
                        self.nodes
                            .get(*d)
                            .is_some_and(|n| n.owners.iter().any(|o| o.uid == uid && o.block))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if blocking.is_empty() {
            return self.remove_finalizer(uid, FOREGROUND).await;
        }
        for d in blocking {
            if !self.owner_deleting_dependents(&d) {
                self.attempt.insert(d);
            }
        }
        Ok(())
    }

    /// An owner deleted with the `orphan` finalizer: release its dependents, then it.
    async fn orphan_item(&mut self, uid: &str) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(uid) else {
            return Ok(());
        };
        if !(node.deleting && node.orphan) {
            return Ok(());
        }
        let deps: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        for d in deps {
            let Some(info) = self
                .nodes
                .get(&d)
                .and_then(|n| self.resources.get(n.res))
                .cloned()
            else {
                continue;
            };
            self.edit_owner_refs(&info, &d, |r| str_at(r, "/uid") != uid, |_| {})
                .await?;
        }
        self.remove_finalizer(uid, ORPHAN).await
    }

    /// Rewrites an object's `ownerReferences` (keeping those `keep` accepts, after `edit`), with
    /// optimistic concurrency; a vanished or replaced object is fine.
    async fn edit_owner_refs(
        &self,
        info: &ResourceInfo,
        uid: &str,
        keep: impl Fn(&Value) -> bool,
        edit: impl Fn(&mut Value),
    ) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(uid) else {
            return Ok(());
        };
        let (ns, name) = (node.ns.clone(), node.name.clone());
        for _ in 0..WRITE_ATTEMPTS {
            let cur = match self.cluster.get(info, &ns, &name).await {
                Ok(o) if uid_of(&o.value) == uid => o,
                Ok(_) => return Ok(()),
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut obj = cur.value.to_value();
            let refs: Vec<Value> = obj
                .ptr("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut new_refs: Vec<Value> = refs.iter().filter(|r| keep(r)).cloned().collect();
            for r in new_refs.iter_mut() {
                edit(r);
            }
            if new_refs == refs {
                return Ok(());
            }
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                if new_refs.is_empty() {
                    m.remove("ownerReferences");
                } else {
                    m.insert("ownerReferences".into(), Value::Array(new_refs));
                }
            }
            match self.cluster.update(info, obj).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(&info.qualified(), &name))
    }

    async fn remove_finalizer(&self, uid: &str, fin: &str) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(uid) else {
            return Ok(());
        };
        let Some(info) = self.resources.get(node.res).cloned() else {
            return Ok(());
        };
        let (ns, name) = (node.ns.clone(), node.name.clone());
        for _ in 0..WRITE_ATTEMPTS {
            let cur = match self.cluster.get(&info, &ns, &name).await {
                Ok(o) if uid_of(&o.value) == uid => o,
                Ok(_) => return Ok(()),
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            };
            if !has_finalizer(&cur.value, fin) {
                return Ok(());
            }
            let mut obj = cur.value.to_value();
            let fins: Vec<Value> = obj
                .ptr("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|f| f.as_str() != Some(fin))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                if fins.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), Value::Array(fins));
                }
            }
            tracing::debug!(resource = %info.resource, ns = %ns, name = %name, finalizer = fin, "removing finalizer");
            match self.cluster.update(&info, obj).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(&info.qualified(), &name))
    }
}

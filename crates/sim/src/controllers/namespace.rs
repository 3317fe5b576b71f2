//! The namespace controller (pkg/controller/namespace): empties a namespace that is being deleted
//! and then releases it.
//!
//! A namespace with a `deletionTimestamp` (phase `Terminating`) whose `spec.finalizers` still
//! hold `kubernetes` is processed like `NamespacedResourcesDeleter.Delete`:
//! - every object of every namespaced resource the server serves (custom resources included) is
//!   deleted with background propagation (pods gracefully, with their own grace period);
//! - the namespace's status conditions report progress as the real controller does
//!   (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//!   `NamespaceDeletionContentFailure`, `NamespaceContentRemaining` with "Some resources are
//!   remaining: pods. has 2 resource instances", `NamespaceFinalizersRemaining`);
//! - while content remains the namespace is looked at again after the longest
//!   `terminationGracePeriodSeconds` of its remaining pods (the real estimate), or with a backoff
//!   (1 s doubling to 16 s) when nothing is estimated;
//! - once nothing is left, `kubernetes` is removed from `spec.finalizers` through the `finalize`
//!   subresource, after which the API server removes the namespace (unless other finalizers
//!   remain, which belong to others).

use crate::tree::Tree;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cluster::{Change, Cluster};
use crate::controllers::endpoints::{
    Timers, after, is_terminating, pod_terminal, set_in, sleep_until_opt, str_at,
};
use crate::error::ApiError;
use crate::rest::{self, DeleteOptions, WriteOptions};
use crate::store::{EventType, StoredObject};

const FINALIZER: &str = "kubernetes";

/// Settings of the namespace controller.
#[derive(Clone, Debug)]
pub struct NamespaceConfig {
    /// First wait when content remains without an estimate; doubled up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Wait before retrying after a server error.
    pub retry_delay: Duration,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// A namespace condition: type, failure (reason, message) if any, reason and message when fine.
type ConditionSpec = (
    &'static str,
    Option<(&'static str, String)>,
    &'static str,
    &'static str,
);

/// The outcome of one deletion pass over a namespace's content.
#[derive(Default)]
struct Totals {
    /// "resource.group" → objects remaining.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects carrying it.
    finalizers: BTreeMap<String, usize>,
    /// Seconds to wait for graceful pod terminations.
    estimate: i64,
    /// "resource.group" → error message of a failed deletion.
    failures: BTreeMap<String, String>,
}

struct State {
    cluster: Cluster,
    cfg: NamespaceConfig,
    namespaces: BTreeMap<String, Arc<StoredObject>>,
    queue: Timers<String>,
    backoff: BTreeMap<String, Duration>,
}

/// Starts the namespace controller.
pub fn spawn(cluster: Cluster, config: NamespaceConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = cluster.informer_channel(&cluster.res.namespaces);
        let mut st = State {
            cluster,
            cfg: config,
            namespaces: BTreeMap::new(),
            queue: Timers::default(),
            backoff: BTreeMap::new(),
        };
        loop {
            tokio::select! {
                biased;
                Some(c) = rx.recv() => st.on_change(c),
                _ = sleep_until_opt(st.queue.next()) => {
                    for name in st.queue.pop_due(Instant::now()) {
                        st.sync(&name).await;
                    }
                }
                else => return,
            }
            while let Ok(c) = rx.try_recv() {
                st.on_change(c);
            }
        }
    })
}

fn needs_work(ns: &Tree) -> bool {
    is_terminating(ns)
        && ns
            .ptr("/spec/finalizers")
            .and_then(Tree::as_array)
            .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(FINALIZER)))
}

impl State {
    fn put(&mut self, obj: Arc<StoredObject>) {
        let name = str_at(&obj.value, "/metadata/name").to_string();
        if needs_work(&obj.value) {
            if self.queue.get(&name).is_none() {
                self.queue.set(name.clone(), Instant::now());
            }
        } else {
            self.queue.cancel(&name);
            self.backoff.remove(&name);
        }
        self.namespaces.insert(name, obj);
    }

    fn on_change(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.namespaces.clear();
                self.queue.clear();
                for o in items {
                    self.put(o);
                }
            }
            Change::Event(ev) => match ev.kind {
                EventType::Deleted => {
                    let name = str_at(&ev.object.value, "/metadata/name").to_string();
                    self.namespaces.remove(&name);
                    self.queue.cancel(&name);
                    self.backoff.remove(&name);
                }
                _ => self.put(ev.object.clone()),
            },
        }
    }

    fn requeue(&mut self, name: &str, wait: Duration) {
        self.queue.schedule_earliest(name.to_string(), after(wait));
    }

    async fn sync(&mut self, name: &str) {
        let c = self.cluster.clone();
        let ns = match c.get(&c.res.namespaces, "", name).await {
            Ok(o) => o,
            Err(e) if e.code == 404 => return,
            Err(e) => {
                tracing::debug!(namespace = name, error = %e.message, "namespace get failed");
                let d = self.cfg.retry_delay;
                self.requeue(name, d);
                return;
            }
        };
        if !needs_work(&ns.value) {
            return;
        }
        let totals = self.delete_content(name).await;
        if let Err(e) = self.update_conditions(&ns.value, &totals).await {
            tracing::debug!(namespace = name, error = %e.message, "namespace status update failed");
        }
        let left: usize = totals.remaining.values().sum();
        if left == 0 && totals.failures.is_empty() {
            match self.finalize(name).await {
                Ok(()) => {
                    self.backoff.remove(name);
                }
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e.message, "namespace finalize failed");
                    let d = if e.code == 409 {
                        Duration::ZERO
                    } else {
                        self.cfg.retry_delay
                    };
                    self.requeue(name, d);
                }
            }
            return;
        }
        let backoff = self
            .backoff
            .get(name)
            .copied()
            .unwrap_or(self.cfg.min_backoff);
        self.backoff.insert(
            name.to_string(),
            backoff.saturating_mul(2).min(self.cfg.max_backoff),
        );
        let wait = if totals.estimate > 0 {
            Duration::from_secs(totals.estimate as u64)
        } else {
            backoff
        };
        tracing::debug!(
            namespace = name,
            remaining = left,
            wait_s = wait.as_secs_f64(),
            "namespace content remains"
        );
        self.requeue(name, wait);
    }

    /// Deletes everything in the namespace; reports what is left.
    async fn delete_content(&self, ns: &str) -> Totals {
        let c = &self.cluster;
        let mut t = Totals::default();
        let mut resources = c.server.registry.all();
        resources.retain(|r| r.namespaced);
        let mut seen = std::collections::BTreeSet::new();
        for r in resources {
            if !seen.insert((r.group.clone(), r.resource.clone())) {
                continue; // another version of the same resource
            }
            let label = format!("{}.{}", r.resource, r.group);
            let items = match c.list(&r, Some(ns)).await {
                Ok((items, _)) => items,
                Err(e) => {
                    t.failures.insert(label, e.message);
                    continue;
                }
            };
            if items.is_empty() {
                continue;
            }
            let is_pods = r.group.is_empty() && r.resource == "pods";
            let mut left = 0;
            for o in &items {
                let v = &o.value;
                if is_pods && !pod_terminal(v) {
                    let grace = v
                        .ptr("/spec/terminationGracePeriodSeconds")
                        .and_then(Tree::as_i64)
                        .unwrap_or(30);
                    t.estimate = t.estimate.max(grace);
                }
                let state = if is_terminating(v) {
                    Some(v.clone())
                } else {
                    let name = str_at(v, "/metadata/name");
                    let opts = DeleteOptions {
                        propagation: Some("Background".into()),
                        ..Default::default()
                    };
                    match c.delete(&r, ns, name, &opts).await {
                        Ok(true) => None,
                        Ok(false) => c.get(&r, ns, name).await.ok().map(|o| o.value.clone()),
                        Err(e) if e.code == 404 => None,
                        Err(e) => {
                            t.failures.insert(label.clone(), e.message);
                            Some(v.clone())
                        }
                    }
                };
                if let Some(v) = state {
                    left += 1;
                    for f in v
                        .ptr("/metadata/finalizers")
                        .and_then(Tree::as_array)
                        .unwrap_or_default()
                    {
                        if let Some(f) = f.as_str() {
                            *t.finalizers.entry(f.to_string()).or_default() += 1;
                        }
                    }
                }
            }
            if left > 0 {
                t.remaining.insert(label, left);
            }
        }
        if t.remaining.is_empty() {
            t.estimate = 0;
        }
        t
    }

    async fn update_conditions(&self, ns: &Tree, t: &Totals) -> Result<(), ApiError> {
        let now = self.cluster.server.clock.timestamp();
        let content_failure = if t.failures.is_empty() {
            None
        } else {
            let msgs: Vec<String> = t
                .failures
                .iter()
                .map(|(r, m)| format!("{r}: {m}"))
                .collect();
            Some((
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    msgs.len(),
                    msgs.join(", ")
                ),
            ))
        };
        let remaining = if t.remaining.is_empty() {
            None
        } else {
            let parts: Vec<String> = t
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            Some((
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            ))
        };
        let finalizers = if t.finalizers.is_empty() {
            None
        } else {
            let parts: Vec<String> = t
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            Some((
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            ))
        };
        let wanted: [ConditionSpec; 5] = [
            (
                "NamespaceDeletionDiscoveryFailure",
                None,
                "ResourcesDiscovered",
                "All resources successfully discovered",
            ),
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                None,
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
            ),
            (
                "NamespaceDeletionContentFailure",
                content_failure,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
            ),
            (
                "NamespaceContentRemaining",
                remaining,
                "ContentRemoved",
                "All content successfully removed",
            ),
            (
                "NamespaceFinalizersRemaining",
                finalizers,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
            ),
        ];
        let old: Vec<Value> = ns
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .map(|a| a.iter().map(Tree::to_value).collect())
            .unwrap_or_default();
        let mut conds = Vec::new();
        for (ty, bad, ok_reason, ok_msg) in wanted {
            let (status, reason, message) = match bad {
                Some((r, m)) => ("True", r.to_string(), m),
                None => ("False", ok_reason.to_string(), ok_msg.to_string()),
            };
            match old.iter().find(|c| c["type"] == ty) {
                Some(o)
                    if o["status"] == status
                        && o["reason"] == reason.as_str()
                        && o["message"] == message.as_str() =>
                {
                    conds.push(o.clone())
                }
                _ => conds.push(
                    json!({"type": ty, "status": status, "lastTransitionTime": now,
                    "reason": reason, "message": message}),
                ),
            }
        }
        if conds == old {
            return Ok(());
        }
        let c = &self.cluster;
        let name = str_at(ns, "/metadata/name");
        c.merge_patch(
            &c.res.namespaces,
            "",
            name,
            Some("status"),
            json!({"status": {"conditions": conds}}),
        )
        .await
        .map(|_| ())
    }

    /// Removes `kubernetes` from `spec.finalizers` (the finalize subresource).
    async fn finalize(&self, name: &str) -> Result<(), ApiError> {
        let c = &self.cluster;
        let cur = c.get(&c.res.namespaces, "", name).await?;
        let fins: Vec<Value> = cur
            .value
            .ptr("/spec/finalizers")
            .and_then(Tree::as_array)
            .map(|a| {
                a.iter()
                    .filter(|f| f.as_str() != Some(FINALIZER))
                    .map(Tree::to_value)
                    .collect()
            })
            .unwrap_or_default();
        let mut obj = cur.value.to_value();
        set_in(&mut obj, &["spec", "finalizers"], Value::Array(fins));
        tracing::debug!(namespace = name, "namespace emptied: finalizing");
        match rest::update(
            &c.server,
            &c.res.namespaces,
            None,
            name,
            Some("finalize"),
            obj,
            &WriteOptions::default(),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

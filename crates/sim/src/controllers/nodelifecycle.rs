//! The node lifecycle controller (pkg/controller/nodelifecycle) and the taint eviction
//! controller (pkg/controller/tainteviction, the former "NoExecute taint manager").
//!
//! **Node health**, every [`NodeLifecycleConfig::monitor_period`] (5 s): a node is alive while its
//! Lease (`kube-node-lease/<node>`, `spec.renewTime`) or its `Ready` condition's
//! `lastHeartbeatTime` keeps changing. When neither changed for the grace period (40 s; 60 s for
//! a node that never posted a `Ready` condition, counted from its creation), its `Ready`,
//! `MemoryPressure`, `DiskPressure` and `PIDPressure` conditions become `Unknown` with reason
//! `NodeStatusUnknown` and message "Kubelet stopped posting node status." (`NodeStatusNeverUpdated`
//! / "Kubelet never posted node status." for conditions never posted). When `Ready` leaves `True`
//! the pods on the node get `Ready=False` (`MarkPodsNotReady`) and a `NodeNotReady` event is
//! recorded. As in the real controller, change is measured by when this controller *observed* a
//! new heartbeat, not by the timestamps' values, so clock skew or old timestamps in a loaded
//! scenario do not condemn a node.
//!
//! **Taints**: `node.kubernetes.io/unreachable:NoExecute` when `Ready` is `Unknown`,
//! `node.kubernetes.io/not-ready:NoExecute` when it is `False` (they replace each other at once),
//! both removed as soon as `Ready` is `True` again. Adding them is rate limited per zone
//! (`topology.kubernetes.io/region`/`zone`) like `--node-eviction-rate` (0.1 node/s), reduced in a
//! zone where at least 55 % of more than 2 nodes are not ready (0.01/s above 50 nodes, else
//! stopped), and stopped altogether with all NoExecute taints removed when every node of every
//! zone is not ready ("master disruption mode": a control-plane outage must not evict the
//! cluster). NoSchedule taints follow the conditions (TaintNodesByCondition): not-ready,
//! unreachable, memory-pressure, disk-pressure, pid-pressure, network-unavailable, and
//! `node.kubernetes.io/unschedulable` for `spec.unschedulable`. Every taint added gets
//! `timeAdded`.
//!
//! **Taint eviction**: a pod on a node with a NoExecute taint it does not tolerate is deleted at
//! once (after a `DisruptionTarget` condition, reason `DeletionByTaintManager`); a pod tolerating
//! every such taint is deleted when the shortest applicable `tolerationSeconds` has passed since
//! the taint's `timeAdded` (or since the pod appeared on the node, if later); a pod tolerating
//! without `tolerationSeconds` stays. With the API server's default 300 s tolerations of
//! `not-ready`/`unreachable`, this is the "5 minute pod eviction timeout" of a dead node.
//!
//! Costs: one pass over the nodes per monitor period (writes only on change), a node's pods are
//! visited only when its NoExecute taints or readiness change, a pod event costs O(taints).

use crate::json::{FastMap, Ptr};
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cluster::{Change, Cluster, ns_name};
use crate::controllers::endpoints::{
    Key, Timers, after, instant_at, is_terminating, key_of, parse_time, period, set_in,
    sleep_until_opt, str_at, uid_of,
};
use crate::error::ApiError;
use crate::rest::DeleteOptions;
use crate::store::{EventType, NsName, Precondition, StoredObject};

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
const NODE_LEASE_NS: &str = "kube-node-lease";
const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";
const WRITE_ATTEMPTS: usize = 5;
const NO_EXECUTE: &str = "NoExecute";
const NO_SCHEDULE: &str = "NoSchedule";

/// Settings of the node lifecycle controller.
#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// `--node-monitor-period`.
    pub monitor_period: Duration,
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
    /// `--node-startup-grace-period`: for nodes that never posted a Ready condition.
    pub startup_grace_period: Duration,
    /// `--node-eviction-rate`: NoExecute taintings per second per healthy zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: in a partially disrupted large zone.
    pub secondary_eviction_rate: f64,
    /// `--large-cluster-size-threshold`.
    pub large_cluster_threshold: usize,
    /// `--unhealthy-zone-threshold`.
    pub unhealthy_zone_threshold: f64,
    /// Run the taint eviction controller (deletes pods for NoExecute taints).
    pub taint_eviction: bool,
    /// Wait before retrying a failed write.
    pub retry_delay: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            taint_eviction: true,
            retry_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Taint {
    key: String,
    value: String,
    effect: String,
    time_added: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Toleration {
    key: String,
    operator: String,
    value: String,
    effect: String,
    seconds: Option<i64>,
}

impl Toleration {
    fn tolerates(&self, t: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != t.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != t.key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == t.value,
            "Exists" => true,
            _ => false,
        }
    }
}

fn taints_of(node: &Tree) -> Vec<Taint> {
    node.ptr("/spec/taints")
        .and_then(Tree::as_array)
        .map(|a| {
            a.iter()
                .map(|t| Taint {
                    key: str_at(t, "/key").to_string(),
                    value: str_at(t, "/value").to_string(),
                    effect: str_at(t, "/effect").to_string(),
                    time_added: t
                        .field("timeAdded")
                        .and_then(Tree::as_str)
                        .and_then(parse_time),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn no_execute_taints(node: &Tree) -> Vec<Taint> {
    taints_of(node)
        .into_iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .collect()
}

fn has_taint(node: &Tree, key: &str, effect: &str) -> bool {
    node.ptr("/spec/taints")
        .and_then(Tree::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|t| str_at(t, "/key") == key && str_at(t, "/effect") == effect)
        })
}

fn condition<'a>(node: &'a Tree, ty: &str) -> Option<&'a Tree> {
    node.ptr("/status/conditions")
        .and_then(Tree::as_array)?
        .iter()
        .find(|c| c["type"].as_str() == Some(ty))
}

/// The status of a node's Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rs {
    True,
    False,
    Unknown,
    Other,
}

impl Rs {
    fn of(cond: &Tree) -> Rs {
        match str_at(cond, "/status") {
            "True" => Rs::True,
            "False" => Rs::False,
            "Unknown" => Rs::Unknown,
            _ => Rs::Other,
        }
    }
}

fn ready_status(node: &Tree) -> Option<Rs> {
    condition(node, "Ready").map(Rs::of)
}

/// `nodetopology.GetZoneKey`.
fn zone_key(node: &Tree) -> String {
    let l = |a: &str, b: &str| {
        let labels = node.ptr("/metadata/labels");
        labels
            .and_then(|m| m.get(a))
            .or_else(|| labels.and_then(|m| m.get(b)))
            .and_then(Tree::as_str)
            .unwrap_or("")
            .to_string()
    };
    let region = l(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = l(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

/// What the controller remembers of a node's heartbeats (`nodeHealthData`).
struct Health {
    probe: DateTime<Utc>,
    ready_transition: DateTime<Utc>,
    /// `lastHeartbeatTime` and `lastTransitionTime` of the Ready condition seen at the last
    /// pass.
    saved_ready: Option<(String, String)>,
    lease_renew: Option<DateTime<Utc>>,
    /// The revision of the Node this pass last looked at, and the Ready status it found:
    /// an unchanged Node brings no new heartbeat, only the Lease may.
    seen: Option<(u64, Rs)>,
}

impl Health {
    /// Takes a newer Lease renewal (`renew`) as a sign of life at `now`; then whether the last
    /// sign of life is more than `grace` old.
    fn renew_and_expired(
        &mut self,
        renew: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> bool {
        if let Some(renew) = renew
            && self.lease_renew.is_none_or(|r| r < renew)
        {
            self.lease_renew = Some(renew);
            self.probe = now;
        }
        chrono::Duration::from_std(grace)
            .ok()
            .and_then(|g| self.probe.checked_add_signed(g))
            .is_some_and(|deadline| now > deadline)
    }
}

struct PodInfo {
    node: String,
    uid: String,
    tolerations: Vec<Toleration>,
    deleting: bool,
    /// When this controller first saw the pod on its node.
    since: DateTime<Utc>,
}

fn pod_info(v: &Tree, since: DateTime<Utc>) -> PodInfo {
    PodInfo {
        node: str_at(v, "/spec/nodeName").to_string(),
        uid: uid_of(v).to_string(),
        tolerations: v
            .ptr("/spec/tolerations")
            .and_then(Tree::as_array)
            .map(|a| {
                a.iter()
                    .map(|t| Toleration {
                        key: str_at(t, "/key").to_string(),
                        operator: str_at(t, "/operator").to_string(),
                        value: str_at(t, "/value").to_string(),
                        effect: str_at(t, "/effect").to_string(),
                        seconds: t.field("tolerationSeconds").and_then(Tree::as_i64),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        deleting: is_terminating(v),
        since,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZoneState {
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A zone's rate-limited tainting queue (`RateLimitedTimedQueue` with a token bucket of burst 1).
struct Tainter {
    queue: VecDeque<String>,
    /// Nodes added and not yet released by [`Tainter::remove`]: a node is tainted once per
    /// outage, as the real unique queue does.
    members: BTreeSet<String>,
    qps: f64,
    /// When the next token is available (`None`: now).
    next_token: Option<Instant>,
}

impl Tainter {
    fn new(qps: f64) -> Self {
        Tainter {
            queue: VecDeque::new(),
            members: BTreeSet::new(),
            qps,
            next_token: None,
        }
    }

    fn add(&mut self, node: &str) -> bool {
        if !self.members.insert(node.to_string()) {
            return false;
        }
        self.queue.push_back(node.to_string());
        true
    }

    fn remove(&mut self, node: &str) {
        if self.members.remove(node) {
            self.queue.retain(|n| n != node);
        }
    }

    fn try_accept(&mut self, now: Instant) -> bool {
        if self.qps <= 0.0 || self.next_token.is_some_and(|t| now < t) {
            return false;
        }
        self.next_token = Some(now.checked_add(period(self.qps)).unwrap_or(now));
        true
    }

    fn swap_limiter(&mut self, qps: f64, now: Instant) {
        if self.qps == qps {
            return;
        }
        let had_token = self.try_accept(now);
        self.qps = qps;
        self.next_token = if qps > 0.0 && !had_token {
            Some(now.checked_add(period(qps)).unwrap_or(now))
        } else {
            None
        };
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() || self.qps <= 0.0 {
            return None;
        }
        Some(self.next_token.unwrap_or(now))
    }
}

struct State {
    cluster: Cluster,
    cfg: NodeLifecycleConfig,
    nodes: BTreeMap<String, Arc<StoredObject>>,
    health: BTreeMap<String, Health>,
    leases: BTreeMap<String, DateTime<Utc>>,
    /// Hashed: looked up for every pod event (walked only in order, after a re-list).
    pods: FastMap<Key, PodInfo>,
    pods_by_node: BTreeMap<String, BTreeSet<Key>>,
    no_execute: BTreeMap<String, Vec<Taint>>,
    /// Node → (zone key, excluded from disruption checks).
    node_zone: BTreeMap<String, (String, bool)>,
    zone_states: BTreeMap<String, ZoneState>,
    tainters: BTreeMap<String, Tainter>,
    evictions: Timers<Key>,
    retry_not_ready: BTreeSet<String>,
    /// Nodes whose NoSchedule taints need a look.
    dirty_nodes: BTreeSet<String>,
    /// Pods whose taint eviction needs a look.
    dirty_pods: BTreeSet<Key>,
    synced: [bool; 3],
}

/// Starts the node lifecycle controller (with the taint eviction controller unless disabled).
pub fn spawn(cluster: Cluster, config: NodeLifecycleConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let res = cluster.res.clone();
        let mut node_rx = cluster.informer_channel(&res.nodes);
        let mut lease_rx = cluster.informer_channel(&res.leases);
        let mut pod_rx = cluster.informer_channel(&res.pods);
        let mut monitor = tokio::time::interval(config.monitor_period);
        monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut st = State {
            cluster,
            cfg: config,
            nodes: BTreeMap::new(),
            health: BTreeMap::new(),
            leases: BTreeMap::new(),
            pods: FastMap::default(),
            pods_by_node: BTreeMap::new(),
            no_execute: BTreeMap::new(),
            node_zone: BTreeMap::new(),
            zone_states: BTreeMap::new(),
            tainters: BTreeMap::new(),
            evictions: Timers::default(),
            retry_not_ready: BTreeSet::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_pods: BTreeSet::new(),
            synced: [false; 3],
        };
        loop {
            let now = Instant::now();
            let tainter_wake = st.tainters.values().filter_map(|t| t.wake_at(now)).min();
            let mut monitor_due = false;
            let mut taint_due = false;
            let mut evict_due = false;
            tokio::select! {
                biased;
                Some(c) = node_rx.recv() => st.on_node(c),
                Some(c) = lease_rx.recv() => st.on_lease(c),
                Some(c) = pod_rx.recv() => st.on_pod(c),
                _ = monitor.tick() => monitor_due = true,
                _ = sleep_until_opt(st.evictions.next()) => evict_due = true,
                _ = sleep_until_opt(tainter_wake) => taint_due = true,
                else => return,
            }
            while let Ok(c) = node_rx.try_recv() {
                st.on_node(c);
            }
            while let Ok(c) = lease_rx.try_recv() {
                st.on_lease(c);
            }
            while let Ok(c) = pod_rx.try_recv() {
                st.on_pod(c);
            }
            if !st.synced.iter().all(|s| *s) {
                continue;
            }
            st.process_dirty().await;
            if monitor_due {
                st.monitor().await;
                taint_due = true;
            }
            if taint_due {
                st.taint_pass().await;
            }
            if evict_due {
                st.evict_due().await;
            }
        }
    })
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        self.cluster.server.clock.now()
    }

    // -- informers

    fn put_node(&mut self, obj: Arc<StoredObject>) {
        let name = str_at(&obj.value, "/metadata/name").to_string();
        let ne = no_execute_taints(&obj.value);
        if self.no_execute.get(&name) != Some(&ne) {
            if let Some(keys) = self.pods_by_node.get(&name) {
                self.dirty_pods.extend(keys.iter().cloned());
            }
            if ne.is_empty() {
                self.no_execute.remove(&name);
            } else {
                self.no_execute.insert(name.clone(), ne);
            }
        }
        let zone = zone_key(&obj.value);
        let excluded = obj
            .value
            .ptr("/metadata/labels")
            .and_then(|l| l.get(EXCLUDE_DISRUPTION))
            .is_some();
        if self
            .node_zone
            .get(&name)
            .is_none_or(|(z, e)| *z != zone || *e != excluded)
        {
            self.node_zone.insert(name.clone(), (zone, excluded));
        }
        self.dirty_nodes.insert(name.clone());
        self.nodes.insert(name, obj);
    }

    fn forget_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.node_zone.remove(name);
        self.health.remove(name);
        self.retry_not_ready.remove(name);
        if self.no_execute.remove(name).is_some()
            && let Some(keys) = self.pods_by_node.get(name)
        {
            self.dirty_pods.extend(keys.iter().cloned());
        }
        for t in self.tainters.values_mut() {
            t.remove(name);
        }
    }

    fn on_node(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[0] = true;
                let present: BTreeSet<String> = items
                    .iter()
                    .map(|o| str_at(&o.value, "/metadata/name").to_string())
                    .collect();
                for n in crate::cluster::absent(self.nodes.keys(), &present) {
                    self.forget_node(&n);
                }
                for o in items {
                    self.put_node(o);
                }
            }
            Change::Event(ev) => {
                let name = str_at(&ev.object.value, "/metadata/name").to_string();
                match ev.kind {
                    EventType::Deleted => self.forget_node(&name),
                    _ => {
                        if self
                            .nodes
                            .get(&name)
                            .is_some_and(|n| n.revision > ev.object.revision)
                        {
                            return;
                        }
                        self.put_node(ev.object.clone());
                    }
                }
            }
        }
    }

    fn on_lease(&mut self, c: Change) {
        let renew = |v: &Tree| {
            v.ptr("/spec/renewTime")
                .and_then(Tree::as_str)
                .and_then(parse_time)
        };
        match c {
            Change::Sync(items) => {
                self.synced[1] = true;
                self.leases.clear();
                for o in items {
                    if o.namespace() == NODE_LEASE_NS
                        && let Some(t) = renew(&o.value)
                    {
                        self.leases
                            .insert(str_at(&o.value, "/metadata/name").to_string(), t);
                    }
                }
            }
            Change::Event(ev) => {
                if ev.object.namespace() != NODE_LEASE_NS {
                    return;
                }
                let name = str_at(&ev.object.value, "/metadata/name").to_string();
                match (ev.kind, renew(&ev.object.value)) {
                    (EventType::Deleted, _) | (_, None) => {
                        self.leases.remove(&name);
                    }
                    (_, Some(t)) => {
                        self.leases.insert(name, t);
                    }
                }
            }
        }
    }

    fn unindex_pod(&mut self, key: &Key, node: &str) {
        if let Some(set) = self.pods_by_node.get_mut(node) {
            set.remove(key);
            if set.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
    }

    fn put_pod(&mut self, v: &Tree) {
        let key = key_of(v);
        let now = self.now();
        let node = str_at(v, "/spec/nodeName");
        let since = match self.pods.get(&key) {
            Some(old) if old.node == node && old.uid == uid_of(v) => old.since,
            _ => now,
        };
        let info = pod_info(v, since);
        if let Some(old) = self.pods.remove(&key) {
            if old.node != info.node {
                self.unindex_pod(&key, &old.node);
            }
            if old.node == info.node
                && old.uid == info.uid
                && old.tolerations == info.tolerations
                && old.deleting == info.deleting
            {
                self.pods.insert(key, info);
                return; // nothing the taint eviction cares about
            }
        }
        if !info.node.is_empty() {
            self.pods_by_node
                .entry(info.node.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key.clone(), info);
        self.dirty_pods.insert(key);
    }

    fn drop_pod(&mut self, key: &Key) {
        if let Some(old) = self.pods.remove(key) {
            self.unindex_pod(key, &old.node);
        }
        self.evictions.cancel(key);
        self.dirty_pods.remove(key);
    }

    fn on_pod(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                self.synced[2] = true;
                let present: BTreeSet<Key> = items.iter().map(|o| key_of(&o.value)).collect();
                for k in crate::cluster::absent(self.pods.keys(), &present) {
                    self.drop_pod(&k);
                }
                for o in items {
                    self.put_pod(&o.value);
                }
            }
            Change::Event(ev) => match ev.kind {
                EventType::Deleted => self.drop_pod(&key_of(&ev.object.value)),
                _ => {
                    // Most pod updates are status changes the taint eviction does not read.
                    if let Some(prev) = &ev.previous
                        && ["/metadata/uid", "/spec/nodeName", "/spec/tolerations"]
                            .iter()
                            .all(|p| prev.value.ptr(p) == ev.object.value.ptr(p))
                        && is_terminating(&prev.value) == is_terminating(&ev.object.value)
                        && self
                            .pods
                            .contains_key(&ns_name(&ev.object.value) as &dyn NsName)
                    {
                        return;
                    }
                    self.put_pod(&ev.object.value)
                }
            },
        }
    }

    // -- NoSchedule taints by condition, and taint eviction bookkeeping

    async fn process_dirty(&mut self) {
        while let Some(name) = self.dirty_nodes.pop_first() {
            if let Err(e) = self.no_schedule_pass(&name).await {
                tracing::debug!(node = %name, error = %e.message, "NoSchedule tainting failed");
            }
        }
        if self.cfg.taint_eviction {
            let keys = std::mem::take(&mut self.dirty_pods);
            for k in keys {
                self.schedule_eviction(&k);
            }
        } else {
            self.dirty_pods.clear();
        }
    }

    /// `doNoScheduleTaintingPass`.
    async fn no_schedule_pass(&mut self, name: &str) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(name) else {
            return Ok(());
        };
        let v = &node.value;
        let mut want: BTreeSet<&str> = BTreeSet::new();
        for c in v
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .unwrap_or_default()
        {
            let key = match (str_at(c, "/type"), str_at(c, "/status")) {
                ("Ready", "False") => TAINT_NOT_READY,
                ("Ready", "Unknown") => TAINT_UNREACHABLE,
                ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
                ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
                ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
                ("PIDPressure", "True") => TAINT_PID_PRESSURE,
                _ => continue,
            };
            want.insert(key);
        }
        if v.ptr("/spec/unschedulable").and_then(Tree::as_bool) == Some(true) {
            want.insert(TAINT_UNSCHEDULABLE);
        }
        let managed = [
            TAINT_NOT_READY,
            TAINT_UNREACHABLE,
            TAINT_MEMORY_PRESSURE,
            TAINT_DISK_PRESSURE,
            TAINT_NETWORK_UNAVAILABLE,
            TAINT_PID_PRESSURE,
            TAINT_UNSCHEDULABLE,
        ];
        let have: BTreeSet<&str> = v
            .ptr("/spec/taints")
            .and_then(Tree::as_array)
            .unwrap_or_default()
            .iter()
            .filter(|t| str_at(*t, "/effect") == NO_SCHEDULE)
            .map(|t| str_at(t, "/key"))
            .filter(|k| managed.contains(k))
            .collect();
        if want == have {
            return Ok(());
        }
        let add: Vec<(&'static str, &str)> = want
            .iter()
            .filter(|k| !have.contains(*k))
            .map(|k| (*k, NO_SCHEDULE))
            .collect();
        let remove: Vec<(&'static str, &str)> = managed
            .iter()
            .filter(|k| have.contains(*k) && !want.contains(*k))
            .map(|k| (*k, NO_SCHEDULE))
            .collect();
        self.swap_taints(name, &add, &remove).await
    }

    /// `SwapNodeControllerTaint`: adds (with `timeAdded`) and removes taints by key and effect.
    async fn swap_taints(
        &mut self,
        name: &str,
        add: &[(&str, &str)],
        remove: &[(&str, &str)],
    ) -> Result<(), ApiError> {
        let c = self.cluster.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let cur = match c.get(&c.res.nodes, "", name).await {
                Ok(o) => o,
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            };
            let old: Vec<Value> = cur
                .value
                .ptr("/spec/taints")
                .and_then(Tree::as_array)
                .map(|a| a.iter().map(Tree::to_value).collect())
                .unwrap_or_default();
            let mut new: Vec<Value> = old
                .iter()
                .filter(|t| {
                    !remove
                        .iter()
                        .any(|(k, e)| str_at(*t, "/key") == *k && str_at(*t, "/effect") == *e)
                })
                .cloned()
                .collect();
            let now = c.server.clock.timestamp();
            for (k, e) in add {
                if !new
                    .iter()
                    .any(|t| str_at(t, "/key") == *k && str_at(t, "/effect") == *e)
                {
                    new.push(json!({"key": k, "effect": e, "timeAdded": now}));
                }
            }
            if new == old {
                return Ok(());
            }
            let mut obj = cur.value.to_value();
            if new.is_empty() {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("taints");
                }
            } else {
                set_in(&mut obj, &["spec", "taints"], Value::Array(new));
            }
            tracing::debug!(node = name, ?add, ?remove, "updating node taints");
            match c.update(&c.res.nodes, obj).await {
                Ok(v) => {
                    self.remember_node(v);
                    return Ok(());
                }
                Err(e) if e.code == 404 => return Ok(()),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale("nodes", name))
    }

    /// Caches a node this controller just wrote (the watch brings the same state later).
    fn remember_node(&mut self, v: Arc<StoredObject>) {
        let name = str_at(&v.value, "/metadata/name");
        if self
            .nodes
            .get(name)
            .is_some_and(|n| n.revision >= v.revision)
        {
            return;
        }
        self.put_node(v);
    }

    /// When a pod must be evicted for its node's NoExecute taints: `None` = never.
    fn eviction_deadline(&self, key: &Key) -> Option<DateTime<Utc>> {
        let p = self.pods.get(key)?;
        if p.deleting || p.node.is_empty() {
            return None;
        }
        let taints = self.no_execute.get(&p.node)?;
        let mut deadline: Option<DateTime<Utc>> = None;
        for t in taints {
            let Some(tol) = p.tolerations.iter().find(|tol| tol.tolerates(t)) else {
                return Some(p.since.min(self.now())); // not tolerated: at once
            };
            let Some(secs) = tol.seconds else { continue };
            let start = t.time_added.map_or(p.since, |a| a.max(p.since));
            // Absurd tolerationSeconds: as good as forever.
            let Some(at) = chrono::Duration::try_seconds(secs.max(0))
                .and_then(|d| start.checked_add_signed(d))
            else {
                continue;
            };
            if deadline.is_none_or(|d| at < d) {
                deadline = Some(at);
            }
        }
        deadline
    }

    fn schedule_eviction(&mut self, key: &Key) {
        match self.eviction_deadline(key) {
            None => self.evictions.cancel(key),
            Some(at) => {
                let when = instant_at(&self.cluster, at);
                if self.evictions.get(key) != Some(when) {
                    self.evictions.set(key.clone(), when);
                }
            }
        }
    }

    async fn evict_due(&mut self) {
        for key in self.evictions.pop_due(Instant::now()) {
            let Some(at) = self.eviction_deadline(&key) else {
                continue;
            };
            if at > self.now() {
                self.evictions
                    .set(key.clone(), instant_at(&self.cluster, at));
                continue;
            }
            if let Err(e) = self.evict(&key).await {
                tracing::debug!(ns = %key.0, pod = %key.1, error = %e.message, "taint eviction failed");
                self.evictions.set(key, after(self.cfg.retry_delay));
            }
        }
    }

    /// Deletes a pod for a NoExecute taint (`addConditionAndDeletePod`).
    async fn evict(&mut self, key: &Key) -> Result<(), ApiError> {
        let Some(uid) = self.pods.get(key).map(|p| p.uid.clone()) else {
            return Ok(());
        };
        let c = self.cluster.clone();
        let pod = match c.get(&c.res.pods, &key.0, &key.1).await {
            Ok(p) if uid_of(&p.value) == uid && !is_terminating(&p.value) => p,
            Ok(_) => return Ok(()),
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        tracing::debug!(ns = %key.0, pod = %key.1, "taint eviction: deleting pod");
        c.event(
            &pod.value,
            "Normal",
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {}/{}", key.0, key.1),
            "taint-eviction-controller",
        )
        .await;
        let mut with_cond = pod.value.to_value();
        let now = c.server.clock.timestamp();
        let cond = json!({"type": "DisruptionTarget", "status": "True", "lastTransitionTime": now,
            "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"});
        let mut conds: Vec<Value> = with_cond
            .ptr("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|x| x["type"] != "DisruptionTarget");
        conds.push(cond);
        set_in(
            &mut with_cond,
            &["status", "conditions"],
            Value::Array(conds),
        );
        // Best effort, as the condition is only informative.
        let _ = c.update_status(&c.res.pods, with_cond).await;
        let opts = DeleteOptions {
            precondition: Precondition {
                uid: Some(uid),
                resource_version: None,
            },
            ..Default::default()
        };
        match c.delete(&c.res.pods, &key.0, &key.1, &opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    // -- node health

    async fn monitor(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let mut zones: BTreeMap<String, Vec<Option<Rs>>> = BTreeMap::new();
        for name in names {
            let (observed, current) = match self.update_health(&name).await {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(node = %name, error = %e.message, "node health update failed");
                    continue;
                }
            };
            let Some((zone, excluded)) = self.node_zone.get(&name).cloned() else {
                continue;
            };
            if !self.tainters.contains_key(&zone) {
                self.tainters
                    .insert(zone.clone(), Tainter::new(self.cfg.eviction_rate));
                self.zone_states.insert(zone.clone(), ZoneState::Initial);
            }
            if !excluded {
                match zones.get_mut(&zone) {
                    Some(list) => list.push(current),
                    None => {
                        zones.insert(zone.clone(), vec![current]);
                    }
                }
            }
            let Some(current) = current else { continue };
            if let Err(e) = self.taint_by_readiness(&name, &zone, observed).await {
                tracing::debug!(node = %name, error = %e.message, "NoExecute taint swap failed");
            }
            let transition = current != Rs::True && observed == Rs::True;
            if transition && let Some(node) = self.nodes.get(&name).cloned() {
                self.cluster
                    .event(
                        &node.value,
                        "Normal",
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                        "node-controller",
                    )
                    .await;
            }
            if transition || (observed != Rs::True && self.retry_not_ready.contains(&name)) {
                match self.mark_pods_not_ready(&name).await {
                    Ok(()) => {
                        self.retry_not_ready.remove(&name);
                    }
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e.message, "marking pods not ready failed");
                        self.retry_not_ready.insert(name.clone());
                    }
                }
            } else if !self.retry_not_ready.is_empty() {
                self.retry_not_ready.remove(&name);
            }
        }
        self.handle_disruption(&zones).await;
    }

    /// `tryUpdateNodeHealth`: returns the Ready status observed before this pass and after it
    /// (`None` when there is none), or `None` when the node is gone.
    async fn update_health(&mut self, name: &str) -> Result<Option<(Rs, Option<Rs>)>, ApiError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(node) = self.nodes.get(name).cloned() else {
                return Ok(None);
            };
            let now = self.now();
            // The Node did not change since the last pass: no new heartbeat in it, the same
            // Ready status; only a renewed Lease can count as a sign of life.
            if let Some(h) = self.health.get_mut(name)
                && let Some((rev, observed)) = h.seen
                && rev == node.revision
            {
                let grace = match observed {
                    Rs::Unknown if h.saved_ready.is_none() => self.cfg.startup_grace_period,
                    _ => self.cfg.grace_period,
                };
                if !h.renew_and_expired(self.leases.get(name).copied(), now, grace) {
                    let current = h.saved_ready.as_ref().map(|_| observed);
                    return Ok(Some((observed, current)));
                }
            }
            let v = &node.value;
            let ready = condition(v, "Ready");
            let beat = ready.map(|r| {
                (
                    str_at(r, "/lastHeartbeatTime"),
                    str_at(r, "/lastTransitionTime"),
                )
            });
            let (observed, grace) = match ready {
                Some(r) => (Rs::of(r), self.cfg.grace_period),
                None => (Rs::Unknown, self.cfg.startup_grace_period),
            };
            let renew = self.leases.get(name).copied();
            let h = match self.health.get_mut(name) {
                Some(h) => {
                    match (&h.saved_ready, beat) {
                        (None, Some((b, t))) => {
                            h.probe = now;
                            h.ready_transition = now;
                            h.saved_ready = Some((b.to_string(), t.to_string()));
                        }
                        (Some(_), None) => {
                            h.probe = now;
                            h.ready_transition = now;
                            h.saved_ready = None;
                        }
                        (Some((sb, st)), Some((b, t))) if sb != b => {
                            h.probe = now;
                            if st != t {
                                h.ready_transition = now;
                            }
                            h.saved_ready = Some((b.to_string(), t.to_string()));
                        }
                        _ => {}
                    }
                    h
                }
                None => {
                    // First sight: a node that never reported counts from its creation.
                    let start = match beat {
                        Some(_) => now,
                        None => parse_time(str_at(v, "/metadata/creationTimestamp")).unwrap_or(now),
                    };
                    self.health.entry(name.to_string()).or_insert(Health {
                        probe: start,
                        ready_transition: start,
                        saved_ready: beat.map(|(b, t)| (b.to_string(), t.to_string())),
                        lease_renew: None,
                        seen: None,
                    })
                }
            };
            let expired = h.renew_and_expired(renew, now, grace);
            if !expired {
                h.seen = Some((node.revision, observed));
                return Ok(Some((observed, ready.map(Rs::of))));
            }
            // Heartbeats stopped: every condition the kubelet owns becomes Unknown.
            let ts = self.cluster.server.clock.timestamp();
            let created = str_at(v, "/metadata/creationTimestamp");
            let mut conds: Vec<Value> = v
                .ptr("/status/conditions")
                .and_then(Tree::as_array)
                .map(|a| a.iter().map(Tree::to_value).collect())
                .unwrap_or_default();
            for ty in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                match conds.iter_mut().find(|c| c["type"] == ty) {
                    None => conds.push(json!({"type": ty, "status": "Unknown",
                        "lastHeartbeatTime": created, "lastTransitionTime": ts,
                        "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status."})),
                    Some(c) => {
                        if c["status"] != "Unknown" {
                            c["status"] = json!("Unknown");
                            c["reason"] = json!("NodeStatusUnknown");
                            c["message"] = json!("Kubelet stopped posting node status.");
                            c["lastTransitionTime"] = json!(ts);
                        }
                    }
                }
            }
            let unchanged = match (conds.iter().find(|c| c["type"] == "Ready"), ready) {
                (Some(new), Some(old)) => new == old,
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                return Ok(Some((observed, Some(Rs::Unknown))));
            }
            let mut obj = v.to_value();
            set_in(&mut obj, &["status", "conditions"], Value::Array(conds));
            tracing::debug!(
                node = name,
                "node stopped posting status: conditions Unknown"
            );
            let c = self.cluster.clone();
            match c.update_status(&c.res.nodes, obj).await {
                Ok(written) => {
                    if let Some(h) = self.health.get_mut(name) {
                        h.saved_ready = condition(&written.value, "Ready").map(|r| {
                            (
                                str_at(r, "/lastHeartbeatTime").to_string(),
                                str_at(r, "/lastTransitionTime").to_string(),
                            )
                        });
                        h.ready_transition = now;
                    }
                    self.remember_node(written);
                    return Ok(Some((observed, Some(Rs::Unknown))));
                }
                Err(e) if e.code == 404 => {
                    self.forget_node(name);
                    return Ok(None);
                }
                Err(e) if e.code == 409 => {
                    // Probably a fresh heartbeat: look again at the current node.
                    match c.get(&c.res.nodes, "", name).await {
                        Ok(o) => {
                            if self
                                .nodes
                                .get(name)
                                .is_none_or(|n| n.revision <= o.revision)
                            {
                                self.put_node(o);
                            }
                        }
                        Err(e) if e.code == 404 => {
                            self.forget_node(name);
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale("nodes", name))
    }

    /// `processTaintBaseEviction`.
    async fn taint_by_readiness(
        &mut self,
        name: &str,
        zone: &str,
        observed: Rs,
    ) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(name).cloned() else {
            return Ok(());
        };
        let v = &node.value;
        match observed {
            Rs::False => {
                if has_taint(v, TAINT_UNREACHABLE, NO_EXECUTE) {
                    self.swap_taints(
                        name,
                        &[(TAINT_NOT_READY, NO_EXECUTE)],
                        &[(TAINT_UNREACHABLE, NO_EXECUTE)],
                    )
                    .await?;
                } else if let Some(t) = self.tainters.get_mut(zone) {
                    t.add(name);
                }
            }
            Rs::Unknown => {
                if has_taint(v, TAINT_NOT_READY, NO_EXECUTE) {
                    self.swap_taints(
                        name,
                        &[(TAINT_UNREACHABLE, NO_EXECUTE)],
                        &[(TAINT_NOT_READY, NO_EXECUTE)],
                    )
                    .await?;
                } else if let Some(t) = self.tainters.get_mut(zone) {
                    t.add(name);
                }
            }
            Rs::True => self.mark_reachable(name).await?,
            Rs::Other => {}
        }
        Ok(())
    }

    /// `markNodeAsReachable`: removes both NoExecute taints and forgets the tainting.
    async fn mark_reachable(&mut self, name: &str) -> Result<(), ApiError> {
        for t in self.tainters.values_mut() {
            t.remove(name);
        }
        let Some(node) = self.nodes.get(name) else {
            return Ok(());
        };
        if !has_taint(&node.value, TAINT_UNREACHABLE, NO_EXECUTE)
            && !has_taint(&node.value, TAINT_NOT_READY, NO_EXECUTE)
        {
            return Ok(());
        }
        self.swap_taints(
            name,
            &[],
            &[
                (TAINT_UNREACHABLE, NO_EXECUTE),
                (TAINT_NOT_READY, NO_EXECUTE),
            ],
        )
        .await
    }

    /// `doNoExecuteTaintingPass`: taints queued nodes as the zones' rate limits allow.
    async fn taint_pass(&mut self) {
        let zones: Vec<String> = self.tainters.keys().cloned().collect();
        for zone in zones {
            loop {
                let now = Instant::now();
                let Some(t) = self.tainters.get_mut(&zone) else {
                    break;
                };
                if t.queue.is_empty() || !t.try_accept(now) {
                    break;
                }
                let Some(name) = t.queue.pop_front() else {
                    break;
                };
                let Some(node) = self.nodes.get(&name).cloned() else {
                    continue;
                };
                let (add, opposite) = match ready_status(&node.value) {
                    Some(Rs::False) => (TAINT_NOT_READY, TAINT_UNREACHABLE),
                    Some(Rs::Unknown) => (TAINT_UNREACHABLE, TAINT_NOT_READY),
                    _ => continue, // ready again (or never reported): nothing to do
                };
                tracing::debug!(node = %name, taint = add, "tainting unhealthy node");
                if let Err(e) = self
                    .swap_taints(&name, &[(add, NO_EXECUTE)], &[(opposite, NO_EXECUTE)])
                    .await
                {
                    tracing::debug!(node = %name, error = %e.message, "NoExecute tainting failed; requeued");
                    if let Some(t) = self.tainters.get_mut(&zone) {
                        t.queue.push_back(name);
                    }
                }
            }
        }
    }

    /// `MarkPodsNotReady`: the pods of a node that stopped being Ready lose their readiness.
    async fn mark_pods_not_ready(&mut self, node: &str) -> Result<(), ApiError> {
        let keys: Vec<Key> = self
            .pods_by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let c = self.cluster.clone();
        let mut failed = None;
        for key in keys {
            for _ in 0..WRITE_ATTEMPTS {
                let pod = match c.get(&c.res.pods, &key.0, &key.1).await {
                    Ok(p) => p,
                    Err(e) if e.code == 404 => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if str_at(&pod.value, "/spec/nodeName") != node {
                    break;
                }
                let mut v = pod.value.to_value();
                let Some(conds) = v
                    .pointer_mut("/status/conditions")
                    .and_then(Value::as_array_mut)
                else {
                    break;
                };
                let Some(ready) = conds.iter_mut().find(|x| x["type"] == "Ready") else {
                    break;
                };
                if ready["status"] == "False" {
                    break;
                }
                ready["status"] = json!("False");
                ready["lastTransitionTime"] = json!(c.server.clock.timestamp());
                match c.update_status(&c.res.pods, v).await {
                    Ok(_) => {
                        c.event(
                            &pod.value,
                            "Warning",
                            "NodeNotReady",
                            "Node is not ready",
                            "node-controller",
                        )
                        .await;
                        break;
                    }
                    Err(e) if e.code == 404 => break,
                    Err(e) if e.code == 409 => continue,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn zone_qps(&self, size: usize, state: ZoneState) -> f64 {
        match state {
            ZoneState::PartialDisruption => {
                if size > self.cfg.large_cluster_threshold {
                    self.cfg.secondary_eviction_rate
                } else {
                    0.0
                }
            }
            _ => self.cfg.eviction_rate,
        }
    }

    /// `handleDisruption`: zone states and the tainting rate limits that follow from them.
    async fn handle_disruption(&mut self, zones: &BTreeMap<String, Vec<Option<Rs>>>) {
        let mut new_states = BTreeMap::new();
        let mut all_full = true;
        for (zone, conds) in zones {
            let ready = conds.iter().filter(|c| **c == Some(Rs::True)).count();
            let not_ready = conds.len() - ready;
            let state = if ready == 0 && not_ready > 0 {
                ZoneState::FullDisruption
            } else if not_ready > 2
                && not_ready as f64 / conds.len() as f64 >= self.cfg.unhealthy_zone_threshold
            {
                ZoneState::PartialDisruption
            } else {
                ZoneState::Normal
            };
            if state != ZoneState::FullDisruption {
                all_full = false;
            }
            new_states.insert(zone.clone(), state);
            self.zone_states
                .entry(zone.clone())
                .or_insert(ZoneState::Initial);
        }
        self.zone_states.retain(|z, _| zones.contains_key(z));
        let all_was_full = self
            .zone_states
            .values()
            .all(|s| *s == ZoneState::FullDisruption);
        if all_full && all_was_full {
            return;
        }
        let now = Instant::now();
        if all_full {
            tracing::debug!("all nodes are not ready: entering master disruption mode");
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for n in names {
                if let Err(e) = self.mark_reachable(&n).await {
                    tracing::debug!(node = %n, error = %e.message, "removing NoExecute taints failed");
                }
            }
            for t in self.tainters.values_mut() {
                t.swap_limiter(0.0, now);
            }
            for s in self.zone_states.values_mut() {
                *s = ZoneState::FullDisruption;
            }
            return;
        }
        if all_was_full {
            tracing::debug!("some nodes are ready: leaving master disruption mode");
            let t = self.now();
            for h in self.health.values_mut() {
                h.probe = t;
                h.ready_transition = t;
            }
        }
        let zone_names: Vec<String> = self.zone_states.keys().cloned().collect();
        for zone in zone_names {
            let new = new_states.get(&zone).copied().unwrap_or(ZoneState::Normal);
            if !all_was_full && self.zone_states.get(&zone) == Some(&new) {
                continue;
            }
            let size = zones.get(&zone).map_or(0, Vec::len);
            let qps = self.zone_qps(size, new);
            if let Some(t) = self.tainters.get_mut(&zone) {
                t.swap_limiter(qps, now);
            }
            self.zone_states.insert(zone, new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: &str, effect: &str) -> Toleration {
        Toleration {
            key: key.into(),
            operator: op.into(),
            value: String::new(),
            effect: effect.into(),
            seconds: None,
        }
    }

    #[test]
    fn toleration_matching() {
        let t = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        assert!(tol(TAINT_UNREACHABLE, "Exists", NO_EXECUTE).tolerates(&t));
        assert!(tol("", "Exists", "").tolerates(&t));
        assert!(tol(TAINT_UNREACHABLE, "Equal", "").tolerates(&t));
        assert!(!tol(TAINT_NOT_READY, "Exists", NO_EXECUTE).tolerates(&t));
        assert!(!tol(TAINT_UNREACHABLE, "Exists", NO_SCHEDULE).tolerates(&t));
    }

    #[test]
    fn token_bucket_with_burst_one() {
        let now = Instant::now();
        let mut t = Tainter::new(0.1);
        assert!(t.add("a") && t.add("b") && !t.add("a"));
        assert!(t.try_accept(now));
        assert!(!t.try_accept(now + Duration::from_secs(9)));
        assert!(t.try_accept(now + Duration::from_secs(10)));
        t.swap_limiter(0.0, now);
        assert!(!t.try_accept(now + Duration::from_secs(100)));
        assert_eq!(t.wake_at(now), None);
    }

    #[test]
    fn zone_keys() {
        let n = json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "a"}}});
        assert_eq!(zone_key(&Tree::from(&n)), ":\u{0}:a");
        assert_eq!(zone_key(&Tree::from(json!({"metadata": {}}))), "");
    }
}

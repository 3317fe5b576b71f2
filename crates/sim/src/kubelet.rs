//! Kubelets: a KWOK-like fleet that runs one kubelet per powered-on [`crate::machines`] machine,
//! all multiplexed in ONE task ([`spawn_kubelets`]) so that 5,000 nodes and 150,000 pods stay
//! cheap: a timer queue, per-node and per-pod indices, O(log n) work per event.
//!
//! What each kubelet does, as the real one does it through the API:
//! - **Registration** at every boot: creates its Node (labels, registration taints, capacity,
//!   addresses, nodeInfo with a fresh bootID, conditions, daemonEndpoints) or, when the Node
//!   exists, updates its status (a reimaged machine shows its new osImage/kernel/kubelet). The
//!   Node of a machine that is off stays as it was.
//! - **Heartbeats**: renews Lease `kube-node-lease/<node>` every 10 s (`leaseDurationSeconds` 40);
//!   posts Node conditions when they change (checked every 10 s) and at least every 5 minutes.
//! - **Pods** bound to its node: `Pending`/`ContainerCreating` → `Running` with a pod IP from the
//!   node's podCIDR once the image is pulled → `Ready` after the pod's start-up delay
//!   (annotation [`STARTUP_ANNOTATION`], else [`KubeletConfig::startup`]); host-network pods take
//!   the node's IP. Optional crash loops ([`CRASH_ANNOTATION`]) and completion
//!   ([`COMPLETE_ANNOTATION`], pods whose restartPolicy is not `Always`).
//! - **Static pods**: a control-plane machine runs kube-apiserver, kube-controller-manager,
//!   kube-scheduler and etcd and publishes their mirror pods in `kube-system`.
//! - **Termination**: a pod with a deletionTimestamp keeps running until its containers exit,
//!   `min(grace period, exit delay)` ([`EXIT_ANNOTATION`], else [`KubeletConfig::exit`]), then the
//!   kubelet deletes it with grace 0 and a uid precondition.
//! - **Power off**: the kubelet and its pods die at once (see [`RunningView`]); the API keeps
//!   showing them Running until the node lifecycle controller acts. At the next boot, pods still
//!   bound to the node restart (restartCount + 1), deleted ones are confirmed gone.
//!
//! Not modelled: probes other than the start-up delay, init containers, volumes, resource
//! pressure and kubelet-side eviction, image garbage collection, per-container differences (all
//! containers of a pod share one state).
//!
//! [`spawn_termination_confirmer`] is the older stand-in for API-only use (no machines): it only
//! confirms graceful deletions.

use crate::json::{FastMap, Json, object};
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cluster::{Change, Cluster, ns_name};
use crate::machines::{
    FailureMode, MachineView, Machines, PodRuntime, PowerState, RunningView, fnv, parse_cidr,
};
use crate::rest::{self, DeleteOptions};
use crate::server::{ApiServer, format_time};
use crate::store::{EventType, ListOptions, Precondition, StoredObject};

/// How long a terminating pod's containers take to exit after SIGTERM, capped by the pod's grace
/// period: `None` means they never exit early and run the full grace period.
#[derive(Clone, Copy, Debug)]
pub struct TerminationPolicy {
    pub exit_after: Option<Duration>,
}

impl Default for TerminationPolicy {
    fn default() -> Self {
        TerminationPolicy {
            exit_after: Some(Duration::from_secs(1)),
        }
    }
}

/// Watches pods and confirms each graceful deletion once its containers have exited.
/// Runs until the store's watch ends; returns its task.
pub fn spawn_termination_confirmer(
    server: Arc<ApiServer>,
    policy: TerminationPolicy,
) -> tokio::task::JoinHandle<()> {
    spawn_termination_confirmer_except(server, policy, Arc::new(|_: &str| false))
}

/// Like [`spawn_termination_confirmer`], but leaves alone the pods bound to nodes for which
/// `managed` is true (for example [`Machines::manages`]: the kubelet fleet confirms those, and
/// not while their machine is off).
pub fn spawn_termination_confirmer_except(
    server: Arc<ApiServer>,
    policy: TerminationPolicy,
    managed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(pods) = server.registry.lookup("", "v1", "pods") else {
            return;
        };
        loop {
            let Ok(snapshot) = server
                .store
                .list(&pods.key(), &ListOptions::default())
                .await
            else {
                return;
            };
            // Pods whose confirmation is already scheduled: uid -> grace period it was scheduled for.
            let mut scheduled = std::collections::HashMap::new();
            for p in &snapshot.items {
                schedule(&server, &pods, &p.value, policy, &managed, &mut scheduled);
            }
            let Ok(mut stream) = server
                .store
                .watch(&pods.key(), None, snapshot.revision)
                .await
            else {
                return;
            };
            while let Some(batch) = stream.next().await {
                let Ok(events) = batch else { break }; // fell behind: re-list
                for ev in events {
                    match ev.kind {
                        EventType::Modified => schedule(
                            &server,
                            &pods,
                            &ev.object.value,
                            policy,
                            &managed,
                            &mut scheduled,
                        ),
                        EventType::Deleted => {
                            if let Some(uid) =
                                ev.object.value.ptr("/metadata/uid").and_then(Tree::as_str)
                            {
                                scheduled.remove(uid);
                            }
                        }
                        EventType::Added => {}
                    }
                }
            }
        }
    })
}

fn schedule(
    server: &Arc<ApiServer>,
    pods: &crate::registry::ResourceInfo,
    pod: &Tree,
    policy: TerminationPolicy,
    managed: &Arc<dyn Fn(&str) -> bool + Send + Sync>,
    scheduled: &mut std::collections::HashMap<String, i64>,
) {
    if pod
        .ptr("/spec/nodeName")
        .and_then(Tree::as_str)
        .is_some_and(|n| managed(n))
    {
        return;
    }
    let Some(grace) = pod
        .ptr("/metadata/deletionGracePeriodSeconds")
        .and_then(Tree::as_i64)
        .filter(|g| *g > 0)
    else {
        return;
    };
    let full = Duration::from_secs(grace as u64);
    let wait = policy.exit_after.map_or(full, |e| e.min(full));
    let ns = pod
        .ptr("/metadata/namespace")
        .and_then(Tree::as_str)
        .unwrap_or("")
        .to_string();
    let name = pod
        .ptr("/metadata/name")
        .and_then(Tree::as_str)
        .unwrap_or("")
        .to_string();
    let uid = pod
        .ptr("/metadata/uid")
        .and_then(Tree::as_str)
        .map(str::to_string);
    if let Some(u) = &uid {
        if scheduled.get(u).is_some_and(|g| *g <= grace) {
            return; // already scheduled at least as early
        }
        scheduled.insert(u.clone(), grace);
    }
    let server = server.clone();
    let pods = pods.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let opts = DeleteOptions {
            grace_period: Some(0),
            precondition: Precondition {
                resource_version: None,
                uid,
            },
            ..Default::default()
        };
        // NotFound or a uid mismatch means someone else finished it: nothing to do.
        let _ = rest::delete(&server, &pods, Some(&ns), &name, &opts).await;
    });
}

// ----------------------------------------------------------------------------------------------
// the kubelet fleet

/// Per-pod start-up delay in seconds (image pull included): the pod is Ready this long after its
/// kubelet starts it.
pub const STARTUP_ANNOTATION: &str = "sim.theseus.io/startup-seconds";
/// Seconds the containers take to exit after a graceful deletion (`0`: at once), capped by the
/// grace period.
pub const EXIT_ANNOTATION: &str = "sim.theseus.io/exit-seconds";
/// The containers crash after running this many seconds, then restart with the kubelet's
/// back-off (0 s, 10 s, 20 s, ... 300 s).
pub const CRASH_ANNOTATION: &str = "sim.theseus.io/crash-every-seconds";
/// The containers finish successfully after running this many seconds (restartPolicy
/// `OnFailure`/`Never` only): the pod becomes `Succeeded`.
pub const COMPLETE_ANNOTATION: &str = "sim.theseus.io/complete-seconds";
/// The annotation that marks a mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Timing of the simulated kubelets.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// Default start-up delay of a pod (Ready this long after its kubelet starts it).
    pub startup: Duration,
    /// Image pull: the part of the start-up a pod spends in ContainerCreating (capped by its
    /// start-up delay).
    pub image_pull: Duration,
    /// Default time containers take to exit after a graceful deletion.
    pub exit: Duration,
    /// Lease renewal (and Node status check) interval: `nodeLeaseRenewInterval`, 10 s.
    pub lease_renew_interval: Duration,
    /// `leaseDurationSeconds` of the node Lease: 40.
    pub lease_duration_seconds: i64,
    /// Node status is posted at least this often even when unchanged: 5 minutes.
    pub status_report_frequency: Duration,
    /// First crash-loop back-off after the immediate restart, doubled up to the maximum.
    pub crash_backoff: Duration,
    pub crash_backoff_max: Duration,
    /// Image registry of the control-plane static pods.
    pub image_registry: String,
    /// Wait before retrying a failed API call.
    pub retry: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            startup: Duration::from_secs(2),
            image_pull: Duration::from_secs(1),
            exit: Duration::from_secs(1),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_report_frequency: Duration::from_secs(300),
            crash_backoff: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            image_registry: "registry.k8s.io".into(),
            retry: Duration::from_secs(1),
        }
    }
}

/// Starts the kubelet fleet of `machines`: one task that runs the kubelet of every powered-on
/// machine, runs forever and updates `machines.running_view()`.
pub fn spawn_kubelets(
    cluster: Cluster,
    machines: Machines,
    cfg: KubeletConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let fleet = Fleet {
            view: machines.running_view(),
            c: cluster,
            machines,
            cfg,
            nodes: BTreeMap::new(),
            pods: FastMap::default(),
            by_node: BTreeMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            synced: false,
            writes: 0,
        };
        fleet.run().await;
    })
}

type PodKey = (String, String);

/// Most informer changes handled before timers get a turn.
const DRAIN: usize = 4096;
/// Most timers fired before informer changes get a turn.
const TIMER_BUDGET: usize = 20_000;
/// API writes between two yields to the other tasks: the informers (this fleet's own included)
/// must keep up with the writes, or they fall out of the watch history and re-list.
const WRITES_PER_YIELD: u64 = 128;
/// A container that ran this long resets its crash back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Known, but no kubelet is acting on it (node down, or not started yet).
    Idle,
    /// Sandbox and image: ContainerCreating.
    Creating,
    /// Containers running (`ready` says whether they are ready).
    Running,
    /// Crashed, waiting for the restart back-off.
    BackOff,
    /// Containers exited after a deletion; waiting for the pod to leave the store.
    Exited,
    /// Succeeded or Failed.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    fn parse(s: Option<&str>) -> Phase {
        match s {
            Some("Pending") | None => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some(_) => Phase::Unknown,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

/// The pod status last seen in the API.
#[derive(Clone, Debug)]
struct Seen {
    phase: Phase,
    ready: bool,
    ip: Option<String>,
    started_at: Option<String>,
    restarts: i64,
    start_time: Option<String>,
}

/// Conditions the kubelet owns, in the order the real one writes them (PodScheduled last).
const COND_TYPES: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

struct PodRec {
    uid: String,
    node: String,
    /// (name, image, image ID) of each container.
    containers: Vec<(String, String, String)>,
    host_network: bool,
    restart: Restart,
    mirror: bool,
    startup: Duration,
    exit: Duration,
    crash_every: Option<Duration>,
    complete_after: Option<Duration>,
    stage: Stage,
    ready: bool,
    /// Lifecycle timers carry the generation they were set in; a transition bumps it.
    generation: u64,
    exit_gen: u64,
    exit_at: Option<Instant>,
    /// Grace period of a requested deletion.
    deleting: Option<i64>,
    started_once: bool,
    /// The next container start is a restart (the machine died under it).
    restart_pending: bool,
    restarts: i64,
    crashes: u32,
    ip: Option<String>,
    ip_slot: Option<u32>,
    start_time: Option<String>,
    ctr_started: Option<String>,
    ctr_started_at: Option<Instant>,
    last_term: Option<Value>,
    final_phase: Phase,
    final_state: Option<Value>,
    ready_at: Option<Instant>,
    /// (status, lastTransitionTime as Unix seconds) of each of [`COND_TYPES`].
    conds: [(bool, i64); 4],
    scheduled_time: Option<String>,
    /// Conditions written by others (DisruptionTarget, ...), kept as they are.
    foreign: Vec<Tree>,
    /// Revision of the kubelet's last status write: older events are echoes.
    written_rev: u64,
    seen: Seen,
}

fn ann<'a, V: Json>(v: &'a V, key: &str) -> Option<&'a str> {
    v.ptr("/metadata/annotations")
        .and_then(|a| a.field(key))
        .and_then(Json::as_str)
}

fn ann_secs<V: Json>(v: &V, key: &str) -> Option<Duration> {
    ann(v, key)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

fn str_at<V: Json>(v: &V, ptr: &str) -> Option<String> {
    v.ptr(ptr).and_then(Json::as_str).map(str::to_string)
}

/// The string under `key` of an object (`v[key] == s` is `text(v, key) == Some(s)`).
fn text<'a, V: Json>(v: &'a V, key: &str) -> Option<&'a str> {
    v.field(key).and_then(Json::as_str)
}

fn seen_of(v: &Tree) -> Seen {
    let ready = v
        .ptr("/status/conditions")
        .and_then(Tree::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"].as_str() == Some("Ready") && c["status"].as_str() == Some("True"));
    let statuses = v.ptr("/status/containerStatuses").and_then(Tree::as_array);
    Seen {
        phase: Phase::parse(v.ptr("/status/phase").and_then(Tree::as_str)),
        ready,
        ip: str_at(v, "/status/podIP").filter(|s| !s.is_empty()),
        started_at: statuses
            .and_then(|s| s.first())
            .and_then(|c| c.ptr("/state/running/startedAt"))
            .and_then(Tree::as_str)
            .map(str::to_string),
        restarts: statuses
            .into_iter()
            .flatten()
            .filter_map(|c| c.field("restartCount").and_then(Tree::as_i64))
            .max()
            .unwrap_or(0),
        start_time: str_at(v, "/status/startTime"),
    }
}

fn foreign_conditions(v: &Tree) -> Vec<Tree> {
    v.ptr("/status/conditions")
        .and_then(Tree::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.field("type")
                .and_then(Tree::as_str)
                .is_some_and(|t| t != "PodScheduled" && !COND_TYPES.contains(&t))
        })
        .cloned()
        .collect()
}

fn deletion_of(v: &Tree) -> Option<i64> {
    v.ptr("/metadata/deletionTimestamp")?;
    Some(
        v.ptr("/metadata/deletionGracePeriodSeconds")
            .and_then(Tree::as_i64)
            .unwrap_or(0)
            .max(0),
    )
}

impl PodRec {
    fn from_api(v: &Tree, node: &str, cfg: &KubeletConfig, now: i64) -> PodRec {
        let containers = v
            .ptr("/spec/containers")
            .and_then(Tree::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let image = c.field("image").and_then(Tree::as_str).unwrap_or("");
                (
                    c.field("name")
                        .and_then(Tree::as_str)
                        .unwrap_or("")
                        .to_string(),
                    image.to_string(),
                    image_id(image),
                )
            })
            .collect();
        let restart = match v.ptr("/spec/restartPolicy").and_then(Tree::as_str) {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        };
        let seen = seen_of(v);
        let (stage, final_phase) = match seen.phase {
            Phase::Succeeded => (Stage::Done, Phase::Succeeded),
            Phase::Failed => (Stage::Done, Phase::Failed),
            _ => (Stage::Idle, Phase::Pending),
        };
        let scheduled_time = v
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["type"].as_str() == Some("PodScheduled"))
            .and_then(|c| c.field("lastTransitionTime"))
            .and_then(Tree::as_str)
            .map(str::to_string);
        PodRec {
            uid: str_at(v, "/metadata/uid").unwrap_or_default(),
            node: node.to_string(),
            containers,
            host_network: v.ptr("/spec/hostNetwork").and_then(Tree::as_bool) == Some(true),
            restart,
            mirror: ann(v, MIRROR_ANNOTATION).is_some(),
            startup: ann_secs(v, STARTUP_ANNOTATION).unwrap_or(cfg.startup),
            exit: ann_secs(v, EXIT_ANNOTATION).unwrap_or(cfg.exit),
            crash_every: ann_secs(v, CRASH_ANNOTATION).filter(|d| !d.is_zero()),
            complete_after: ann_secs(v, COMPLETE_ANNOTATION).filter(|_| restart != Restart::Always),
            stage,
            ready: false,
            generation: 0,
            exit_gen: 0,
            exit_at: None,
            deleting: deletion_of(v),
            started_once: false,
            restart_pending: false,
            restarts: seen.restarts,
            crashes: 0,
            ip: None,
            ip_slot: None,
            start_time: seen.start_time.clone(),
            ctr_started: None,
            ctr_started_at: None,
            last_term: None,
            final_phase,
            final_state: None,
            ready_at: None,
            conds: [(false, now); 4],
            scheduled_time,
            foreign: foreign_conditions(v),
            written_rev: 0,
            seen,
        }
    }

    /// (phase, ready) the kubelet wants the API to show, when it owns the status now.
    fn desired(&self) -> Option<(Phase, bool)> {
        match self.stage {
            Stage::Idle | Stage::Exited => None,
            Stage::Creating if self.started_once => Some((Phase::Running, false)),
            Stage::Creating => Some((Phase::Pending, false)),
            Stage::Running => Some((Phase::Running, self.ready)),
            Stage::BackOff => Some((Phase::Running, false)),
            Stage::Done => Some((self.final_phase, false)),
        }
    }
}

struct NodeRec {
    m: MachineView,
    /// The kubelet process runs (the machine is on).
    running: bool,
    /// Bumped when the kubelet starts or stops; node timers carry it.
    epoch: u64,
    boot_id: String,
    /// Registration done in this run of the kubelet: pods may start.
    booted: bool,
    /// The Node object exists (as far as the kubelet knows).
    exists: bool,
    uid: String,
    /// The Lease's ownerReference points at the current Node object.
    lease_owned: bool,
    not_ready: bool,
    /// Pod CIDR: (network, size).
    cidr: (u32, u32),
    used: BTreeSet<u32>,
    next_slot: u32,
    last_report: Instant,
    /// (revision of the Node, `not_ready`) whose conditions were last found to agree with the
    /// kubelet's: an unchanged Node need not be compared again.
    checked: Option<(u64, bool)>,
    /// The Lease as last written (the real kubelet renews from its copy, with an update).
    lease: Option<Arc<StoredObject>>,
}

impl NodeRec {
    fn new(m: &MachineView, not_ready: bool, now: Instant) -> NodeRec {
        NodeRec {
            cidr: parse_cidr(&m.spec.pod_cidr).unwrap_or((0x0AF4_0000, 256)),
            m: m.clone(),
            running: false,
            epoch: 0,
            boot_id: String::new(),
            booted: false,
            exists: false,
            uid: String::new(),
            lease_owned: false,
            not_ready,
            used: BTreeSet::new(),
            next_slot: 0,
            last_report: now,
            checked: None,
            lease: None,
        }
    }

    fn active(&self) -> bool {
        self.running && self.booted
    }

    fn ip(&self) -> &str {
        &self.m.spec.internal_ip
    }

    fn alloc(&mut self) -> Option<u32> {
        let usable = self.cidr.1.saturating_sub(3);
        for _ in 0..usable {
            let s = 2 + self.next_slot % usable;
            self.next_slot = self.next_slot.wrapping_add(1);
            if self.used.insert(s) {
                return Some(s);
            }
        }
        None
    }

    fn slot_of(&self, ip: &str) -> Option<u32> {
        let a = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let off = a.checked_sub(self.cidr.0)?;
        (off >= 2 && off < self.cidr.1.saturating_sub(1)).then_some(off)
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Run,
    Ready,
    Crash,
    Restart,
    Complete,
    Sync,
}

enum Timer {
    Register(String, u64),
    Heartbeat(String, u64),
    Mirrors(String, u64),
    Pod(PodKey, u64, Step),
    Exit(PodKey, u64),
}

struct Fleet {
    c: Cluster,
    machines: Machines,
    view: RunningView,
    cfg: KubeletConfig,
    nodes: BTreeMap<String, NodeRec>,
    /// Hashed (looked up for every pod event; walked only in order, after a re-list). Boxed:
    /// a record is large, and a hash table keeps spare slots.
    pods: FastMap<PodKey, Box<PodRec>>,
    by_node: BTreeMap<String, BTreeSet<PodKey>>,
    timers: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
    synced: bool,
    writes: u64,
}

fn ts(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map(format_time)
        .unwrap_or_default()
}

/// 64 hex digits derived from a seed, for container ids and image digests.
fn hex64(seed: u64) -> String {
    let mut s = seed;
    let mut out = String::with_capacity(64);
    for _ in 0..4 {
        out.push_str(&format!("{:016x}", crate::server::splitmix64(&mut s)));
    }
    out
}

fn image_id(image: &str) -> String {
    let repo = match image.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => image,
    };
    format!("{repo}@sha256:{}", hex64(fnv(image.as_bytes())))
}

impl Fleet {
    async fn run(mut self) {
        let notify = self.machines.notifier();
        let mut rx = self.c.informer_channel(&self.c.res.pods);
        let mut started = false;
        loop {
            let next = self.timers.keys().next().map(|k| k.0);
            tokio::select! {
                biased;
                c = rx.recv() => match c {
                    Some(c) => {
                        self.on_change(c).await;
                        for _ in 0..DRAIN {
                            match rx.try_recv() {
                                Ok(c) => self.on_change(c).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        tokio::time::sleep(self.cfg.retry).await;
                        rx = self.c.informer_channel(&self.c.res.pods);
                    }
                },
                () = notify.notified() => {}
                () = sleep_until_opt(next) => {}
            }
            if self.synced {
                let names = if started {
                    self.machines.take_dirty()
                } else {
                    started = true;
                    let _ = self.machines.take_dirty();
                    self.machines.names()
                };
                for n in names {
                    self.reconcile_machine(&n).await;
                }
            }
            self.run_due().await;
        }
    }

    fn now_secs(&self) -> i64 {
        self.c.server.clock.now().timestamp()
    }

    /// Counts an API write and lets the other tasks run now and then.
    async fn pace(&mut self) {
        self.writes += 1;
        if self.writes.is_multiple_of(WRITES_PER_YIELD) {
            tokio::task::yield_now().await;
        }
    }

    fn at(&mut self, when: Instant, t: Timer) {
        self.seq += 1;
        self.timers.insert((when, self.seq), t);
    }

    async fn run_due(&mut self) {
        let now = Instant::now();
        for _ in 0..TIMER_BUDGET {
            match self.timers.first_key_value() {
                Some((k, _)) if k.0 <= now => {}
                _ => return,
            }
            let Some((_, t)) = self.timers.pop_first() else {
                return;
            };
            match t {
                Timer::Register(n, e) => self.register(&n, e).await,
                Timer::Heartbeat(n, e) => self.heartbeat(&n, e).await,
                Timer::Mirrors(n, e) => self.ensure_mirrors(&n, e).await,
                Timer::Pod(k, g, step) => self.pod_step(&k, g, step).await,
                Timer::Exit(k, g) => self.exit_step(&k, g).await,
            }
        }
    }

    // -- machines and nodes

    async fn reconcile_machine(&mut self, name: &str) {
        let Some(m) = self.machines.view(name) else {
            return;
        };
        let on = m.power == PowerState::On;
        let not_ready = m.spec.failure == FailureMode::NotReady;
        let stop = match self.nodes.get(name) {
            Some(n) => n.running && (!on || n.boot_id != m.boot_id),
            None => false,
        };
        if stop {
            self.stop_kubelet(name);
        }
        let now = Instant::now();
        if !self.nodes.contains_key(name) {
            // A machine the fleet sees for the first time: its pods enter the running view.
            let keys: Vec<PodKey> = self
                .by_node
                .get(name)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            self.nodes
                .insert(name.to_string(), NodeRec::new(&m, not_ready, now));
            for k in &keys {
                self.publish(k);
            }
        }
        let Some(rec) = self.nodes.get_mut(name) else {
            return;
        };
        rec.m = m;
        if on && !rec.running {
            self.start_kubelet(name).await;
        } else if rec.active() {
            let changed = rec.not_ready != not_ready;
            rec.not_ready = not_ready;
            // A change of failure mode, or a hint that the Node may be gone (remove-node).
            self.report_status(name, changed).await;
            if changed && !not_ready {
                self.kick_blocked(name);
            }
        }
    }

    fn stop_kubelet(&mut self, name: &str) {
        let now_s = self.c.server.clock.timestamp();
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        tracing::debug!(node = name, "kubelet stops");
        node.running = false;
        node.booted = false;
        node.epoch += 1;
        let keys: Vec<PodKey> = self
            .by_node
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for k in &keys {
            let Some(rec) = self.pods.get_mut(k) else {
                continue;
            };
            rec.generation += 1;
            rec.exit_gen += 1;
            rec.exit_at = None;
            match rec.stage {
                Stage::Running | Stage::BackOff => {
                    rec.restart_pending = true;
                    rec.last_term = Some(json!({"terminated": {
                        "exitCode": 255, "reason": "Unknown",
                        "startedAt": rec.ctr_started, "finishedAt": now_s,
                    }}));
                    rec.stage = Stage::Idle;
                }
                Stage::Creating | Stage::Exited => rec.stage = Stage::Idle,
                Stage::Idle | Stage::Done => {}
            }
            rec.ready = false;
        }
        for k in &keys {
            self.publish(k);
        }
    }

    async fn start_kubelet(&mut self, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.running = true;
        node.booted = false;
        node.epoch += 1;
        node.boot_id = node.m.boot_id.clone();
        node.not_ready = node.m.spec.failure == FailureMode::NotReady;
        let epoch = node.epoch;
        tracing::debug!(node = name, boot_id = %node.boot_id, "kubelet starts");
        self.register(name, epoch).await;
    }

    fn labels(m: &MachineView) -> Map<String, Value> {
        let s = &m.spec;
        let mut l: Map<String, Value> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        for r in &s.roles {
            l.insert(format!("node-role.kubernetes.io/{r}"), json!(""));
        }
        for (k, v) in Self::default_labels(m) {
            l.insert(k, v);
        }
        l
    }

    /// Labels the kubelet reconciles at every registration.
    fn default_labels(m: &MachineView) -> Map<String, Value> {
        let s = &m.spec;
        let mut l = Map::new();
        l.insert("kubernetes.io/hostname".into(), json!(s.hostname));
        l.insert("kubernetes.io/os".into(), json!("linux"));
        l.insert("kubernetes.io/arch".into(), json!(s.architecture));
        l.insert("beta.kubernetes.io/os".into(), json!("linux"));
        l.insert("beta.kubernetes.io/arch".into(), json!(s.architecture));
        if let Some(z) = &s.zone {
            l.insert("topology.kubernetes.io/zone".into(), json!(z));
        }
        l
    }

    /// (type, status, reason, message) of the conditions the kubelet posts.
    fn kubelet_conditions(
        not_ready: bool,
    ) -> [(&'static str, &'static str, &'static str, &'static str); 4] {
        let ready = if not_ready {
            (
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            )
        } else {
            ("True", "KubeletReady", "kubelet is posting ready status")
        };
        [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            ("Ready", ready.0, ready.1, ready.2),
        ]
    }

    /// Whether the API's conditions differ from the kubelet's (status or reason).
    fn conditions_changed<V: Json>(existing: Option<&V>, not_ready: bool) -> bool {
        let old: &[V] = existing.and_then(Json::as_array).unwrap_or(&[]);
        Self::kubelet_conditions(not_ready)
            .iter()
            .any(|(t, status, reason, _)| {
                !old.iter().any(|c| {
                    text(c, "type") == Some(*t)
                        && text(c, "status") == Some(*status)
                        && text(c, "reason") == Some(*reason)
                })
            })
    }

    /// The kubelet's conditions merged into `existing` (others' conditions kept); whether any
    /// status or reason changed.
    fn node_conditions<V: Json>(existing: Option<&V>, not_ready: bool, now: &str) -> (Value, bool) {
        let ours = Self::kubelet_conditions(not_ready);
        let old: &[V] = existing.and_then(Json::as_array).unwrap_or(&[]);
        let mut out: Vec<Value> = old
            .iter()
            .filter(|c| !ours.iter().any(|o| text(*c, "type") == Some(o.0)))
            .map(Json::to_value)
            .collect();
        let mut changed = false;
        for (t, status, reason, message) in ours {
            let prev = old.iter().find(|c| text(*c, "type") == Some(t));
            let same = prev.is_some_and(|p| text(p, "status") == Some(status));
            changed |= !same || prev.is_some_and(|p| text(p, "reason") != Some(reason));
            let transition = match prev {
                Some(p) if same => p
                    .field("lastTransitionTime")
                    .map(Json::to_value)
                    .unwrap_or_else(|| json!(now)),
                _ => json!(now),
            };
            out.push(
                json!({"type": t, "status": status, "lastHeartbeatTime": now,
                "lastTransitionTime": transition, "reason": reason, "message": message}),
            );
        }
        (Value::Array(out), changed)
    }

    fn node_status(&self, node: &NodeRec, existing_conditions: Option<&Tree>) -> Value {
        let now = self.c.server.clock.timestamp();
        let s = &node.m.spec;
        let (conditions, _) = Self::node_conditions(existing_conditions, node.not_ready, &now);
        let cap = json!({"cpu": s.cpu, "memory": s.memory, "pods": s.pods.to_string(),
            "ephemeral-storage": s.ephemeral_storage, "hugepages-1Gi": "0", "hugepages-2Mi": "0"});
        let alloc = json!({
            "cpu": s.allocatable_cpu.clone().unwrap_or_else(|| s.cpu.clone()),
            "memory": s.allocatable_memory.clone().unwrap_or_else(|| s.memory.clone()),
            "pods": s.pods.to_string(),
            "ephemeral-storage": s.ephemeral_storage, "hugepages-1Gi": "0", "hugepages-2Mi": "0"});
        json!({
            "capacity": cap,
            "allocatable": alloc,
            "addresses": [
                {"type": "InternalIP", "address": s.internal_ip},
                {"type": "Hostname", "address": s.hostname},
            ],
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": node.m.machine_id,
                "systemUUID": node.m.system_uuid,
                "bootID": node.boot_id,
                "kernelVersion": s.kernel_version,
                "osImage": s.os_image,
                "containerRuntimeVersion": s.container_runtime_version,
                "kubeletVersion": s.kubelet_version,
                "kubeProxyVersion": s.kubelet_version,
                "operatingSystem": "linux",
                "architecture": s.architecture,
            },
        })
    }

    fn node_object(&self, name: &str, node: &NodeRec) -> Value {
        let s = &node.m.spec;
        let mut spec = json!({"podCIDR": s.pod_cidr, "podCIDRs": [s.pod_cidr]});
        if !s.taints.is_empty() {
            spec["taints"] = Value::Array(
                s.taints
                    .iter()
                    .map(|t| {
                        let mut v = json!({"key": t.key, "effect": t.effect});
                        if !t.value.is_empty() {
                            v["value"] = json!(t.value);
                        }
                        v
                    })
                    .collect(),
            );
        }
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "labels": Self::labels(&node.m),
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": spec,
            "status": self.node_status(node, None),
        })
    }

    /// Registers the Node (create, or update the existing one's status), then starts the
    /// kubelet's work: lease, heartbeats, static pods, the pods bound to the node.
    async fn register(&mut self, name: &str, epoch: u64) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        if !node.running || node.epoch != epoch || node.booted {
            return;
        }
        let obj = self.node_object(name, node);
        let res = self.c.res.clone();
        let nodes = &res.nodes;
        self.pace().await;
        let registered = match self.c.create(nodes, obj).await {
            Ok(v) => Some(v),
            Err(e) if e.code == 409 => self.update_registration(name).await,
            Err(e) => {
                tracing::debug!(node = name, error = %e, "registration failed");
                None
            }
        };
        let retry = Instant::now() + self.cfg.retry;
        let Some(v) = registered else {
            self.at(retry, Timer::Register(name.to_string(), epoch));
            return;
        };
        let now = Instant::now();
        let interval = self.cfg.lease_renew_interval;
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if node.epoch != epoch {
            return;
        }
        node.booted = true;
        node.exists = true;
        node.uid = str_at(&v.value, "/metadata/uid").unwrap_or_default();
        node.lease_owned = false;
        node.lease = None;
        node.checked = None;
        node.last_report = now;
        let cidr = str_at(&v.value, "/spec/podCIDR")
            .and_then(|c| parse_cidr(&c))
            .or_else(|| parse_cidr(&node.m.spec.pod_cidr));
        if let Some(c) = cidr
            && c != node.cidr
        {
            node.cidr = c;
            node.used.clear();
            node.next_slot = 0;
        }
        let control_plane = node.m.spec.is_control_plane();
        // Spread the heartbeats of nodes that register together over the first interval.
        let frac = (fnv(name.as_bytes()) % 1000) as f64 / 1000.0;
        let first = interval.mul_f64(0.5 + 0.5 * frac);
        tracing::debug!(node = name, "registered");
        self.renew_lease(name).await;
        self.at(now + first, Timer::Heartbeat(name.to_string(), epoch));
        if control_plane {
            self.ensure_mirrors(name, epoch).await;
        }
        let keys: Vec<PodKey> = self
            .by_node
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            self.admit(&k).await;
        }
    }

    /// Registration against an existing Node: its status (new nodeInfo, bootID, conditions)
    /// and the kubelet's default labels.
    async fn update_registration(&mut self, name: &str) -> Option<Arc<StoredObject>> {
        let res = self.c.res.clone();
        let nodes = &res.nodes;
        let cur = self.c.get(nodes, "", name).await.ok()?;
        let node = self.nodes.get(name)?;
        let status = self.node_status(node, cur.value.ptr("/status/conditions"));
        let want = Self::default_labels(&node.m);
        let labels = cur.value.ptr("/metadata/labels").and_then(Tree::as_object);
        let stale: Map<String, Value> = want
            .into_iter()
            .filter(|(k, v)| !labels.and_then(|l| l.get(k)).is_some_and(|l| l == v))
            .collect();
        if !stale.is_empty() {
            let _ = self
                .c
                .merge_patch(
                    nodes,
                    "",
                    name,
                    None,
                    json!({"metadata": {"labels": stale}}),
                )
                .await;
        }
        self.c
            .merge_patch(nodes, "", name, Some("status"), json!({"status": status}))
            .await
            .ok()
    }

    /// A merge patch of the node's Lease; the kubelet keeps the Lease it wrote.
    async fn patch_lease(&mut self, name: &str, patch: Value) -> Result<(), crate::ApiError> {
        let leases = self.c.res.leases.clone();
        let v = self
            .c
            .merge_patch(&leases, "kube-node-lease", name, None, patch)
            .await?;
        if let Some(n) = self.nodes.get_mut(name) {
            n.lease = Some(v);
        }
        Ok(())
    }

    async fn renew_lease(&mut self, name: &str) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        let uid = node.uid.clone();
        let owners = (!uid.is_empty())
            .then(|| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]));
        // The first renewal after registration points the Lease at this Node object (it may
        // be a new one after a remove-node).
        let set_owner = !node.lease_owned && owners.is_some();
        let cached = node.lease.clone();
        let now = self.c.server.clock.micro_timestamp();
        let dur = self.cfg.lease_duration_seconds;
        let res = self.c.res.clone();
        let leases = &res.leases;
        self.pace().await;
        // The usual renewal: the kubelet's copy of its Lease with a new renewTime, written only
        // if nobody changed the Lease since (its resourceVersion as a precondition, like the
        // kubelet's update of its cached Lease). A conflict or a missing Lease falls back to a
        // plain patch or a creation.
        if !set_owner && let Some(cached) = cached {
            let patch = object! {
                "metadata" => object! {"resourceVersion" => cached.revision.to_string()},
                "spec" => object! {
                    "holderIdentity" => name,
                    "leaseDurationSeconds" => dur,
                    "renewTime" => now.as_str(),
                },
            };
            match self.patch_lease(name, patch).await {
                Ok(()) => return,
                Err(e) if e.code == 409 || e.code == 404 => {}
                Err(e) => {
                    tracing::debug!(node = name, error = %e, "lease renewal failed");
                    return;
                }
            }
        }
        let spec = json!({"holderIdentity": name, "leaseDurationSeconds": dur, "renewTime": now});
        let mut patch = object! {"spec" => spec.clone()};
        if set_owner {
            patch["metadata"] = object! {"ownerReferences" => owners.clone()};
        }
        match self.patch_lease(name, patch).await {
            Ok(()) => {
                if set_owner && let Some(n) = self.nodes.get_mut(name) {
                    n.lease_owned = true;
                }
            }
            Err(e) if e.code == 404 => {
                let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec});
                if let Some(o) = owners {
                    lease["metadata"]["ownerReferences"] = o;
                }
                match self.c.create(leases, lease).await {
                    Ok(v) => {
                        if let Some(n) = self.nodes.get_mut(name) {
                            n.lease_owned = !uid.is_empty();
                            n.lease = Some(v);
                        }
                    }
                    Err(e) => tracing::debug!(node = name, error = %e, "lease creation failed"),
                }
            }
            Err(e) => {
                if let Some(n) = self.nodes.get_mut(name) {
                    n.lease = None;
                }
                tracing::debug!(node = name, error = %e, "lease renewal failed")
            }
        }
    }

    async fn heartbeat(&mut self, name: &str, epoch: u64) {
        match self.nodes.get(name) {
            Some(n) if n.active() && n.epoch == epoch && n.exists => {}
            _ => return,
        }
        self.report_status(name, false).await;
        match self.nodes.get(name) {
            Some(n) if n.exists && n.epoch == epoch => {}
            _ => return, // the Node is gone: this kubelet stops reporting until it restarts
        }
        self.renew_lease(name).await;
        let next = Instant::now() + self.cfg.lease_renew_interval;
        self.at(next, Timer::Heartbeat(name.to_string(), epoch));
    }

    /// Posts the Node's conditions when they differ from the API's, when `force`, or when the
    /// last report is older than the report frequency.
    async fn report_status(&mut self, name: &str, force: bool) {
        let res = self.c.res.clone();
        let nodes = &res.nodes;
        let cur = match self.c.get(nodes, "", name).await {
            Ok(c) => c,
            Err(e) => {
                if e.code == 404
                    && let Some(n) = self.nodes.get_mut(name)
                {
                    tracing::debug!(node = name, "node object is gone");
                    n.exists = false;
                }
                return;
            }
        };
        let now = Instant::now();
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if !node.active() {
            return;
        }
        let due = node.last_report + self.cfg.status_report_frequency <= now;
        if !(due || force) && node.checked == Some((cur.revision, node.not_ready)) {
            return; // the same Node as at the last check: still in agreement
        }
        let existing = cur.value.ptr("/status/conditions");
        let changed = Self::conditions_changed(existing, node.not_ready);
        if !(changed || due || force) {
            node.checked = Some((cur.revision, node.not_ready));
            return;
        }
        let not_ready = node.not_ready;
        let ts = self.c.server.clock.timestamp();
        let (conds, _) = Self::node_conditions(existing, not_ready, &ts);
        self.pace().await;
        if let Ok(v) = self
            .c
            .merge_patch(
                nodes,
                "",
                name,
                Some("status"),
                json!({"status": {"conditions": conds}}),
            )
            .await
            && let Some(n) = self.nodes.get_mut(name)
        {
            n.last_report = Instant::now();
            n.checked = Some((v.revision, not_ready));
        }
    }

    /// Pods waiting for the network of a node that was NotReady.
    fn kick_blocked(&mut self, name: &str) {
        let now = Instant::now();
        let keys: Vec<(PodKey, u64)> = self
            .by_node
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| {
                let r = self.pods.get(k)?;
                (r.stage == Stage::Creating).then(|| (k.clone(), r.generation))
            })
            .collect();
        for (k, g) in keys {
            self.at(now, Timer::Pod(k, g, Step::Run));
        }
    }

    // -- static pods

    fn mirror_pods(&self, name: &str, node: &NodeRec) -> Vec<Value> {
        let s = &node.m.spec;
        let reg = &self.cfg.image_registry;
        let now = self.c.server.clock.timestamp();
        [
            ("kube-apiserver", s.kubelet_version.as_str()),
            ("kube-controller-manager", s.kubelet_version.as_str()),
            ("kube-scheduler", s.kubelet_version.as_str()),
            ("etcd", s.etcd_version.as_str()),
        ]
        .into_iter()
        .map(|(component, version)| {
            let image = format!("{reg}/{component}:{version}");
            let hash = format!(
                "{:032x}",
                u128::from(fnv(format!("{name}/{image}").as_bytes()))
            );
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("{component}-{name}"),
                    "namespace": "kube-system",
                    "labels": {"component": component, "tier": "control-plane"},
                    "annotations": {
                        MIRROR_ANNOTATION: hash,
                        "kubernetes.io/config.hash": hash,
                        "kubernetes.io/config.seen": now,
                        "kubernetes.io/config.source": "file",
                    },
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": node.uid, "controller": true}],
                },
                "spec": {
                    "nodeName": name,
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "priority": 2_000_001_000,
                    "restartPolicy": "Always",
                    "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                    "containers": [{"name": component, "image": image, "command": [component],
                        "imagePullPolicy": "IfNotPresent"}],
                },
            })
        })
        .collect()
    }

    /// Publishes the mirror pods of a control-plane node's static pods, replacing those of an
    /// older kubelet version.
    async fn ensure_mirrors(&mut self, name: &str, epoch: u64) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        if !node.active() || node.epoch != epoch || !node.m.spec.is_control_plane() {
            return;
        }
        let want = self.mirror_pods(name, node);
        let res = self.c.res.clone();
        let pods = &res.pods;
        let nodes = &res.nodes;
        let mut failed = false;
        match self.c.get(nodes, "", name).await {
            Ok(_) => {}
            Err(e) => {
                if e.code == 404
                    && let Some(n) = self.nodes.get_mut(name)
                {
                    n.exists = false;
                }
                return;
            }
        }
        for pod in want {
            let pname = str_at(&pod, "/metadata/name").unwrap_or_default();
            let image = str_at(&pod, "/spec/containers/0/image");
            self.pace().await;
            match self.c.get(pods, "kube-system", &pname).await {
                Ok(cur) => {
                    let v = &cur.value;
                    let current = ann(v, MIRROR_ANNOTATION).is_some()
                        && str_at(v, "/spec/containers/0/image") == image
                        && v.ptr("/spec/nodeName").and_then(Tree::as_str) == Some(name)
                        && v.ptr("/metadata/deletionTimestamp").is_none();
                    if current {
                        continue;
                    }
                    let opts = DeleteOptions {
                        grace_period: Some(0),
                        precondition: Precondition {
                            resource_version: None,
                            uid: str_at(v, "/metadata/uid"),
                        },
                        ..Default::default()
                    };
                    match self.c.delete(pods, "kube-system", &pname, &opts).await {
                        Ok(true) => {}
                        Ok(false) => {
                            failed = true; // held by finalizers: try again later
                            continue;
                        }
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(_) => {
                            failed = true;
                            continue;
                        }
                    }
                }
                Err(e) if e.code == 404 => {}
                Err(_) => {
                    failed = true;
                    continue;
                }
            }
            match self.c.create(pods, pod).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => {
                    tracing::debug!(node = name, pod = %pname, error = %e, "mirror pod creation failed");
                    failed = true;
                }
            }
        }
        if failed {
            let t = Instant::now() + self.cfg.retry;
            self.at(t, Timer::Mirrors(name.to_string(), epoch));
        }
    }

    // -- pods: informer side

    async fn on_change(&mut self, c: Change) {
        match c {
            Change::Sync(items) => {
                let present: BTreeSet<PodKey> = items
                    .iter()
                    .map(|o| crate::controllers::workloads::key_of(&o.value))
                    .collect();
                for k in crate::cluster::absent(self.pods.keys(), &present) {
                    self.pod_gone(&k, None);
                }
                for o in &items {
                    self.pod_seen(o).await;
                }
                self.synced = true;
            }
            Change::Event(ev) => match ev.kind {
                EventType::Deleted => {
                    let (ns, n) = ns_name(&ev.object.value);
                    let key = (ns.to_string(), n.to_string());
                    let uid = str_at(&ev.object.value, "/metadata/uid");
                    self.pod_gone(&key, uid.as_deref());
                }
                EventType::Added | EventType::Modified => self.pod_seen(&ev.object).await,
            },
        }
    }

    async fn pod_seen(&mut self, obj: &Arc<StoredObject>) {
        let v = &obj.value;
        let Some(node) = v
            .ptr("/spec/nodeName")
            .and_then(Tree::as_str)
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let (ns, name) = ns_name(v);
        let key = (ns.to_string(), name.to_string());
        let uid = v.ptr("/metadata/uid").and_then(Tree::as_str).unwrap_or("");
        if self.pods.get(&key).is_some_and(|r| r.uid != uid) {
            self.pod_gone(&key, None);
        }
        let active = self.nodes.get(node).is_some_and(NodeRec::active);
        if !self.pods.contains_key(&key) {
            let mut rec = PodRec::from_api(v, node, &self.cfg, self.now_secs());
            rec.startup += self.c.server.faults.kubelet_delay(node);
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
            self.pods.insert(key.clone(), Box::new(rec));
            self.publish(&key);
            if active {
                self.admit(&key).await;
            }
            return;
        }
        let now_secs = self.now_secs();
        let Some(rec) = self.pods.get_mut(&key) else {
            return;
        };
        let fresh = obj.revision > rec.written_rev;
        let deleting = deletion_of(v);
        let newly_deleting = match (rec.deleting, deleting) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b < a,
            _ => false,
        };
        if deleting.is_some() {
            rec.deleting = deleting;
        }
        if fresh {
            let seen = seen_of(v);
            rec.restarts = rec.restarts.max(seen.restarts);
            // Someone else changed readiness (the node lifecycle controller marks pods of an
            // unreachable node not ready): the condition's transition is now.
            if seen.ready != rec.conds[2].0 {
                rec.conds[2].1 = now_secs;
                rec.conds[3].1 = now_secs;
            }
            rec.seen = seen;
            rec.foreign = foreign_conditions(v);
            // Someone else declared the pod finished (pod GC marks orphans Failed): a terminal
            // phase is final, the kubelet stops its containers.
            if matches!(rec.seen.phase, Phase::Succeeded | Phase::Failed)
                && rec.stage != Stage::Done
            {
                rec.generation += 1;
                rec.stage = Stage::Done;
                rec.final_phase = rec.seen.phase;
                rec.ready = false;
                self.release_ip(&key);
                self.publish(&key);
                return;
            }
        }
        if !active {
            return;
        }
        if newly_deleting {
            self.schedule_exit(&key);
            return;
        }
        let Some(rec) = self.pods.get(&key) else {
            return;
        };
        if fresh && let Some((phase, ready)) = rec.desired() {
            let ip_differs = rec.ip.is_some() && rec.seen.ip != rec.ip;
            if rec.seen.phase != phase || rec.seen.ready != ready || ip_differs {
                // The kubelet's status manager restores what it knows to be true.
                let g = rec.generation;
                self.at(Instant::now(), Timer::Pod(key, g, Step::Sync));
            }
        }
    }

    fn pod_gone(&mut self, key: &PodKey, uid: Option<&str>) {
        if uid.is_some_and(|u| self.pods.get(key).is_some_and(|r| r.uid != u)) {
            return;
        }
        let Some(rec) = self.pods.remove(key) else {
            return;
        };
        if let Some(set) = self.by_node.get_mut(&rec.node) {
            set.remove(key);
            if set.is_empty() {
                self.by_node.remove(&rec.node);
            }
        }
        self.view.write().remove(key);
        if let Some(node) = self.nodes.get_mut(&rec.node) {
            if let Some(s) = rec.ip_slot {
                node.used.remove(&s);
            }
            if rec.mirror && node.active() && node.m.spec.is_control_plane() {
                let (n, e) = (rec.node.clone(), node.epoch);
                let t = Instant::now() + self.cfg.retry;
                self.at(t, Timer::Mirrors(n, e));
            }
        }
    }

    // -- pods: kubelet side

    /// The kubelet takes charge of a pod bound to its (registered) node.
    async fn admit(&mut self, key: &PodKey) {
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        if rec.stage == Stage::Done {
            return;
        }
        if rec.deleting.is_some() {
            self.schedule_exit(key);
            return;
        }
        if rec.stage != Stage::Idle {
            return;
        }
        let booted_in_sim = self.nodes.get(&rec.node).is_some_and(|n| n.m.booted_in_sim);
        if rec.seen.phase == Phase::Running && !rec.started_once {
            if booted_in_sim {
                // Ran before this boot: its containers died with the machine.
                if let Some(r) = self.pods.get_mut(key) {
                    r.started_once = true;
                    r.restart_pending = true;
                }
            } else {
                self.adopt(key);
                return;
            }
        }
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        if rec.started_once && rec.restart == Restart::Never {
            // restartPolicy Never: containers that died with the machine are not restarted.
            self.finish(key, Phase::Failed, 255, "Unknown").await;
            return;
        }
        self.start_creating(key).await;
    }

    /// The containers terminated for good: the pod is Succeeded or Failed.
    async fn finish(&mut self, key: &PodKey, phase: Phase, exit_code: i64, reason: &str) {
        let now_s = self.c.server.clock.timestamp();
        if let Some(r) = self.pods.get_mut(key) {
            r.generation += 1;
            r.stage = Stage::Done;
            r.ready = false;
            r.final_phase = phase;
            r.final_state = Some(json!({"terminated": {"exitCode": exit_code,
                "reason": reason, "startedAt": r.ctr_started, "finishedAt": now_s}}));
        }
        self.release_ip(key);
        self.write_status(key).await;
        self.publish(key);
    }

    /// A pod found running on a machine that was already up when the simulation started.
    fn adopt(&mut self, key: &PodKey) {
        let now = Instant::now();
        let now_s = self.c.server.clock.timestamp();
        let now_secs = self.now_secs();
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        rec.generation += 1;
        rec.stage = Stage::Running;
        rec.started_once = true;
        rec.ready = rec.seen.ready;
        rec.ctr_started = Some(rec.seen.started_at.clone().unwrap_or(now_s.clone()));
        rec.ctr_started_at = Some(now);
        if rec.start_time.is_none() {
            rec.start_time = Some(now_s);
        }
        rec.conds = [
            (true, now_secs),
            (true, now_secs),
            (rec.ready, now_secs),
            (rec.ready, now_secs),
        ];
        let ip = rec.seen.ip.clone();
        let host_network = rec.host_network;
        let node_name = rec.node.clone();
        let (g, ready, startup) = (rec.generation, rec.ready, rec.startup);
        if let Some(ip) = ip {
            let slot = if host_network {
                None
            } else {
                self.nodes.get_mut(&node_name).and_then(|n| {
                    let s = n.slot_of(&ip)?;
                    n.used.insert(s).then_some(s)
                })
            };
            if let Some(r) = self.pods.get_mut(key) {
                r.ip = Some(ip);
                r.ip_slot = slot;
            }
        }
        if !ready {
            if let Some(r) = self.pods.get_mut(key) {
                r.ready_at = Some(now + startup);
            }
            self.at(now + startup, Timer::Pod(key.clone(), g, Step::Ready));
        }
        self.schedule_lifecycle(key, now);
        self.publish(key);
    }

    async fn start_creating(&mut self, key: &PodKey) {
        let now = Instant::now();
        let now_s = self.c.server.clock.timestamp();
        let pull_cfg = self.cfg.image_pull;
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        rec.generation += 1;
        rec.stage = Stage::Creating;
        rec.ready = false;
        if rec.start_time.is_none() {
            rec.start_time = Some(now_s);
        }
        rec.ready_at = Some(now + rec.startup);
        let pull = pull_cfg.min(rec.startup);
        let g = rec.generation;
        if pull.is_zero() {
            self.pod_step(key, g, Step::Run).await;
            return;
        }
        self.write_status(key).await;
        self.publish(key);
        self.at(now + pull, Timer::Pod(key.clone(), g, Step::Run));
    }

    fn schedule_lifecycle(&mut self, key: &PodKey, from: Instant) {
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        let g = rec.generation;
        let crash = rec.crash_every;
        let complete = rec.complete_after;
        match (crash, complete) {
            (Some(c), Some(d)) if d <= c => {
                self.at(from + d, Timer::Pod(key.clone(), g, Step::Complete))
            }
            (Some(c), _) => self.at(from + c, Timer::Pod(key.clone(), g, Step::Crash)),
            (None, Some(d)) => self.at(from + d, Timer::Pod(key.clone(), g, Step::Complete)),
            (None, None) => {}
        }
    }

    fn release_ip(&mut self, key: &PodKey) {
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(s) = rec.ip_slot.take()
            && let Some(n) = self.nodes.get_mut(&rec.node)
        {
            n.used.remove(&s);
        }
    }

    async fn pod_step(&mut self, key: &PodKey, g: u64, step: Step) {
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        if rec.generation != g || !self.nodes.get(&rec.node).is_some_and(NodeRec::active) {
            return;
        }
        match (step, rec.stage) {
            (Step::Sync, _) => self.write_status(key).await,
            (Step::Run, Stage::Creating) => self.run_containers(key).await,
            (Step::Ready, Stage::Running) => {
                if let Some(r) = self.pods.get_mut(key) {
                    r.ready = true;
                }
                self.write_status(key).await;
                self.publish(key);
            }
            (Step::Crash, Stage::Running) => self.crash(key).await,
            (Step::Restart, Stage::BackOff) => self.restart_container(key).await,
            (Step::Complete, Stage::Running) => {
                self.finish(key, Phase::Succeeded, 0, "Completed").await
            }
            _ => {}
        }
    }

    async fn run_containers(&mut self, key: &PodKey) {
        let now = Instant::now();
        let now_s = self.c.server.clock.timestamp();
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        let node_name = rec.node.clone();
        let host_network = rec.host_network;
        let need_ip = rec.ip.is_none();
        let g = rec.generation;
        let Some(node) = self.nodes.get_mut(&node_name) else {
            return;
        };
        if node.not_ready && !host_network {
            return; // no pod network: stays ContainerCreating until the node recovers
        }
        let mut ip = None;
        let mut slot = None;
        if host_network {
            ip = Some(node.ip().to_string());
        } else if need_ip {
            match node.alloc() {
                Some(s) => {
                    slot = Some(s);
                    ip = Some(Ipv4Addr::from(node.cidr.0.wrapping_add(s)).to_string());
                }
                None => {
                    let t = now + self.cfg.retry;
                    self.at(t, Timer::Pod(key.clone(), g, Step::Run));
                    return;
                }
            }
        }
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(ip) = ip {
            rec.ip = Some(ip);
            if slot.is_some() {
                rec.ip_slot = slot;
            }
        }
        if rec.restart_pending {
            rec.restart_pending = false;
            rec.restarts += 1;
        }
        rec.stage = Stage::Running;
        rec.started_once = true;
        rec.ctr_started = Some(now_s);
        rec.ctr_started_at = Some(now);
        let ready_at = rec.ready_at.unwrap_or(now);
        rec.ready = ready_at <= now;
        let ready = rec.ready;
        self.write_status(key).await;
        self.publish(key);
        if !ready {
            self.at(ready_at, Timer::Pod(key.clone(), g, Step::Ready));
        }
        self.schedule_lifecycle(key, now);
    }

    async fn crash(&mut self, key: &PodKey) {
        let now = Instant::now();
        let now_s = self.c.server.clock.timestamp();
        let (base, max) = (self.cfg.crash_backoff, self.cfg.crash_backoff_max);
        if self
            .pods
            .get(key)
            .is_some_and(|r| r.restart == Restart::Never)
        {
            self.finish(key, Phase::Failed, 1, "Error").await;
            return;
        }
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        let ran = rec
            .ctr_started_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        rec.crashes = if ran >= BACKOFF_RESET {
            1
        } else {
            rec.crashes + 1
        };
        rec.restarts += 1;
        rec.ready = false;
        rec.generation += 1;
        rec.last_term = Some(json!({"terminated": {"exitCode": 1, "reason": "Error",
            "startedAt": rec.ctr_started, "finishedAt": now_s}}));
        let backoff = if rec.crashes <= 1 {
            Duration::ZERO
        } else {
            let shift = (rec.crashes - 2).min(16);
            base.saturating_mul(1 << shift).min(max)
        };
        if backoff.is_zero() {
            rec.stage = Stage::BackOff;
            self.restart_container(key).await;
            return;
        }
        rec.stage = Stage::BackOff;
        let g = rec.generation;
        self.write_status(key).await;
        self.publish(key);
        self.at(now + backoff, Timer::Pod(key.clone(), g, Step::Restart));
    }

    async fn restart_container(&mut self, key: &PodKey) {
        let now = Instant::now();
        let now_s = self.c.server.clock.timestamp();
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        rec.generation += 1;
        rec.stage = Stage::Running;
        rec.ctr_started = Some(now_s);
        rec.ctr_started_at = Some(now);
        rec.ready_at = Some(now + rec.startup);
        rec.ready = rec.startup.is_zero();
        let (g, ready, startup) = (rec.generation, rec.ready, rec.startup);
        self.write_status(key).await;
        self.publish(key);
        if !ready {
            self.at(now + startup, Timer::Pod(key.clone(), g, Step::Ready));
        }
        self.schedule_lifecycle(key, now);
    }

    /// A deletion was requested (or its grace period shortened): plan the containers' exit.
    fn schedule_exit(&mut self, key: &PodKey) {
        let now = Instant::now();
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        let Some(grace) = rec.deleting else {
            return;
        };
        let wait = if rec.stage == Stage::Running {
            rec.exit.min(Duration::from_secs(grace.max(0) as u64))
        } else {
            Duration::ZERO
        };
        let at = now + wait;
        if rec.exit_at.is_some_and(|t| t <= at) {
            return;
        }
        rec.exit_at = Some(at);
        rec.exit_gen += 1;
        let g = rec.exit_gen;
        self.at(at, Timer::Exit(key.clone(), g));
    }

    /// The containers exited: confirm the deletion (grace 0, uid precondition).
    async fn exit_step(&mut self, key: &PodKey, g: u64) {
        let Some(rec) = self.pods.get_mut(key) else {
            return;
        };
        if rec.exit_gen != g {
            return;
        }
        if !self.nodes.get(&rec.node).is_some_and(NodeRec::active) {
            return;
        }
        if rec.stage != Stage::Exited {
            rec.generation += 1;
            rec.stage = Stage::Exited;
            rec.ready = false;
        }
        let uid = rec.uid.clone();
        self.publish(key);
        let opts = DeleteOptions {
            grace_period: Some(0),
            precondition: Precondition {
                resource_version: None,
                uid: Some(uid),
            },
            ..Default::default()
        };
        let res = self.c.res.clone();
        let pods = &res.pods;
        self.pace().await;
        match self.c.delete(pods, &key.0, &key.1, &opts).await {
            Ok(_) => {}
            // Gone, or replaced by a pod of the same name: nothing to confirm.
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::debug!(pod = %key.1, error = %e, "deletion confirmation failed");
                let t = Instant::now() + self.cfg.retry;
                self.at(t, Timer::Exit(key.clone(), g));
            }
        }
    }

    // -- status and view

    fn status_patch(&self, key: &PodKey, rec: &PodRec, node: &NodeRec, now_secs: i64) -> Value {
        let (phase, _) = rec.desired().unwrap_or((Phase::Pending, false));
        let sandbox = matches!(rec.stage, Stage::Running | Stage::BackOff);
        let want = [sandbox, true, rec.ready, rec.ready];
        let unready_msg = || {
            let names: Vec<&str> = rec.containers.iter().map(|c| c.0.as_str()).collect();
            format!("containers with unready status: [{}]", names.join(" "))
        };
        let mut conds: Vec<Value> = rec.foreign.iter().map(Tree::to_value).collect();
        for (i, t) in COND_TYPES.iter().enumerate() {
            let (status, since) = if rec.conds[i].0 == want[i] {
                rec.conds[i]
            } else {
                (want[i], now_secs)
            };
            let mut c = object! {
                "type" => *t,
                "status" => if status { "True" } else { "False" },
                "lastProbeTime" => Value::Null,
                "lastTransitionTime" => ts(since),
            };
            if !status && (i == 2 || i == 3) {
                let reason = match rec.stage {
                    Stage::Done if rec.final_phase == Phase::Succeeded => "PodCompleted",
                    Stage::Done => "PodFailed",
                    _ => "ContainersNotReady",
                };
                c["reason"] = Value::from(reason);
                if rec.stage != Stage::Done {
                    c["message"] = Value::from(unready_msg());
                }
            }
            conds.push(c);
        }
        conds.push(object! {
            "type" => "PodScheduled",
            "status" => "True",
            "lastProbeTime" => Value::Null,
            "lastTransitionTime" => rec.scheduled_time.clone().unwrap_or_else(|| ts(now_secs)),
        });
        let cid = format!(
            "containerd://{}",
            hex64(fnv(rec.uid.as_bytes()) ^ rec.restarts as u64)
        );
        let statuses: Vec<Value> = rec
            .containers
            .iter()
            .map(|(cname, image, id)| {
                let (state, started, ready, with_id) = match rec.stage {
                    Stage::Running => (
                        object! {"running" => object! {"startedAt" => rec.ctr_started.clone()}},
                        true,
                        rec.ready,
                        true,
                    ),
                    Stage::BackOff => (
                        object! {"waiting" => object! {
                            "reason" => "CrashLoopBackOff",
                            "message" => format!("back-off restarting failed container={cname} pod={}_{}({})",
                                key.1, key.0, rec.uid),
                        }},
                        false,
                        false,
                        true,
                    ),
                    Stage::Done => (
                        rec.final_state.clone().unwrap_or_else(|| object! {}),
                        false,
                        false,
                        true,
                    ),
                    _ => (
                        object! {"waiting" => object! {"reason" => "ContainerCreating"}},
                        false,
                        false,
                        false,
                    ),
                };
                let mut s = object! {
                    "name" => cname.as_str(),
                    "image" => image.as_str(),
                    "imageID" => if with_id { id.as_str() } else { "" },
                    "ready" => ready,
                    "started" => started,
                    "restartCount" => rec.restarts,
                    "state" => state,
                    "lastState" => rec.last_term.clone().unwrap_or_else(|| object! {}),
                };
                if with_id {
                    s["containerID"] = Value::from(cid.as_str());
                }
                s
            })
            .collect();
        let host_ip = node.ip();
        let (pod_ip, pod_ips) = match &rec.ip {
            Some(ip) => (
                Value::from(ip.as_str()),
                Value::Array(vec![object! {"ip" => ip.as_str()}]),
            ),
            None => (Value::Null, Value::Null),
        };
        let status = object! {
            "phase" => phase.as_str(),
            "conditions" => conds,
            "hostIP" => host_ip,
            "hostIPs" => vec![object! {"ip" => host_ip}],
            "startTime" => rec.start_time.clone(),
            "containerStatuses" => statuses,
            "podIP" => pod_ip,
            "podIPs" => pod_ips,
        };
        object! {"status" => status}
    }

    async fn write_status(&mut self, key: &PodKey) {
        let now_secs = self.now_secs();
        let Some(rec) = self.pods.get(key) else {
            return;
        };
        let Some(node) = self.nodes.get(&rec.node) else {
            return;
        };
        if !node.active() || rec.desired().is_none() {
            return;
        }
        let patch = self.status_patch(key, rec, node, now_secs);
        let g = rec.generation;
        // Remember the conditions as written (their transition times).
        if let Some(rec) = self.pods.get_mut(key) {
            let sandbox = matches!(rec.stage, Stage::Running | Stage::BackOff);
            let want = [sandbox, true, rec.ready, rec.ready];
            for (i, w) in want.into_iter().enumerate() {
                if rec.conds[i].0 != w {
                    rec.conds[i] = (w, now_secs);
                }
            }
        }
        let res = self.c.res.clone();
        let pods = &res.pods;
        self.pace().await;
        match self
            .c
            .merge_patch(pods, &key.0, &key.1, Some("status"), patch)
            .await
        {
            Ok(v) => {
                if let Some(rec) = self.pods.get_mut(key) {
                    rec.written_rev = v.revision;
                }
            }
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::debug!(pod = %key.1, error = %e, "pod status update failed");
                let t = Instant::now() + self.cfg.retry;
                self.at(t, Timer::Pod(key.clone(), g, Step::Sync));
            }
        }
    }

    /// Mirrors the pod's real state into the running view (pods of machines only).
    fn publish(&self, key: &PodKey) {
        let Some(rec) = self
            .pods
            .get(key)
            .filter(|r| self.nodes.contains_key(&r.node))
        else {
            self.view.write().remove(key);
            return;
        };
        let running = rec.stage == Stage::Running;
        let ready = running && rec.ready;
        let mut w = self.view.write();
        match w.get_mut(key) {
            Some(e) => {
                if e.running != running || e.ready != ready {
                    e.running = running;
                    e.ready = ready;
                    e.since = self.c.server.clock.now();
                }
                if e.ip != rec.ip {
                    e.ip = rec.ip.clone();
                }
            }
            None => {
                w.insert(
                    key.clone(),
                    PodRuntime {
                        node: rec.node.clone(),
                        ip: rec.ip.clone(),
                        running,
                        ready,
                        since: self.c.server.clock.now(),
                    },
                );
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_conditions_keep_transition_times() {
        let old = json!([
            {"type": "NetworkUnavailable", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "MemoryPressure", "status": "Unknown", "reason": "NodeStatusUnknown",
                "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]);
        let (c, changed) = Fleet::node_conditions(Some(&old), false, "2026-01-01T01:00:00Z");
        assert!(changed, "MemoryPressure went from Unknown to False");
        assert!(Fleet::conditions_changed(Some(&old), false));
        assert!(!Fleet::conditions_changed(Some(&c), false));
        assert!(Fleet::conditions_changed(Some(&c), true));
        let c = c.as_array().unwrap();
        assert_eq!(c[0]["type"], "NetworkUnavailable");
        let ready = c.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(ready["lastHeartbeatTime"], "2026-01-01T01:00:00Z");
        let mem = c.iter().find(|c| c["type"] == "MemoryPressure").unwrap();
        assert_eq!(mem["lastTransitionTime"], "2026-01-01T01:00:00Z");
        let (_, changed) = Fleet::node_conditions(Some(&Value::Array(c.clone())), false, "x");
        assert!(!changed);
        let (c, changed) = Fleet::node_conditions(Some(&Value::Array(c.clone())), true, "y");
        assert!(changed);
        let ready = c
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "KubeletNotReady");
    }

    #[test]
    fn image_ids_are_digests_of_the_repository() {
        let id = image_id("registry.k8s.io/etcd:3.5.21-0");
        assert!(id.starts_with("registry.k8s.io/etcd@sha256:"));
        assert_eq!(id.len(), "registry.k8s.io/etcd@sha256:".len() + 64);
        assert!(image_id("localhost:5000/app").starts_with("localhost:5000/app@sha256:"));
    }

    #[test]
    fn annotations_parse_as_seconds() {
        let p = json!({"metadata": {"annotations": {STARTUP_ANNOTATION: "2.5", EXIT_ANNOTATION: "-1"}}});
        assert_eq!(
            ann_secs(&p, STARTUP_ANNOTATION),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(ann_secs(&p, EXIT_ANNOTATION), None);
        assert_eq!(ann_secs(&p, CRASH_ANNOTATION), None);
    }
}

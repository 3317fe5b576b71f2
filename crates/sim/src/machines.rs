//! The machines under the simulated nodes: power, boot, reimage, and the failures a fleet of real
//! hosts shows, with a control API for tests, for theseus' node-action provider and for the HTTP
//! control endpoints (`/sim/v1/machines/...`, see [`Machines::handle`]).
//!
//! A [`Machine`]'s life: `Off` → `power_on` → `Booting` (its boot duration, seeded jitter) → `On`
//! (a fresh `bootID`; the kubelet fleet in [`crate::kubelet`] starts its kubelet, which registers
//! or updates the Node). `power_off` stops the kubelet at once; the Node object stays. `reimage`
//! powers the machine off if needed, takes its reimage duration, installs the new OS image,
//! kernel and kubelet (a new `machineID`), and by default boots it again. Failure modes, set per
//! machine: [`FailureMode::NeverBoots`] (boots never finish), [`FailureMode::NotReady`] (the
//! kubelet registers but reports `Ready=False`), [`FailureMode::ReimageFails`] (a reimage
//! "succeeds" but the old OS comes back).
//!
//! The registry also holds the fleet's [`RunningView`]: which pods really run right now, as
//! opposed to what the API still says about them after a machine died.
//!
//! All waits use tokio time, so a paused clock runs hours of boots in milliseconds; jitter comes
//! from a splitmix64 generator seeded per machine, so runs are deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::rest::DeleteOptions;

// ----------------------------------------------------------------------------------------------
// wire types

/// Power state of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    On,
    Off,
    Booting,
}

/// How a machine misbehaves (persistent until changed with [`Machines::set_failure`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureMode {
    #[default]
    None,
    /// Boots never finish: the machine stays `Booting`, its kubelet never starts.
    NeverBoots,
    /// The kubelet registers and renews its Lease but reports `Ready=False` (network plugin not
    /// ready); only host-network pods start.
    NotReady,
    /// A reimage silently keeps the old OS image, kernel and kubelet.
    ReimageFails,
}

/// A taint the kubelet registers its Node with (`--register-with-taints`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub effect: String,
}

/// What a machine is: hardware, network identity, installed OS and kubelet, role, timing.
/// Empty strings (`internalIP`, `hostname`, `podCIDR`) are assigned when the machine is added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineSpec {
    /// Node name.
    pub name: String,
    /// Default: 10.0.0.10 plus the machine's index.
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    /// Default: the name.
    pub hostname: String,
    pub os_image: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    pub container_runtime_version: String,
    /// Version of the etcd static pod of a control-plane machine.
    pub etcd_version: String,
    pub architecture: String,
    /// Capacity.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Allocatable when different from capacity.
    pub allocatable_cpu: Option<String>,
    pub allocatable_memory: Option<String>,
    /// Extra Node labels (the kubelet adds hostname, os, arch, roles, zone).
    pub labels: BTreeMap<String, String>,
    /// Taints at registration.
    pub taints: Vec<Taint>,
    /// `node-role.kubernetes.io/<role>` labels; `control-plane` (or `master`) also gets the
    /// static control-plane pods.
    pub roles: Vec<String>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// Default: 10.244.0.0/24 shifted by the machine's index (one /24 per node).
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    pub boot_seconds: f64,
    pub reimage_seconds: f64,
    /// Relative jitter of the durations, 0..=1 (0.1: ±10 %).
    pub jitter: f64,
    pub failure: FailureMode,
    /// Power state when added: `On` (already running, its pods are adopted as they are),
    /// `Booting` (the default for [`Machines::add_machine`]), or `Off`.
    pub power: Option<PowerState>,
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            name: String::new(),
            internal_ip: String::new(),
            hostname: String::new(),
            os_image: "CentOS Linux 7 (Core)".into(),
            kernel_version: "3.10.0-1160.el7.x86_64".into(),
            kubelet_version: "v1.33.4".into(),
            container_runtime_version: "containerd://1.7.27".into(),
            etcd_version: "3.5.21-0".into(),
            architecture: "amd64".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            allocatable_cpu: None,
            allocatable_memory: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            roles: Vec::new(),
            zone: None,
            pod_cidr: String::new(),
            boot_seconds: 60.0,
            reimage_seconds: 300.0,
            jitter: 0.1,
            failure: FailureMode::None,
            power: None,
        }
    }
}

impl MachineSpec {
    /// A worker with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        MachineSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A control-plane machine: role `control-plane` and its `NoSchedule` taint.
    pub fn control_plane(name: impl Into<String>) -> Self {
        MachineSpec {
            roles: vec!["control-plane".into()],
            taints: vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            }],
            ..Self::new(name)
        }
    }

    /// Whether the kubelet runs the control-plane static pods.
    pub fn is_control_plane(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r == "control-plane" || r == "master")
    }
}

/// A reimage request: the OS, kernel and kubelet to install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reimage {
    pub os_image: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    /// Also change the container runtime (default: keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime_version: Option<String>,
    /// Boot once the reimage is done (default true; `power_on` during the reimage sets it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_on: Option<bool>,
}

impl Reimage {
    pub fn new(
        os_image: impl Into<String>,
        kernel_version: impl Into<String>,
        kubelet_version: impl Into<String>,
    ) -> Self {
        Reimage {
            os_image: os_image.into(),
            kernel_version: kernel_version.into(),
            kubelet_version: kubelet_version.into(),
            container_runtime_version: None,
            power_on: None,
        }
    }
}

/// What `GET /sim/v1/machines/{name}` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    pub name: String,
    pub power: PowerState,
    /// When the machine entered its power state (RFC 3339, simulated clock).
    pub since: String,
    /// `Reimaging` while a reimage runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_since: Option<String>,
    /// The reimage in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reimage: Option<Reimage>,
    pub failure: FailureMode,
    pub os_image: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    pub container_runtime_version: String,
    pub architecture: String,
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    pub hostname: String,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Changes at every boot ("" before the first).
    #[serde(rename = "bootID")]
    pub boot_id: String,
    /// Changes at every successful reimage.
    #[serde(rename = "machineID")]
    pub machine_id: String,
    #[serde(rename = "systemUUID")]
    pub system_uuid: String,
    /// Boots completed in the simulation.
    pub boots: u64,
    /// Reimage requests accepted (a refused one, e.g. while another runs, does not count).
    #[serde(default)]
    pub reimages: u64,
    /// Power-off requests that cut the power of a running or booting machine (a crash fault
    /// counts; the power-off a reimage implies does not).
    #[serde(default)]
    pub power_offs: u64,
    /// `remove-node` requests that deleted a Node object (not those that found none).
    #[serde(default)]
    pub node_removals: u64,
}

/// Body of `POST /sim/v1/machines/{name}/clone`: a new machine with the hardware, labels, taints,
/// roles, zone and timing of `{name}`, powered off, with its own name (and address, assigned when
/// not given); the fields given replace the installed software. For add-before-remove: the new
/// node next to the one it replaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneMachine {
    pub name: String,
    #[serde(default)]
    pub os_image: Option<String>,
    #[serde(default)]
    pub kernel_version: Option<String>,
    #[serde(default)]
    pub kubelet_version: Option<String>,
    #[serde(default, rename = "internalIP")]
    pub internal_ip: Option<String>,
}

/// Body of `POST /sim/v1/machines/{name}/failure`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFailure {
    pub failure: FailureMode,
}

/// Body of `GET /sim/v1/machines`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineList {
    pub items: Vec<MachineStatus>,
}

/// A failed machine operation.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("machine {0:?} not found")]
    NotFound(String),
    #[error("machine {0:?} already exists")]
    AlreadyExists(String),
    #[error("machine {name:?} is busy: {what}")]
    Busy { name: String, what: String },
    #[error("invalid machine request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl MachineError {
    /// The HTTP status code of the error.
    pub fn code(&self) -> u16 {
        match self {
            MachineError::NotFound(_) => 404,
            MachineError::AlreadyExists(_) | MachineError::Busy { .. } => 409,
            MachineError::Invalid(_) => 400,
            MachineError::Api(e) => e.code,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            MachineError::NotFound(_) => "NotFound",
            MachineError::AlreadyExists(_) => "AlreadyExists",
            MachineError::Busy { .. } => "Conflict",
            MachineError::Invalid(_) => "BadRequest",
            MachineError::Api(e) => e.reason,
        }
    }

    /// A `metav1.Status` for the error.
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.to_string(), "reason": self.reason(), "code": self.code()})
    }
}

// ----------------------------------------------------------------------------------------------
// running view

/// What really runs of one pod, independent of what the API says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRuntime {
    pub node: String,
    /// The pod's IP once it got one.
    pub ip: Option<String>,
    /// Its containers run (false before start, after a crash, exit, or the machine's death).
    pub running: bool,
    /// Its containers are running and ready.
    pub ready: bool,
    /// When `running`/`ready` last changed (simulated clock).
    pub since: DateTime<Utc>,
}

/// The fleet's per-pod "really running" view, keyed by (namespace, name): every pod bound to a
/// machine's node. Cheap to clone; readers take a short read lock. A hash map: the probes look
/// pods up thousands of times per simulated second.
#[derive(Clone, Default)]
pub struct RunningView {
    inner: Arc<RwLock<RuntimeMap>>,
}

/// The running view's map (lookups only; [`RunningView::snapshot`] gives it in order).
pub type RuntimeMap = HashMap<(String, String), PodRuntime, crate::json::FastBuild>;

impl RunningView {
    pub fn get(&self, ns: &str, name: &str) -> Option<PodRuntime> {
        self.read()
            .get(&(ns, name) as &dyn crate::store::NsName)
            .cloned()
    }

    /// A read guard over the whole map (hold it briefly).
    pub fn read(&self) -> RwLockReadGuard<'_, RuntimeMap> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every pod, in (namespace, name) order.
    pub fn snapshot(&self) -> BTreeMap<(String, String), PodRuntime> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, RuntimeMap> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl RunningView {
    /// Whether the pod at `key` runs with the address `ip`.
    fn serves(&self, key: &dyn crate::store::NsName, ip: &str) -> bool {
        self.read()
            .get(key)
            .is_some_and(|r| r.running && r.ip.as_deref() == Some(ip))
    }
}

/// The traffic probes' question: a request to `ip` reaches the pod's running containers.
impl crate::probes::PodLiveness for RunningView {
    fn is_serving(&self, namespace: &str, pod: &str, ip: &str) -> bool {
        self.serves(&(namespace, pod), ip)
    }

    fn is_serving_key(&self, key: &(String, String), ip: &str) -> bool {
        self.serves(key, ip)
    }
}

// ----------------------------------------------------------------------------------------------
// registry

/// One machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The spec, with the currently installed OS, kernel and kubelet.
    pub spec: MachineSpec,
    /// Order of addition (0, 1, ...): default addresses derive from it.
    pub index: u32,
    pub power: PowerState,
    pub since: String,
    pub boot_id: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boots: u64,
    /// Reimage requests accepted.
    pub reimages: u64,
    /// Power-off requests that cut the power of a running or booting machine.
    pub power_offs: u64,
    /// `remove-node` requests that deleted the Node object.
    pub node_removals: u64,
    /// Whether the running OS booted inside the simulation (then pods found on the node at
    /// kubelet start have died and restart); false for machines added `On`, whose running pods
    /// are adopted.
    pub booted_in_sim: bool,
    reimage: Option<(Reimage, bool, String)>,
    /// Bumped at every transition; a timer whose epoch is stale does nothing.
    epoch: u64,
    rng: u64,
}

/// What the kubelet fleet needs of a machine.
#[derive(Clone, Debug)]
pub(crate) struct MachineView {
    pub spec: MachineSpec,
    pub power: PowerState,
    pub boot_id: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub booted_in_sim: bool,
}

struct State {
    machines: BTreeMap<String, Machine>,
    dirty: BTreeSet<String>,
    next_index: u32,
}

struct Shared {
    cluster: Cluster,
    seed: u64,
    state: Mutex<State>,
    notify: Arc<Notify>,
    view: RunningView,
}

/// The machine registry. Cheap to clone.
#[derive(Clone)]
pub struct Machines {
    shared: Arc<Shared>,
}

use crate::server::splitmix64 as splitmix;

/// FNV-1a, for stable per-name seeds.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn uuid_from(a: u64, b: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

fn jittered(base: f64, jitter: f64, rng: &mut u64) -> Duration {
    let u = (splitmix(rng) >> 11) as f64 / (1u64 << 53) as f64;
    let secs = base * (1.0 + jitter * (2.0 * u - 1.0));
    if secs.is_finite() && secs > 0.0 {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    }
}

impl Machine {
    fn status(&self) -> MachineStatus {
        let s = &self.spec;
        MachineStatus {
            name: s.name.clone(),
            power: self.power,
            since: self.since.clone(),
            operation: self.reimage.as_ref().map(|_| "Reimaging".to_string()),
            operation_since: self.reimage.as_ref().map(|(_, _, t)| t.clone()),
            reimage: self.reimage.as_ref().map(|(r, _, _)| r.clone()),
            failure: s.failure,
            os_image: s.os_image.clone(),
            kernel_version: s.kernel_version.clone(),
            kubelet_version: s.kubelet_version.clone(),
            container_runtime_version: s.container_runtime_version.clone(),
            architecture: s.architecture.clone(),
            internal_ip: s.internal_ip.clone(),
            hostname: s.hostname.clone(),
            pod_cidr: s.pod_cidr.clone(),
            roles: s.roles.clone(),
            zone: s.zone.clone(),
            boot_id: self.boot_id.clone(),
            machine_id: self.machine_id.clone(),
            system_uuid: self.system_uuid.clone(),
            boots: self.boots,
            reimages: self.reimages,
            power_offs: self.power_offs,
            node_removals: self.node_removals,
        }
    }

    fn new_machine_id(&mut self) {
        let a = splitmix(&mut self.rng);
        let b = splitmix(&mut self.rng);
        self.machine_id = format!("{a:016x}{b:016x}");
    }

    fn new_boot_id(&mut self) {
        let a = splitmix(&mut self.rng);
        let b = splitmix(&mut self.rng);
        self.boot_id = uuid_from(a, b);
    }
}

fn check_spec(spec: &MachineSpec) -> Result<(), MachineError> {
    if !crate::defaults::is_dns_subdomain(&spec.name) {
        return Err(MachineError::Invalid(format!(
            "name {:?} is not a DNS subdomain",
            spec.name
        )));
    }
    for (what, v) in [
        ("bootSeconds", spec.boot_seconds),
        ("reimageSeconds", spec.reimage_seconds),
    ] {
        if !v.is_finite() || !(0.0..=1e9).contains(&v) {
            return Err(MachineError::Invalid(format!(
                "{what} must be a non-negative number of seconds"
            )));
        }
    }
    if !spec.jitter.is_finite() || !(0.0..=1.0).contains(&spec.jitter) {
        return Err(MachineError::Invalid("jitter must be within 0..=1".into()));
    }
    if !spec.internal_ip.is_empty() && spec.internal_ip.parse::<Ipv4Addr>().is_err() {
        return Err(MachineError::Invalid(format!(
            "internalIP {:?} is not an IPv4 address",
            spec.internal_ip
        )));
    }
    if !spec.pod_cidr.is_empty() && parse_cidr(&spec.pod_cidr).is_none() {
        return Err(MachineError::Invalid(format!(
            "podCIDR {:?} is not an IPv4 CIDR between /8 and /30",
            spec.pod_cidr
        )));
    }
    for t in &spec.taints {
        if !matches!(
            t.effect.as_str(),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) || t.key.is_empty()
        {
            return Err(MachineError::Invalid(format!(
                "taint {:?}: a key and an effect NoSchedule, PreferNoSchedule or NoExecute are required",
                t.key
            )));
        }
    }
    for r in &spec.roles {
        if r.is_empty() || r.contains('/') {
            return Err(MachineError::Invalid(format!("role {r:?} is not valid")));
        }
    }
    Ok(())
}

/// An IPv4 CIDR as (network address, size).
pub(crate) fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if !(8..=30).contains(&bits) {
        return None;
    }
    let size = 1u32 << (32 - bits);
    Some((u32::from(ip) & !(size - 1), size))
}

impl Machines {
    /// An empty registry; `seed` drives the jitter and the generated ids.
    pub fn new(cluster: Cluster, seed: u64) -> Self {
        Machines {
            shared: Arc::new(Shared {
                cluster,
                seed,
                state: Mutex::new(State {
                    machines: BTreeMap::new(),
                    dirty: BTreeSet::new(),
                    next_index: 0,
                }),
                notify: Arc::new(Notify::new()),
                view: RunningView::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> String {
        self.shared.cluster.server.clock.timestamp()
    }

    fn changed(&self, st: &mut State, name: &str) {
        st.dirty.insert(name.to_string());
        self.shared.notify.notify_one();
    }

    /// The per-pod "really running" view kept by the kubelet fleet.
    pub fn running_view(&self) -> RunningView {
        self.shared.view.clone()
    }

    /// Adds a machine. It boots and joins (unless `spec.power` says `On`: already running, or
    /// `Off`). Empty addresses are assigned from the machine's index.
    pub fn add_machine(&self, mut spec: MachineSpec) -> Result<MachineStatus, MachineError> {
        check_spec(&spec)?;
        let now = self.now();
        let mut st = self.lock();
        if st.machines.contains_key(&spec.name) {
            return Err(MachineError::AlreadyExists(spec.name));
        }
        let index = st.next_index;
        st.next_index += 1;
        if spec.internal_ip.is_empty() {
            spec.internal_ip = Ipv4Addr::from(0x0A00_000Au32.wrapping_add(index)).to_string();
        }
        if spec.hostname.is_empty() {
            spec.hostname = spec.name.clone();
        }
        if spec.pod_cidr.is_empty() {
            let base = 0x0AF4_0000u32.wrapping_add(index.wrapping_shl(8));
            spec.pod_cidr = format!("{}/24", Ipv4Addr::from(base));
        }
        let power = spec.power.unwrap_or(PowerState::Booting);
        let rng = self.shared.seed ^ fnv(spec.name.as_bytes());
        // The hardware UUID: stable for the machine's life, independent of the power history.
        let mut hw = rng ^ 0x5157_4D55_5549_4400;
        let su = uuid_from(splitmix(&mut hw), splitmix(&mut hw));
        let mut m = Machine {
            spec,
            index,
            power: PowerState::Off,
            since: now.clone(),
            boot_id: String::new(),
            machine_id: String::new(),
            system_uuid: su,
            boots: 0,
            reimages: 0,
            power_offs: 0,
            node_removals: 0,
            booted_in_sim: false,
            reimage: None,
            epoch: 0,
            rng,
        };
        m.new_machine_id();
        let name = m.spec.name.clone();
        match power {
            PowerState::On => {
                m.power = PowerState::On;
                m.new_boot_id();
                st.machines.insert(name.clone(), m);
                self.changed(&mut st, &name);
            }
            PowerState::Off => {
                st.machines.insert(name.clone(), m);
            }
            PowerState::Booting => {
                st.machines.insert(name.clone(), m);
                self.start_boot(&mut st, &name, &now);
            }
        }
        let status = st.machines.get(&name).map(Machine::status);
        status.ok_or(MachineError::NotFound(name))
    }

    pub fn get(&self, name: &str) -> Option<MachineStatus> {
        self.lock().machines.get(name).map(Machine::status)
    }

    pub fn list(&self) -> Vec<MachineStatus> {
        self.lock().machines.values().map(Machine::status).collect()
    }

    /// Names of all machines, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().machines.keys().cloned().collect()
    }

    /// Whether `node` is a machine of this registry (its pods are the fleet's).
    pub fn manages(&self, node: &str) -> bool {
        self.lock().machines.contains_key(node)
    }

    /// Cuts the power: the kubelet and every container stop at once; the Node stays.
    pub fn power_off(&self, name: &str) -> Result<MachineStatus, MachineError> {
        let now = self.now();
        let mut st = self.lock();
        let m = st
            .machines
            .get_mut(name)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))?;
        match m.power {
            PowerState::Off => {
                // Cancels a boot planned after a reimage.
                if let Some(r) = m.reimage.as_mut() {
                    r.1 = false;
                }
            }
            PowerState::On | PowerState::Booting => {
                m.power = PowerState::Off;
                m.since = now;
                m.epoch += 1;
                m.power_offs += 1;
                self.changed(&mut st, name);
            }
        }
        st.machines
            .get(name)
            .map(Machine::status)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))
    }

    /// Powers on: the machine boots, then its kubelet starts and registers. No-op when already
    /// on or booting; during a reimage, the machine boots once the reimage is done.
    pub fn power_on(&self, name: &str) -> Result<MachineStatus, MachineError> {
        let now = self.now();
        let mut st = self.lock();
        let m = st
            .machines
            .get_mut(name)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))?;
        if m.power == PowerState::Off {
            if let Some(r) = m.reimage.as_mut() {
                r.1 = true;
            } else {
                self.start_boot(&mut st, name, &now);
            }
        }
        st.machines
            .get(name)
            .map(Machine::status)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))
    }

    fn start_boot(&self, st: &mut State, name: &str, now: &str) {
        let Some(m) = st.machines.get_mut(name) else {
            return;
        };
        m.power = PowerState::Booting;
        m.since = now.to_string();
        m.epoch += 1;
        let epoch = m.epoch;
        let d = jittered(m.spec.boot_seconds, m.spec.jitter, &mut m.rng);
        self.changed(st, name);
        let me = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            me.finish_boot(&name, epoch);
        });
    }

    fn finish_boot(&self, name: &str, epoch: u64) {
        let now = self.now();
        let mut st = self.lock();
        let Some(m) = st.machines.get_mut(name) else {
            return;
        };
        if m.epoch != epoch || m.power != PowerState::Booting {
            return;
        }
        if m.spec.failure == FailureMode::NeverBoots {
            tracing::debug!(machine = name, "boot hangs (NeverBoots)");
            return;
        }
        m.power = PowerState::On;
        m.since = now;
        m.epoch += 1;
        m.boots += 1;
        m.booted_in_sim = true;
        m.new_boot_id();
        tracing::debug!(machine = name, boot_id = %m.boot_id, "booted");
        self.changed(&mut st, name);
    }

    /// Reinstalls the machine: powers it off if needed, takes its reimage duration, then (unless
    /// [`FailureMode::ReimageFails`]) runs the new OS, kernel and kubelet; boots afterwards unless
    /// `power_on` is `Some(false)`. A second reimage while one runs is refused (409).
    pub fn reimage(&self, name: &str, r: Reimage) -> Result<MachineStatus, MachineError> {
        if r.os_image.is_empty() || r.kernel_version.is_empty() || r.kubelet_version.is_empty() {
            return Err(MachineError::Invalid(
                "osImage, kernelVersion and kubeletVersion are required".into(),
            ));
        }
        let now = self.now();
        let mut st = self.lock();
        let m = st
            .machines
            .get_mut(name)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))?;
        if m.reimage.is_some() {
            return Err(MachineError::Busy {
                name: name.to_string(),
                what: "a reimage is already running".into(),
            });
        }
        if m.power != PowerState::Off {
            m.power = PowerState::Off;
            m.since = now.clone();
        }
        m.epoch += 1;
        m.reimages += 1;
        let epoch = m.epoch;
        let boot_after = r.power_on.unwrap_or(true);
        m.reimage = Some((r, boot_after, now));
        let d = jittered(m.spec.reimage_seconds, m.spec.jitter, &mut m.rng);
        self.changed(&mut st, name);
        let me = self.clone();
        let task_name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            me.finish_reimage(&task_name, epoch);
        });
        st.machines
            .get(name)
            .map(Machine::status)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))
    }

    fn finish_reimage(&self, name: &str, epoch: u64) {
        let now = self.now();
        let mut st = self.lock();
        let Some(m) = st.machines.get_mut(name) else {
            return;
        };
        if m.epoch != epoch {
            return;
        }
        let Some((r, boot, _)) = m.reimage.take() else {
            return;
        };
        if m.spec.failure == FailureMode::ReimageFails {
            tracing::debug!(machine = name, "reimage silently failed");
        } else {
            m.spec.os_image = r.os_image;
            m.spec.kernel_version = r.kernel_version;
            m.spec.kubelet_version = r.kubelet_version;
            if let Some(c) = r.container_runtime_version {
                m.spec.container_runtime_version = c;
            }
            m.new_machine_id();
        }
        if boot {
            self.start_boot(&mut st, name, &now);
        } else {
            self.changed(&mut st, name);
        }
    }

    /// Deletes the machine's Node object (`kubectl delete node`). A running kubelet does not
    /// re-register it (as the real kubelet); the next boot does.
    pub async fn remove_node(&self, name: &str) -> Result<MachineStatus, MachineError> {
        if !self.manages(name) {
            return Err(MachineError::NotFound(name.to_string()));
        }
        let c = &self.shared.cluster;
        let deleted = match c
            .delete(&c.res.nodes, "", name, &DeleteOptions::default())
            .await
        {
            Ok(_) => true,
            Err(e) if e.code == 404 => false,
            Err(e) => return Err(MachineError::Api(e)),
        };
        {
            let mut st = self.lock();
            if let Some(m) = st.machines.get_mut(name).filter(|_| deleted) {
                m.node_removals += 1;
            }
            self.changed(&mut st, name);
        }
        self.get(name)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))
    }

    /// Adds a machine like `from` (see [`CloneMachine`]), powered off.
    pub fn clone_machine(
        &self,
        from: &str,
        c: CloneMachine,
    ) -> Result<MachineStatus, MachineError> {
        let mut spec = self
            .lock()
            .machines
            .get(from)
            .map(|m| m.spec.clone())
            .ok_or_else(|| MachineError::NotFound(from.to_string()))?;
        spec.name = c.name;
        spec.hostname = String::new();
        spec.pod_cidr = String::new();
        spec.internal_ip = c.internal_ip.unwrap_or_default();
        if let Some(o) = c.os_image {
            spec.os_image = o;
        }
        if let Some(k) = c.kernel_version {
            spec.kernel_version = k;
        }
        if let Some(k) = c.kubelet_version {
            spec.kubelet_version = k;
        }
        spec.failure = FailureMode::None;
        spec.power = Some(PowerState::Off);
        self.add_machine(spec)
    }

    /// Sets (or clears, with [`FailureMode::None`]) the machine's failure mode.
    pub fn set_failure(
        &self,
        name: &str,
        failure: FailureMode,
    ) -> Result<MachineStatus, MachineError> {
        let mut st = self.lock();
        let m = st
            .machines
            .get_mut(name)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))?;
        m.spec.failure = failure;
        self.changed(&mut st, name);
        st.machines
            .get(name)
            .map(Machine::status)
            .ok_or_else(|| MachineError::NotFound(name.to_string()))
    }

    // -- for the kubelet fleet

    pub(crate) fn notifier(&self) -> Arc<Notify> {
        self.shared.notify.clone()
    }

    pub(crate) fn take_dirty(&self) -> Vec<String> {
        let mut st = self.lock();
        std::mem::take(&mut st.dirty).into_iter().collect()
    }

    pub(crate) fn view(&self, name: &str) -> Option<MachineView> {
        self.lock().machines.get(name).map(|m| MachineView {
            spec: m.spec.clone(),
            power: m.power,
            boot_id: m.boot_id.clone(),
            machine_id: m.machine_id.clone(),
            system_uuid: m.system_uuid.clone(),
            booted_in_sim: m.booted_in_sim,
        })
    }

    // -- HTTP control API

    /// Serves `/sim/v1/machines[/...]`: `path` is the request path split at `/` (with or without
    /// the leading `sim`, `v1`), `body` the raw request body. Returns the status code and a JSON
    /// body (a [`MachineStatus`], a [`MachineList`], or a `metav1.Status` on error).
    ///
    /// - `GET /sim/v1/machines`, `GET /sim/v1/machines/{name}`
    /// - `POST /sim/v1/machines` (a [`MachineSpec`]; 201)
    /// - `POST /sim/v1/machines/{name}/power-off | power-on | remove-node`
    /// - `POST /sim/v1/machines/{name}/reimage` (a [`Reimage`]: `{osImage, kernelVersion,
    ///   kubeletVersion}`)
    /// - `POST /sim/v1/machines/{name}/failure` (a [`SetFailure`]: `{"failure": "NotReady"}`)
    /// - `POST /sim/v1/machines/{name}/clone` (a [`CloneMachine`]: a new machine like it, off)
    pub async fn handle<S: AsRef<str>>(
        &self,
        method: &str,
        path: &[S],
        body: &[u8],
    ) -> (u16, Value) {
        let segs: Vec<&str> = path
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !s.is_empty())
            .collect();
        let rest: &[&str] = match segs.as_slice() {
            ["sim", "v1", "machines", rest @ ..] | ["machines", rest @ ..] => rest,
            _ => return not_found(),
        };
        let method = method.to_ascii_uppercase();
        let out = match (method.as_str(), rest) {
            ("GET", []) => Ok((200, to_json(&MachineList { items: self.list() }))),
            ("POST", []) => match parse_body::<MachineSpec>(body) {
                Ok(spec) => self.add_machine(spec).map(|s| (201, to_json(&s))),
                Err(e) => Err(e),
            },
            ("GET", [name]) => self
                .get(name)
                .map(|s| (200, to_json(&s)))
                .ok_or_else(|| MachineError::NotFound(name.to_string())),
            ("POST", [name, action]) => {
                let r = match *action {
                    "power-off" => self.power_off(name),
                    "power-on" => self.power_on(name),
                    "remove-node" => self.remove_node(name).await,
                    "clone" => {
                        parse_body::<CloneMachine>(body).and_then(|c| self.clone_machine(name, c))
                    }
                    "reimage" => parse_body::<Reimage>(body).and_then(|r| self.reimage(name, r)),
                    "failure" => parse_body::<SetFailure>(body)
                        .and_then(|f| self.set_failure(name, f.failure)),
                    _ => return not_found(),
                };
                r.map(|s| (200, to_json(&s)))
            }
            (_, [] | [_])
            | (
                _,
                [
                    _,
                    "power-off" | "power-on" | "remove-node" | "reimage" | "failure" | "clone",
                ],
            ) => {
                return (
                    405,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("method {method} is not allowed here"),
                        "reason": "MethodNotAllowed", "code": 405}),
                );
            }
            _ => return not_found(),
        };
        match out {
            Ok(x) => x,
            Err(e) => (e.code(), e.status()),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, MachineError> {
    serde_json::from_slice(body).map_err(|e| MachineError::Invalid(format!("body: {e}")))
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource",
            "reason": "NotFound", "code": 404}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.244.3.0/24"),
            Some((u32::from(Ipv4Addr::new(10, 244, 3, 0)), 256))
        );
        assert_eq!(
            parse_cidr("10.244.3.7/24"),
            Some((u32::from(Ipv4Addr::new(10, 244, 3, 0)), 256))
        );
        assert_eq!(parse_cidr("10.244.3.0/31"), None);
        assert_eq!(parse_cidr("nonsense"), None);
    }

    #[test]
    fn jitter_is_bounded_and_seeded() {
        let mut a = 7;
        let mut b = 7;
        for _ in 0..100 {
            let x = jittered(100.0, 0.2, &mut a);
            assert!(x >= Duration::from_secs(80) && x <= Duration::from_secs(120));
            assert_eq!(x, jittered(100.0, 0.2, &mut b));
        }
        assert_eq!(jittered(-1.0, 0.0, &mut a), Duration::ZERO);
    }

    #[test]
    fn spec_defaults_from_json() {
        let s: MachineSpec =
            serde_json::from_value(json!({"name": "w-9", "roles": ["control-plane"]})).unwrap();
        assert_eq!(s.kubelet_version, "v1.33.4");
        assert!(s.is_control_plane());
        assert!(check_spec(&s).is_ok());
        let bad = MachineSpec {
            jitter: 2.0,
            ..MachineSpec::new("x")
        };
        assert!(check_spec(&bad).is_err());
    }
}

//! The living cluster: the API server with every component wired to it (machines and kubelets,
//! scheduler, controllers, traffic probes, invariant recorder), started from an expanded
//! scenario, plus the `/sim/v1` control API next to the Kubernetes API.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::controllers;
use crate::error::ApiError;
use crate::faults::{FaultError, FaultSpec};
use crate::invariants::Invariants;
use crate::kubelet::{self, KubeletConfig};
use crate::machines::{self, MachineSpec, Machines, PowerState};
use crate::probes::{self, PodLiveness, Probes};
use crate::scenario::{Expanded, NodeSpec};
use crate::scheduler::{self, SchedulerConfig};
use crate::server::{ApiServer, ServerConfig};
use crate::tree::Tree;

/// A running simulated cluster. Dropping it stops every component.
pub struct Simulation {
    pub server: Arc<ApiServer>,
    pub cluster: Cluster,
    pub machines: Machines,
    pub probes: Probes,
    pub invariants: Invariants,
    tasks: Tasks,
}

type Tasks = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

impl Drop for Simulation {
    fn drop(&mut self) {
        self.probes.stop();
        self.invariants.stop();
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

/// Adds a fault (see [`crate::faults`]); a machine crash is scheduled here, since the machines
/// live in the simulation, not in the API server.
fn add_fault(
    server: &Arc<ApiServer>,
    machines: &Machines,
    tasks: &Tasks,
    spec: FaultSpec,
) -> Result<u64, FaultError> {
    spec.validate()?;
    let crash = match &spec {
        FaultSpec::MachineCrash {
            machine,
            at_seconds,
            down_seconds,
        } => {
            if machines.get(machine).is_none() {
                return Err(FaultError::Invalid(format!(
                    "machine {machine:?} does not exist (machines: {})",
                    machines.names().join(", ")
                )));
            }
            Some((machine.clone(), *at_seconds, *down_seconds))
        }
        _ => None,
    };
    let id = server.faults.add(spec)?;
    if let Some((machine, at, down)) = crash {
        let machines = machines.clone();
        let server = server.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(at)).await;
            if machines.power_off(&machine).is_ok() {
                server.faults.fired(id);
            }
            if let Some(down) = down {
                tokio::time::sleep(Duration::from_secs_f64(down)).await;
                let _ = machines.power_on(&machine);
            }
        });
        tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }
    Ok(id)
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the scenario's node {node} cannot be created: {message}")]
    Machine { node: String, message: String },
    #[error("the scenario's objects cannot be loaded: {0}")]
    Load(String),
    #[error("the simulator cannot start: {0}")]
    Start(String),
    #[error("the cluster did not settle within {seconds} s: {what}")]
    NotSteady { seconds: u64, what: String },
}

fn machine_spec(n: &NodeSpec, e: &Expanded) -> MachineSpec {
    let t = &e.timing;
    let taints = n
        .taints
        .iter()
        .filter_map(|t| serde_json::from_value::<machines::Taint>(t.clone()).ok())
        .collect();
    MachineSpec {
        name: n.name.clone(),
        internal_ip: n.ip.clone(),
        hostname: n.name.clone(),
        os_image: n.os_image.clone(),
        kernel_version: n.kernel_version.clone(),
        kubelet_version: n.kubelet_version.clone(),
        container_runtime_version: n.container_runtime.clone(),
        architecture: n.architecture.clone(),
        cpu: n.cpu.clone(),
        memory: n.memory.clone(),
        pods: n.pods,
        labels: n.labels.clone(),
        taints,
        roles: n.roles.clone(),
        zone: n.zone.clone(),
        pod_cidr: n.pod_cidr.clone(),
        boot_seconds: t.boot_seconds,
        reimage_seconds: t.reimage_seconds,
        jitter: if t.boot_seconds > 0.0 {
            (t.jitter_seconds / t.boot_seconds).clamp(0.0, 1.0)
        } else {
            0.0
        },
        power: Some(PowerState::On),
        ..MachineSpec::default()
    }
}

impl Simulation {
    /// Starts the API server and every component, adds the scenario's machines (powered on, their
    /// nodes registered) and creates its objects. Does not wait for the cluster to settle: see
    /// [`Simulation::wait_steady`].
    pub async fn start(e: &Expanded) -> Result<Simulation, SimError> {
        let config = ServerConfig {
            version: e.kubernetes_version.clone(),
            seed: e.seed,
            ..Default::default()
        };
        let server = ApiServer::new(config).await;
        let cluster = Cluster::new(server.clone()).map_err(|err| SimError::Start(err.message))?;
        let machines = Machines::new(cluster.clone(), e.seed);
        let t = &e.timing;
        let kcfg = KubeletConfig {
            startup: Duration::from_secs_f64(t.pod_startup_seconds.max(0.0)),
            exit: Duration::from_secs_f64(t.pod_exit_seconds.max(0.0)),
            ..KubeletConfig::default()
        };
        let mut tasks = vec![
            kubelet::spawn_kubelets(cluster.clone(), machines.clone(), kcfg),
            scheduler::spawn(cluster.clone(), SchedulerConfig::default()),
            controllers::disruption::spawn(cluster.clone(), Default::default()),
            controllers::endpoints::spawn(cluster.clone(), Default::default()),
            controllers::gc::spawn(cluster.clone(), Default::default()),
            controllers::namespace::spawn(cluster.clone(), Default::default()),
            controllers::nodelifecycle::spawn(cluster.clone(), Default::default()),
        ];
        tasks.extend(controllers::workloads::spawn_all(cluster.clone()));
        for n in &e.nodes {
            machines
                .add_machine(machine_spec(n, e))
                .map_err(|err| SimError::Machine {
                    node: n.name.clone(),
                    message: err.to_string(),
                })?;
        }
        crate::scenario::load(&server, e.manifests.clone())
            .await
            .map_err(SimError::Load)?;
        let liveness: Arc<dyn PodLiveness> = Arc::new(machines.running_view());
        let probes = probes::spawn(
            cluster.clone(),
            e.probes.clone(),
            liveness,
            Duration::from_secs_f64(t.endpoint_propagation_seconds.max(0.0)),
        );
        let invariants = Invariants::spawn(cluster.clone(), Duration::from_secs(600));
        let reaper = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                reaper.expire_events().await;
            }
        }));
        let tasks: Tasks = Arc::new(std::sync::Mutex::new(tasks));
        for (i, f) in e.faults.iter().enumerate() {
            let spec = FaultSpec::from_json(f)
                .and_then(|spec| add_fault(&server, &machines, &tasks, spec))
                .map_err(|err| SimError::Load(format!("faults[{i}]: {err}")));
            spec?;
        }
        Ok(Simulation {
            server,
            cluster,
            machines,
            probes,
            invariants,
            tasks,
        })
    }

    /// Adds a fault now (its times count from now).
    pub fn add_fault(&self, spec: FaultSpec) -> Result<u64, FaultError> {
        add_fault(&self.server, &self.machines, &self.tasks, spec)
    }

    /// Waits until every node is Ready, every pod is Running and Ready (or Succeeded), and no
    /// pod is Pending; then resets the probes and the invariant recorder, so that what they
    /// report afterwards is caused by what happens next.
    pub async fn wait_steady(&self, timeout: Duration) -> Result<(), SimError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let what = self.unsettled().await;
            match what {
                None => {
                    self.probes.reset();
                    self.invariants.reset();
                    self.invariants.mark_start(&self.cluster).await;
                    return Ok(());
                }
                Some(what) if tokio::time::Instant::now() >= deadline => {
                    return Err(SimError::NotSteady {
                        seconds: timeout.as_secs(),
                        what,
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// What keeps the cluster from being steady, if anything.
    pub async fn unsettled(&self) -> Option<String> {
        let c = &self.cluster;
        let Ok((nodes, _)) = c.list(&c.res.nodes, None).await else {
            return Some("nodes cannot be listed".into());
        };
        let ready = |v: &Tree| {
            v.ptr("/status/conditions")
                .and_then(Tree::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"].as_str() == Some("Ready") && c["status"].as_str() == Some("True")
                    })
                })
        };
        if let Some(n) = nodes.iter().find(|n| !ready(&n.value)) {
            return Some(format!(
                "node {} is not Ready",
                crate::cluster::ns_name(&n.value).1
            ));
        }
        // Every workload has observed its spec and has all its replicas ready.
        for (r, want, have) in [
            (
                &c.res.deployments,
                "/spec/replicas",
                "/status/readyReplicas",
            ),
            (
                &c.res.replicasets,
                "/spec/replicas",
                "/status/readyReplicas",
            ),
            (
                &c.res.statefulsets,
                "/spec/replicas",
                "/status/readyReplicas",
            ),
            (
                &c.res.daemonsets,
                "/status/desiredNumberScheduled",
                "/status/numberReady",
            ),
        ] {
            let Ok((items, _)) = c.list(r, None).await else {
                return Some(format!("{} cannot be listed", r.resource));
            };
            for w in items {
                let v = &w.value;
                let generation = v
                    .ptr("/metadata/generation")
                    .and_then(Tree::as_i64)
                    .unwrap_or(0);
                let observed = v
                    .ptr("/status/observedGeneration")
                    .and_then(Tree::as_i64)
                    .unwrap_or(0);
                let want = v.ptr(want).and_then(Tree::as_i64).unwrap_or(1);
                let have = v.ptr(have).and_then(Tree::as_i64).unwrap_or(0);
                if observed < generation || have < want {
                    let (ns, name) = crate::cluster::ns_name(v);
                    return Some(format!("{} {ns}/{name}: {have}/{want} ready", r.kind));
                }
            }
        }
        let Ok((pods, _)) = c.list(&c.res.pods, None).await else {
            return Some("pods cannot be listed".into());
        };
        let busy = pods.iter().filter(|p| {
            let phase = p.value.ptr("/status/phase").and_then(Tree::as_str);
            phase != Some("Succeeded") && !(phase == Some("Running") && ready(&p.value))
        });
        let mut n = 0;
        let mut first = String::new();
        for p in busy {
            if n == 0 {
                let (ns, name) = crate::cluster::ns_name(&p.value);
                first = format!("{ns}/{name}");
            }
            n += 1;
        }
        (n > 0).then(|| format!("{n} pods are not Running and Ready (first: {first})"))
    }

    /// The Kubernetes API plus the simulator's control API under `/sim/v1`:
    /// machines (see [`Machines::handle`]), `GET /sim/v1/probes`, `GET /sim/v1/violations`.
    pub fn router(&self) -> Router {
        let state = Arc::new(Control {
            server: self.server.clone(),
            machines: self.machines.clone(),
            probes: self.probes.clone(),
            invariants: self.invariants.clone(),
            tasks: self.tasks.clone(),
        });
        Router::new()
            .route("/sim/v1/{*rest}", axum::routing::any(control))
            .with_state(state)
            .merge(self.server.router())
    }
}

struct Control {
    server: Arc<ApiServer>,
    tasks: Tasks,
    machines: Machines,
    probes: Probes,
    invariants: Invariants,
}

async fn control(
    State(c): State<Arc<Control>>,
    method: Method,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (code, v) = match (method.as_str(), segs.as_slice()) {
        ("GET", ["probes"]) => {
            // Serialized straight from the reports (the engine's SLO guard reads this every
            // few seconds; a `Value` in between would hash every key of every report).
            #[derive(serde::Serialize)]
            struct Reports {
                probes: Vec<crate::probes::ProbeReport>,
            }
            let reports = Reports {
                probes: c.probes.reports(),
            };
            return crate::server::value_response(StatusCode::OK, &reports);
        }
        ("GET", ["violations"]) => (200, json!({"violations": c.invariants.violations()})),
        ("GET", ["faults"]) => (200, json!({"faults": c.server.faults.list()})),
        ("DELETE", ["faults"]) => (200, json!({"cleared": c.server.faults.clear()})),
        ("POST", ["faults"]) => {
            let parsed = serde_json::from_slice::<Value>(&body)
                .map_err(|e| FaultError::Invalid(format!("the body is not JSON: {e}")))
                .and_then(|v| FaultSpec::from_json(&v))
                .and_then(|spec| add_fault(&c.server, &c.machines, &c.tasks, spec));
            match parsed {
                Ok(id) => (201, json!({"id": id, "faults": c.server.faults.list()})),
                Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
            }
        }
        (_, ["machines", ..]) => c.machines.handle(method.as_str(), &segs, &body).await,
        _ => return ApiError::no_route().into_response(),
    };
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::server::value_response(code, &v)
}

//! Traffic probes: synthetic clients that send requests to Services, the way theseus proves (or
//! disproves) zero downtime.
//!
//! A request at time t succeeds only if the client's kube-proxy view (the Service's Endpoints as
//! they were `propagation` ago) routes it to a pod that is really running at t. Requests are spread
//! round-robin over the ready addresses of that view. Every failure is recorded with its time and
//! cause.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{Change, Cluster, ns_name};
use crate::scenario::ProbeSpec;
use crate::store::EventType;
use crate::tree::Tree;

/// Whether a pod is really serving right now (its containers run), as its node knows it.
pub trait PodLiveness: Send + Sync {
    fn is_serving(&self, namespace: &str, pod: &str, ip: &str) -> bool;

    /// [`PodLiveness::is_serving`] with the (namespace, pod) key already built (the probes keep
    /// it, so that a request allocates nothing).
    fn is_serving_key(&self, key: &(String, String), ip: &str) -> bool {
        self.is_serving(&key.0, &key.1, ip)
    }
}

/// One endpoint address as kube-proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Backend {
    ip: String,
    /// (namespace, pod).
    key: (String, String),
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeFailure {
    /// Seconds since the probes started.
    pub at_seconds: f64,
    pub cause: String,
}

/// Results of one Service's probe.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    pub namespace: String,
    pub service: String,
    pub requests: u64,
    /// Requests that failed even after the client's retries.
    pub failures: u64,
    /// Requests that succeeded only on a retry (their first backend was dead).
    pub retried: u64,
    /// Longest run of consecutive failed requests, in seconds (from the first failure of the
    /// run to the next success).
    pub longest_gap_seconds: f64,
    pub failures_by_cause: BTreeMap<String, u64>,
    /// The first failures, up to [`MAX_TIMELINE`], in time order.
    pub timeline: Vec<ProbeFailure>,
}

pub const MAX_TIMELINE: usize = 1000;

#[derive(Default)]
struct ServiceState {
    report: ProbeReport,
    /// Endpoint snapshots (time, ready backends), oldest first.
    history: VecDeque<(tokio::time::Instant, Arc<Vec<Backend>>)>,
    next: usize,
    gap_start: Option<f64>,
}

/// Handle on the running probes; cheap to clone.
#[derive(Clone, Default)]
pub struct Probes {
    state: Arc<Mutex<BTreeMap<(String, String), ServiceState>>>,
    /// The synthetic clients and the endpoint recorder: they run until [`Probes::stop`] (the
    /// simulation's drop), not forever.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Probes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), ServiceState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current results of every probe, in (namespace, service) order.
    pub fn reports(&self) -> Vec<ProbeReport> {
        self.lock().values().map(|s| s.report.clone()).collect()
    }

    /// Stops the synthetic clients.
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    fn track(&self, t: tokio::task::JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Clears counters and timelines (e.g. after a cluster settled, before the measured run).
    pub fn reset(&self) {
        for s in self.lock().values_mut() {
            let (ns, svc) = (s.report.namespace.clone(), s.report.service.clone());
            s.report = ProbeReport {
                namespace: ns,
                service: svc,
                ..Default::default()
            };
            s.gap_start = None;
        }
    }
}

fn ready_backends(endpoints: &Tree) -> Vec<Backend> {
    let mut out = Vec::new();
    for subset in endpoints
        .field("subsets")
        .and_then(Tree::as_array)
        .into_iter()
        .flatten()
    {
        for a in subset
            .field("addresses")
            .and_then(Tree::as_array)
            .into_iter()
            .flatten()
        {
            let Some(ip) = a.field("ip").and_then(Tree::as_str) else {
                continue;
            };
            out.push(Backend {
                ip: ip.to_string(),
                key: (
                    a.ptr("/targetRef/namespace")
                        .and_then(Tree::as_str)
                        .unwrap_or("")
                        .to_string(),
                    a.ptr("/targetRef/name")
                        .and_then(Tree::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
            });
        }
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

/// Starts the probes of `specs`. `propagation` is the kube-proxy delay.
pub fn spawn(
    cluster: Cluster,
    specs: Vec<ProbeSpec>,
    liveness: Arc<dyn PodLiveness>,
    propagation: Duration,
) -> Probes {
    let probes = Probes::default();
    {
        let mut st = probes.lock();
        for s in &specs {
            st.entry((s.namespace.clone(), s.service.clone()))
                .or_default()
                .report = ProbeReport {
                namespace: s.namespace.clone(),
                service: s.service.clone(),
                ..Default::default()
            };
        }
    }
    if specs.is_empty() {
        return probes;
    }
    let start = tokio::time::Instant::now();
    // Endpoint history.
    {
        let probes = probes.clone();
        let mut rx = cluster.informer_channel(&cluster.res.endpoints);
        let me = probes.clone();
        me.track(tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let now = tokio::time::Instant::now();
                let mut st = probes.lock();
                let mut record = |ep: &Tree, deleted: bool| {
                    let (ns, name) = ns_name(ep);
                    if let Some(s) = st.get_mut(&(ns.to_string(), name.to_string())) {
                        let backends = Arc::new(if deleted {
                            Vec::new()
                        } else {
                            ready_backends(ep)
                        });
                        s.history.push_back((now, backends));
                        // Keep what the view may still need: one snapshot older than the delay.
                        while s.history.len() > 2
                            && s.history.get(1).is_some_and(|(t, _)| {
                                now.saturating_duration_since(*t) > propagation
                            })
                        {
                            s.history.pop_front();
                        }
                    }
                };
                match change {
                    Change::Sync(items) => {
                        for o in items {
                            record(&o.value, false);
                        }
                    }
                    Change::Event(e) => record(&e.object.value, e.kind == EventType::Deleted),
                }
            }
        }));
    }
    // The synthetic clients: one task sends every probe's requests, each at its own rate (a
    // tokio interval per probe, with `MissedTickBehavior::Delay`, in one queue).
    let clients: Vec<Client> = specs
        .into_iter()
        .map(|spec| Client {
            period: Duration::from_secs_f64(1.0 / spec.rate_per_second.max(0.001)),
            key: (spec.namespace.clone(), spec.service.clone()),
            retries: spec.retries as usize,
            propagation,
        })
        .collect();
    {
        let probes = probes.clone();
        let me = probes.clone();
        me.track(tokio::spawn(async move {
            let mut due: BTreeMap<(tokio::time::Instant, usize), ()> =
                (0..clients.len()).map(|i| ((start, i), ())).collect();
            loop {
                let Some(((at, _), ())) = due.first_key_value() else {
                    return;
                };
                tokio::time::sleep_until(*at).await;
                let now = tokio::time::Instant::now();
                while let Some((&(at, i), ())) = due.first_key_value() {
                    if at > now {
                        break;
                    }
                    due.pop_first();
                    let c = &clients[i];
                    if !request(&probes, c, &*liveness, start, now) {
                        continue; // the probe is gone
                    }
                    // A tick served late is followed by one a full period after it.
                    let next = if at < now { now } else { at } + c.period;
                    due.insert((next, i), ());
                }
            }
        }));
    }
    probes
}

/// One probe's client.
struct Client {
    period: Duration,
    /// (namespace, service).
    key: (String, String),
    retries: usize,
    /// The kube-proxy delay.
    propagation: Duration,
}

/// Sends one request of a probe at `now`; false when the probe is unknown.
fn request(
    probes: &Probes,
    client: &Client,
    liveness: &dyn PodLiveness,
    start: tokio::time::Instant,
    now: tokio::time::Instant,
) -> bool {
    let at = now.saturating_duration_since(start).as_secs_f64();
    let period = client.period;
    let mut st = probes.lock();
    let Some(s) = st.get_mut(&client.key) else {
        return false;
    };
    let propagation = client.propagation;
    // The client's view: the newest snapshot at least `propagation` old.
    let view = s
        .history
        .iter()
        .rev()
        .find(|(t, _)| now.saturating_duration_since(*t) >= propagation)
        .map(|(_, b)| b.clone())
        .unwrap_or_default();
    let view: &[Backend] = &view;
    s.report.requests += 1;
    // One attempt, then up to `retries` other backends, in round-robin order.
    let outcome = if view.is_empty() {
        Err("no endpoints".to_string())
    } else {
        let first = s.next;
        s.next = s.next.wrapping_add(1);
        let attempts = (client.retries + 1).min(view.len());
        let mut result = Err(String::new());
        for k in 0..attempts {
            let b = &view[(first + k) % view.len()];
            if liveness.is_serving_key(&b.key, &b.ip) {
                if k > 0 {
                    s.report.retried += 1;
                }
                result = Ok(());
                break;
            }
            result = Err(format!(
                "backend {}/{} ({}) not running",
                b.key.0, b.key.1, b.ip
            ));
        }
        result
    };
    match outcome {
        Ok(()) => {
            if let Some(g) = s.gap_start.take() {
                s.report.longest_gap_seconds = s.report.longest_gap_seconds.max(at - g);
            }
        }
        Err(cause) => {
            s.report.failures += 1;
            s.gap_start.get_or_insert(at);
            let bucket = if cause.starts_with("backend") {
                "backend not running"
            } else {
                "no endpoints"
            };
            *s.report
                .failures_by_cause
                .entry(bucket.to_string())
                .or_default() += 1;
            if s.report.timeline.len() < MAX_TIMELINE {
                s.report.timeline.push(ProbeFailure {
                    at_seconds: at,
                    cause,
                });
            }
            // An open gap counts up to now.
            if let Some(g) = s.gap_start {
                s.report.longest_gap_seconds = s
                    .report
                    .longest_gap_seconds
                    .max(at - g + period.as_secs_f64());
            }
        }
    }
    true
}

//! Fault injection: what goes wrong in a real cluster, on demand and reproducibly.
//!
//! Faults come from a scenario's `faults:` list or from the control API (`POST /sim/v1/faults`,
//! `GET` lists them with how often each fired, `DELETE` clears them). Kinds:
//!
//! - `ApiError`: a fraction (`rate`) of matching API requests fail with `code` (500, 503 or 429;
//!   a 429 carries `Retry-After: 1`), and every matching request is delayed by `latencySeconds`.
//!   Matching is by verb (`get list watch create update patch delete deletecollection`) and resource
//!   (`pods`, or a subresource such as `pods/eviction`); empty lists match everything. The faults
//!   apply to API clients (kubectl, theseus, any kube-rs client over the router), not to the
//!   simulated control plane, which talks to the store in-process: the point is to test how a
//!   client copes with a flaky API server.
//! - `WatchDrop`: every watch on the listed resources ends after `afterSeconds`, as when a load
//!   balancer or the API server drops long-running connections; clients must re-watch.
//! - `SlowKubelet`: the kubelets of the listed nodes (all when empty) take `extraStartupSeconds`
//!   longer to start each pod.
//! - `MachineCrash`: the machine loses power `atSeconds` after the fault is added (its kubelet stops,
//!   its pods die with it) and, with `downSeconds`, boots again that much later. Carried out by the
//!   simulation (see `Simulation::add_fault`), which owns the machines.
//!
//! Each fault is active from `startSeconds` after it was added, for `durationSeconds` (forever
//! when absent). Decisions draw from a generator seeded by the scenario's seed, so a run with the
//! same scenario, seed and requests injects the same failures.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::server::splitmix64;

/// One fault, as written in a scenario or posted to the control API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields, rename_all_fields = "camelCase")]
pub enum FaultSpec {
    ApiError {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verbs: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resources: Vec<String>,
        #[serde(default = "one")]
        rate: f64,
        #[serde(default = "default_code")]
        code: u16,
        #[serde(default)]
        latency_seconds: f64,
        #[serde(default)]
        start_seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_seconds: Option<f64>,
    },
    WatchDrop {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resources: Vec<String>,
        after_seconds: f64,
        #[serde(default)]
        start_seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_seconds: Option<f64>,
    },
    SlowKubelet {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<String>,
        extra_startup_seconds: f64,
        #[serde(default)]
        start_seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_seconds: Option<f64>,
    },
    MachineCrash {
        machine: String,
        at_seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down_seconds: Option<f64>,
    },
}

fn one() -> f64 {
    1.0
}

fn default_code() -> u16 {
    503
}

pub const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("fault: {0}")]
    Invalid(String),
}

fn seconds(field: &str, v: f64) -> Result<Duration, FaultError> {
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(FaultError::Invalid(format!(
            "{field} must be a number of seconds >= 0, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

impl FaultSpec {
    /// Parses one fault from JSON (the control API) with a message that names the problem.
    pub fn from_json(v: &Value) -> Result<FaultSpec, FaultError> {
        let spec: FaultSpec = serde_json::from_value(v.clone()).map_err(|e| {
            FaultError::Invalid(format!(
                "{e} (kinds: ApiError, WatchDrop, SlowKubelet, MachineCrash)"
            ))
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), FaultError> {
        let window = |start: f64, dur: Option<f64>| -> Result<(), FaultError> {
            seconds("startSeconds", start)?;
            if let Some(d) = dur {
                seconds("durationSeconds", d)?;
            }
            Ok(())
        };
        match self {
            FaultSpec::ApiError {
                verbs,
                rate,
                code,
                latency_seconds,
                start_seconds,
                duration_seconds,
                ..
            } => {
                if let Some(v) = verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
                    return Err(FaultError::Invalid(format!(
                        "unknown verb {v:?} (verbs: {})",
                        VERBS.join(", ")
                    )));
                }
                if !(rate.is_finite() && *rate >= 0.0 && *rate <= 1.0) {
                    return Err(FaultError::Invalid(format!(
                        "rate must be between 0 and 1, got {rate}"
                    )));
                }
                if !matches!(code, 429 | 500 | 503) {
                    return Err(FaultError::Invalid(format!(
                        "code must be 429, 500 or 503, got {code}"
                    )));
                }
                seconds("latencySeconds", *latency_seconds)?;
                window(*start_seconds, *duration_seconds)
            }
            FaultSpec::WatchDrop {
                after_seconds,
                start_seconds,
                duration_seconds,
                ..
            } => {
                seconds("afterSeconds", *after_seconds)?;
                window(*start_seconds, *duration_seconds)
            }
            FaultSpec::SlowKubelet {
                extra_startup_seconds,
                start_seconds,
                duration_seconds,
                ..
            } => {
                seconds("extraStartupSeconds", *extra_startup_seconds)?;
                window(*start_seconds, *duration_seconds)
            }
            FaultSpec::MachineCrash {
                machine,
                at_seconds,
                down_seconds,
            } => {
                if machine.is_empty() {
                    return Err(FaultError::Invalid("machine must name a machine".into()));
                }
                seconds("atSeconds", *at_seconds)?;
                if let Some(d) = down_seconds {
                    seconds("downSeconds", *d)?;
                }
                Ok(())
            }
        }
    }

    fn window(&self) -> (f64, Option<f64>) {
        match self {
            FaultSpec::ApiError {
                start_seconds,
                duration_seconds,
                ..
            }
            | FaultSpec::WatchDrop {
                start_seconds,
                duration_seconds,
                ..
            }
            | FaultSpec::SlowKubelet {
                start_seconds,
                duration_seconds,
                ..
            } => (*start_seconds, *duration_seconds),
            FaultSpec::MachineCrash {
                at_seconds,
                down_seconds,
                ..
            } => (*at_seconds, *down_seconds),
        }
    }
}

/// What the API server should do with one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiFault {
    pub delay: Duration,
    /// Fail with this HTTP status.
    pub error: Option<u16>,
}

struct Active {
    id: u64,
    spec: FaultSpec,
    from: Instant,
    until: Option<Instant>,
    fired: u64,
}

impl Active {
    fn live(&self, now: Instant) -> bool {
        now >= self.from && self.until.is_none_or(|u| now < u)
    }
}

struct Inner {
    active: Vec<Active>,
    rng: u64,
    next_id: u64,
}

/// The faults in force on one API server.
pub struct Faults {
    inner: Mutex<Inner>,
}

fn matches(list: &[String], item: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == item || x == "*")
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            inner: Mutex::new(Inner {
                active: Vec::new(),
                rng: seed ^ 0x6661_756c_7473,
                next_id: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a validated fault; returns its id. The window counts from now.
    pub fn add(&self, spec: FaultSpec) -> Result<u64, FaultError> {
        spec.validate()?;
        let now = Instant::now();
        let (start, dur) = spec.window();
        let from = now + Duration::from_secs_f64(start);
        let until = match spec {
            // A crash's "window" is when it happens; it stays listed afterwards.
            FaultSpec::MachineCrash { .. } => None,
            _ => dur.map(|d| from + Duration::from_secs_f64(d)),
        };
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.active.push(Active {
            id,
            spec,
            from,
            until,
            fired: 0,
        });
        Ok(id)
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.active.len();
        inner.active.clear();
        n
    }

    /// Counts one firing of fault `id` (used for machine crashes, carried out elsewhere).
    pub fn fired(&self, id: u64) {
        if let Some(a) = self.lock().active.iter_mut().find(|a| a.id == id) {
            a.fired += 1;
        }
    }

    /// Every fault with its id, whether it is in force now, and how many times it fired.
    pub fn list(&self) -> Vec<Value> {
        let now = Instant::now();
        self.lock()
            .active
            .iter()
            .map(|a| {
                let mut v = serde_json::to_value(&a.spec).unwrap_or(Value::Null);
                v["id"] = json!(a.id);
                v["active"] = json!(a.live(now));
                v["fired"] = json!(a.fired);
                v
            })
            .collect()
    }

    /// The fate of one API request: `verb` as in RBAC, `resource` like `pods` or `pods/eviction`.
    pub fn api(&self, verb: &str, resource: &str) -> ApiFault {
        let mut inner = self.lock();
        if inner.active.is_empty() {
            return ApiFault::default();
        }
        let now = Instant::now();
        let mut out = ApiFault::default();
        let Inner { active, rng, .. } = &mut *inner;
        for a in active.iter_mut() {
            let FaultSpec::ApiError {
                verbs,
                resources,
                rate,
                code,
                latency_seconds,
                ..
            } = &a.spec
            else {
                continue;
            };
            if !a.live(now) || !matches(verbs, verb) || !matches(resources, resource) {
                continue;
            }
            out.delay += Duration::from_secs_f64(*latency_seconds);
            if out.error.is_none() {
                // 53 random bits → a uniform draw in [0, 1).
                let draw = (splitmix64(rng) >> 11) as f64 / (1u64 << 53) as f64;
                if draw < *rate {
                    out.error = Some(*code);
                    a.fired += 1;
                }
            }
        }
        out
    }

    /// How long a watch on `resource` may live before it is dropped, if a fault says so.
    pub fn watch_limit(&self, resource: &str) -> Option<Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut limit: Option<Duration> = None;
        for a in inner.active.iter_mut() {
            if let FaultSpec::WatchDrop {
                resources,
                after_seconds,
                ..
            } = &a.spec
                && a.live(now)
                && matches(resources, resource)
            {
                let d = Duration::from_secs_f64(*after_seconds);
                limit = Some(limit.map_or(d, |l| l.min(d)));
                a.fired += 1;
            }
        }
        limit
    }

    /// Extra time the kubelet of `node` takes to start a pod.
    pub fn kubelet_delay(&self, node: &str) -> Duration {
        let mut inner = self.lock();
        if inner.active.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut extra = Duration::ZERO;
        for a in inner.active.iter_mut() {
            if let FaultSpec::SlowKubelet {
                nodes,
                extra_startup_seconds,
                ..
            } = &a.spec
                && a.live(now)
                && matches(nodes, node)
            {
                extra += Duration::from_secs_f64(*extra_startup_seconds);
                a.fired += 1;
            }
        }
        extra
    }
}

/// The RBAC verb of a request.
pub fn verb_of(method: &http::Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<FaultSpec, FaultError> {
        let v: Value =
            serde_yaml::from_str(yaml).map_err(|e| FaultError::Invalid(e.to_string()))?;
        FaultSpec::from_json(&v)
    }

    #[test]
    fn parses_and_rejects() {
        assert!(matches!(
            spec(
                "kind: ApiError\nverbs: [create]\nresources: [pods/eviction]\nrate: 0.5\ncode: 429"
            ),
            Ok(FaultSpec::ApiError { code: 429, .. })
        ));
        let bad = [
            ("kind: ApiError\ncode: 404", "code must be 429, 500 or 503"),
            ("kind: ApiError\nrate: 2", "rate must be between 0 and 1"),
            ("kind: ApiError\nverbs: [explode]", "unknown verb"),
            ("kind: ApiError\nrat: 0.5", "unknown field `rat`"),
            ("kind: Meteor", "unknown variant `Meteor`"),
            ("kind: WatchDrop\nafterSeconds: -1", "afterSeconds must be"),
            (
                "kind: MachineCrash\nmachine: ''\natSeconds: 1",
                "machine must name",
            ),
        ];
        for (y, want) in bad {
            let e = spec(y).expect_err(y).to_string();
            assert!(e.contains(want), "{y}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn api_errors_follow_rate_window_and_match() {
        let f = Faults::new(7);
        f.add(spec("kind: ApiError\nverbs: [create]\nresources: [pods/eviction]\nrate: 0.5\ncode: 429\nlatencySeconds: 0.25\nstartSeconds: 10\ndurationSeconds: 60").unwrap())
            .unwrap();
        // Not yet in force.
        assert_eq!(f.api("create", "pods/eviction"), ApiFault::default());
        tokio::time::advance(Duration::from_secs(11)).await;
        // Other verbs and resources are untouched.
        assert_eq!(f.api("get", "pods/eviction"), ApiFault::default());
        assert_eq!(f.api("create", "pods"), ApiFault::default());
        let outcomes: Vec<ApiFault> = (0..1000)
            .map(|_| f.api("create", "pods/eviction"))
            .collect();
        assert!(
            outcomes
                .iter()
                .all(|o| o.delay == Duration::from_millis(250))
        );
        let failed = outcomes.iter().filter(|o| o.error == Some(429)).count();
        assert!(
            (400..600).contains(&failed),
            "{failed} of 1000 failed at rate 0.5"
        );
        assert_eq!(f.list()[0]["fired"], json!(failed));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(f.api("create", "pods/eviction"), ApiFault::default());
        assert_eq!(f.list()[0]["active"], json!(false));
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_failures() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.add(spec("kind: ApiError\nrate: 0.3").unwrap()).unwrap();
            (0..200)
                .map(|_| f.api("list", "nodes").error.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[tokio::test(start_paused = true)]
    async fn watch_drops_and_slow_kubelets() {
        let f = Faults::new(1);
        assert_eq!(f.watch_limit("pods"), None);
        f.add(spec("kind: WatchDrop\nresources: [pods]\nafterSeconds: 30").unwrap())
            .unwrap();
        f.add(spec("kind: WatchDrop\nafterSeconds: 90").unwrap())
            .unwrap();
        assert_eq!(f.watch_limit("pods"), Some(Duration::from_secs(30)));
        assert_eq!(f.watch_limit("nodes"), Some(Duration::from_secs(90)));
        f.add(spec("kind: SlowKubelet\nnodes: [w1]\nextraStartupSeconds: 20").unwrap())
            .unwrap();
        assert_eq!(f.kubelet_delay("w1"), Duration::from_secs(20));
        assert_eq!(f.kubelet_delay("w2"), Duration::ZERO);
        assert_eq!(f.clear(), 3);
        assert_eq!(f.kubelet_delay("w1"), Duration::ZERO);
    }
}

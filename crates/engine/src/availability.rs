//! Availability during a run: probes sampled while nodes move, and (against the simulator) its
//! invariant recorder.
//!
//! - [`SimAvailability`]: the simulator's own Service probes (synthetic clients behind a lagging
//!   kube-proxy view) and violations, through its control API.
//! - [`HttpProbes`]: for real clusters, HTTP GET and TCP connect probes from the spec, run by the
//!   engine at each probe's interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use theseus_model::spec::Probe;
use theseus_providers::sim::SimProvider;

use crate::report::ProbeResult;

/// Where availability figures come from. Totals are cumulative; the engine subtracts what it
/// saw at its start.
#[async_trait::async_trait]
pub trait Availability: Send + Sync {
    /// Every probe's cumulative requests, failures and longest gap.
    async fn totals(&self) -> Result<Vec<ProbeResult>, String>;
    /// The simulator's invariant violations; None for a real cluster (nobody records them).
    async fn violations(&self) -> Result<Option<Vec<Value>>, String> {
        Ok(None)
    }
}

/// The simulator's probes and recorder.
pub struct SimAvailability {
    sim: SimProvider,
}

impl SimAvailability {
    pub fn new(sim: SimProvider) -> Self {
        SimAvailability { sim }
    }
}

#[async_trait::async_trait]
impl Availability for SimAvailability {
    async fn totals(&self) -> Result<Vec<ProbeResult>, String> {
        let v = self
            .sim
            .control_get("probes")
            .await
            .map_err(|e| e.to_string())?;
        Ok(v["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| ProbeResult {
                name: format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap_or(""),
                    p["service"].as_str().unwrap_or("")
                ),
                requests: p["requests"].as_u64().unwrap_or(0),
                failures: p["failures"].as_u64().unwrap_or(0),
                longest_gap_seconds: p["longestGapSeconds"].as_f64().unwrap_or(0.0),
            })
            .collect())
    }

    async fn violations(&self) -> Result<Option<Vec<Value>>, String> {
        let v = self
            .sim
            .control_get("violations")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(
            v["violations"].as_array().cloned().unwrap_or_default(),
        ))
    }
}

#[derive(Default)]
struct ProbeState {
    result: ProbeResult,
    gap_start: Option<tokio::time::Instant>,
}

/// HTTP GET (`http://` URLs) and TCP connect probes, each on its own task at its interval.
/// Dropping the value stops them.
pub struct HttpProbes {
    state: Arc<Mutex<BTreeMap<String, ProbeState>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HttpProbes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HttpProbes {
    /// Starts the probes. Service probes need the simulator and are refused here, as are
    /// `https://` URLs (not supported yet: probe the service over plain HTTP or TCP).
    pub fn start(probes: &[Probe]) -> Result<HttpProbes, String> {
        let state: Arc<Mutex<BTreeMap<String, ProbeState>>> = Arc::default();
        let mut tasks = Vec::new();
        for p in probes {
            let target = if let Some(h) = &p.http {
                if !h.url.starts_with("http://") {
                    return Err(format!(
                        "probe {}: only http:// URLs are supported (got {}); probe the service over plain HTTP or use a tcp probe",
                        p.name, h.url
                    ));
                }
                Target::Http {
                    url: h.url.clone(),
                    expect: h.expect_status,
                }
            } else if let Some(t) = &p.tcp {
                Target::Tcp(t.address.clone())
            } else {
                return Err(format!(
                    "probe {}: service probes need the simulator; against a real cluster give an http or tcp probe",
                    p.name
                ));
            };
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.name.clone(), ProbeState::default());
            let st = state.clone();
            let name = p.name.clone();
            let interval = Duration::from_secs(p.interval.0.max(1));
            let timeout = Duration::from_secs(p.timeout.0.max(1));
            tasks.push(tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<axum::body::Body>();
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    let ok = tokio::time::timeout(timeout, target.check(&client))
                        .await
                        .unwrap_or(false);
                    let now = tokio::time::Instant::now();
                    let mut g = st.lock().unwrap_or_else(|e| e.into_inner());
                    let s = g.entry(name.clone()).or_default();
                    s.result.name = name.clone();
                    s.result.requests += 1;
                    if ok {
                        if let Some(start) = s.gap_start.take() {
                            let gap = now.duration_since(start).as_secs_f64();
                            s.result.longest_gap_seconds = s.result.longest_gap_seconds.max(gap);
                        }
                    } else {
                        s.result.failures += 1;
                        s.gap_start.get_or_insert(now);
                    }
                }
            }));
        }
        Ok(HttpProbes { state, tasks })
    }
}

enum Target {
    Http { url: String, expect: Option<u16> },
    Tcp(String),
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

impl Target {
    async fn check(&self, client: &Client) -> bool {
        match self {
            Target::Http { url, expect } => {
                let Ok(uri) = url.parse::<http::Uri>() else {
                    return false;
                };
                match client.get(uri).await {
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        match expect {
                            Some(e) => code == *e,
                            None => (200..400).contains(&code),
                        }
                    }
                    Err(_) => false,
                }
            }
            Target::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str()).await.is_ok(),
        }
    }
}

#[async_trait::async_trait]
impl Availability for HttpProbes {
    async fn totals(&self) -> Result<Vec<ProbeResult>, String> {
        let now = tokio::time::Instant::now();
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| {
                let mut r = s.result.clone();
                r.name = name.clone();
                if let Some(start) = s.gap_start {
                    r.longest_gap_seconds = r
                        .longest_gap_seconds
                        .max(now.duration_since(start).as_secs_f64());
                }
                r
            })
            .collect())
    }
}

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
        // Only the figures the engine reads (the reports also carry timelines and causes).
        #[derive(serde::Deserialize)]
        struct Reports {
            #[serde(default)]
            probes: Vec<Report>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Report {
            #[serde(default)]
            namespace: String,
            #[serde(default)]
            service: String,
            #[serde(default)]
            requests: u64,
            #[serde(default)]
            failures: u64,
            #[serde(default)]
            longest_gap_seconds: f64,
        }
        let r: Reports = self
            .sim
            .control_get_as("probes")
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.probes
            .into_iter()
            .map(|p| ProbeResult {
                name: format!("{}/{}", p.namespace, p.service),
                requests: p.requests,
                failures: p.failures,
                longest_gap_seconds: p.longest_gap_seconds,
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

/// HTTP GET (`http://` and `https://` URLs) and TCP connect probes, each on its own task at its
/// interval. Dropping the value stops them.
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
    /// Starts the probes. Service probes need the simulator and are refused here. An `https://`
    /// probe trusts the system's roots, or only its `caFile`, or (asked for by name) any
    /// certificate; a `caFile` that cannot be read or holds no certificate is refused here, before
    /// anything starts.
    pub fn start(probes: &[Probe]) -> Result<HttpProbes, String> {
        let state: Arc<Mutex<BTreeMap<String, ProbeState>>> = Arc::default();
        let mut tasks = Vec::new();
        let mut planned = Vec::new();
        for p in probes {
            let target = if let Some(h) = &p.http {
                let tls = if h.url.starts_with("https://") {
                    tls_config(h)
                } else if h.url.starts_with("http://") {
                    no_tls_config()
                } else {
                    return Err(format!(
                        "probe {}: {:?} is not an http:// or https:// URL",
                        p.name, h.url
                    ));
                }
                .map_err(|e| format!("probe {}: {e}", p.name))?;
                Target::Http {
                    url: h.url.clone(),
                    expect: h.expect_status,
                    client: Box::new(client(tls)),
                }
            } else if let Some(t) = &p.tcp {
                Target::Tcp(t.address.clone())
            } else {
                return Err(format!(
                    "probe {}: service probes need the simulator; against a real cluster give an http or tcp probe",
                    p.name
                ));
            };
            planned.push((p, target));
        }
        for (p, target) in planned {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.name.clone(), ProbeState::default());
            let st = state.clone();
            let name = p.name.clone();
            let interval = Duration::from_secs(p.interval.0.max(1));
            let timeout = Duration::from_secs(p.timeout.0.max(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    let ok = tokio::time::timeout(timeout, target.check())
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

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    axum::body::Body,
>;

/// A client for `http://` and `https://` URLs.
fn client(tls: rustls::ClientConfig) -> Client {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

fn tls_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))
}

/// The configuration of an `http://` probe's client, which never makes a TLS connection.
fn no_tls_config() -> Result<rustls::ClientConfig, String> {
    Ok(tls_builder()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// The TLS configuration of an `https://` probe: whom it trusts.
fn tls_config(h: &theseus_model::spec::HttpProbe) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let builder = tls_builder()?;
    if h.insecure_skip_tls_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                rustls::crypto::ring::default_provider().signature_verification_algorithms,
            )))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &h.ca_file {
        Some(file) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!("cannot read the CA file {file}: {e}; give a PEM file of CA certificates in caFile")
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "the CA file {file} holds no usable certificate; give a PEM file of CA certificates in caFile"
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found (install ca-certificates), or give caFile"
                        .to_string(),
                );
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecureSkipTlsVerify`: any certificate is accepted; the handshake's signatures are still
/// verified, so the connection is at least with the holder of the presented key.
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

enum Target {
    Http {
        url: String,
        expect: Option<u16>,
        client: Box<Client>,
    },
    Tcp(String),
}

impl Target {
    async fn check(&self) -> bool {
        match self {
            Target::Http {
                url,
                expect,
                client,
            } => {
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

//! The `sim` provider: the simulator's machines, through its control API (`/sim/v1/machines`).
//!
//! - os-migration (remove-before-add): `remove-node` (the Node object goes, as a Kubean
//!   `remove-node.yml` run does), then `reimage` to the target OS (and kernel/kubelet when given)
//!   with power-on: the machine boots and its kubelet registers the node again under the same name
//!   and IP.
//! - upgrade: `reimage` with the machine's current OS and the target kubelet version.
//! - reboot: `power-off`, then `power-on`.
//!
//! The same code talks to `theseus sim serve` over loopback HTTP and to an in-process simulation
//! through its router (virtual time).

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{Action, ActionProgress, NodeTarget, Outcome, Provider, ProviderError};

type HttpClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

#[derive(Clone)]
enum Transport {
    Router(axum::Router),
    Http {
        base: String,
        client: Box<HttpClient>,
    },
}

/// See the module documentation.
#[derive(Clone)]
pub struct SimProvider {
    transport: Transport,
    /// Per request to the control API.
    pub request_timeout: Duration,
}

impl SimProvider {
    /// An in-process simulation: pass `Simulation::router()`.
    pub fn in_process(router: axum::Router) -> Self {
        SimProvider {
            transport: Transport::Router(router),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// A simulator served over HTTP (`theseus sim serve`), e.g. `http://127.0.0.1:6443`.
    pub fn http(base: &str) -> Result<Self, ProviderError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ProviderError::Config {
                provider: "sim".into(),
                message: format!(
                    "the simulator's address must be http://HOST:PORT (the server in the kubeconfig `theseus sim serve` writes), got {base:?}"
                ),
            });
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Body>();
        Ok(SimProvider {
            transport: Transport::Http {
                base,
                client: Box::new(client),
            },
            request_timeout: Duration::from_secs(30),
        })
    }

    fn target(&self) -> String {
        match &self.transport {
            Transport::Router(_) => "the in-process simulator".into(),
            Transport::Http { base, .. } => base.clone(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ProviderError> {
        let (code, bytes) = self.call_bytes(method, path, body).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((code, v))
    }

    /// [`SimProvider::call`] without parsing the answer.
    async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, axum::body::Bytes), ProviderError> {
        let unreachable = |message: String| ProviderError::Unreachable {
            provider: "sim".into(),
            target: self.target(),
            message,
        };
        let uri = match &self.transport {
            Transport::Router(_) => path.to_string(),
            Transport::Http { base, .. } => format!("{base}{path}"),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(body.map(Value::to_string).unwrap_or_default()))
            .map_err(|e| unreachable(format!("bad request {uri}: {e}")))?;
        let fut = async {
            let resp: http::Response<Body> = match &self.transport {
                Transport::Router(r) => r.clone().oneshot(req).await.map_err(|e| match e {})?,
                Transport::Http { client, .. } => client
                    .request(req)
                    .await
                    .map_err(|e| unreachable(format!("{e}: is `theseus sim serve` running?")))?
                    .map(Body::new),
            };
            let code = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((code, bytes))
        };
        let (code, bytes) = tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "{method} {path}: no answer within {:?}",
                    self.request_timeout
                ))
            })??;
        Ok((code, bytes))
    }

    async fn machine_action(
        &self,
        node: &str,
        verb: &str,
        body: Option<Value>,
    ) -> Result<Value, ProviderError> {
        let path = format!("/sim/v1/machines/{node}/{verb}");
        let (code, v) = self.call("POST", &path, body.as_ref()).await?;
        if code >= 300 {
            let msg = v["message"].as_str().unwrap_or("no message").to_string();
            return Err(ProviderError::Failed {
                provider: "sim".into(),
                message: format!("{verb} of machine {node} was refused ({code}): {msg}"),
            });
        }
        Ok(v)
    }

    /// The machine's current state (power, OS image, kubelet version, boots, ...).
    pub async fn machine(&self, node: &str) -> Result<Value, ProviderError> {
        let (code, v) = self
            .call("GET", &format!("/sim/v1/machines/{node}"), None)
            .await?;
        if code != 200 {
            return Err(ProviderError::Failed {
                provider: "sim".into(),
                message: format!(
                    "machine {node}: {}",
                    v["message"].as_str().unwrap_or("not found")
                ),
            });
        }
        Ok(v)
    }
}

impl SimProvider {
    /// `GET /sim/v1/{what}` (`probes`, `violations`): the simulator's own measurements, which
    /// the engine reports when it runs against the simulator. The answer's body, once it is a 200.
    async fn control_bytes(&self, what: &str) -> Result<axum::body::Bytes, ProviderError> {
        let (code, bytes) = self
            .call_bytes("GET", &format!("/sim/v1/{what}"), None)
            .await?;
        if code != 200 {
            return Err(ProviderError::Failed {
                provider: "sim".into(),
                message: format!("GET /sim/v1/{what} answered {code}"),
            });
        }
        Ok(bytes)
    }

    /// [`SimProvider::control_get`] read into `T`.
    pub async fn control_get_as<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
    ) -> Result<T, ProviderError> {
        let bytes = self.control_bytes(what).await?;
        serde_json::from_slice(&bytes).map_err(|e| ProviderError::Failed {
            provider: "sim".into(),
            message: format!("GET /sim/v1/{what}: unexpected answer: {e}"),
        })
    }

    /// `GET /sim/v1/{what}` as JSON (null when the body is not JSON).
    pub async fn control_get(&self, what: &str) -> Result<Value, ProviderError> {
        let bytes = self.control_bytes(what).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The machine, or None when the simulator has none of that name.
    async fn machine_opt(&self, node: &str) -> Result<Option<Value>, ProviderError> {
        let (code, v) = self
            .call("GET", &format!("/sim/v1/machines/{node}"), None)
            .await?;
        Ok((code == 200).then_some(v))
    }
}

fn str_of(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or("").to_string()
}

#[async_trait::async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        "sim"
    }

    async fn run(&self, node: &NodeTarget, action: &Action) -> Result<Outcome, ProviderError> {
        let started = tokio::time::Instant::now();
        let current = self.machine(&node.name).await?;
        let summary = match action {
            Action::OsMigration {
                os_image,
                kernel_version,
                kubelet_version,
            } => {
                self.machine_action(&node.name, "remove-node", None).await?;
                let body = json!({
                    "osImage": os_image,
                    "kernelVersion": kernel_version.clone().unwrap_or_else(|| str_of(&current, "kernelVersion")),
                    "kubeletVersion": kubelet_version.clone().unwrap_or_else(|| str_of(&current, "kubeletVersion")),
                    "powerOn": true,
                });
                self.machine_action(&node.name, "reimage", Some(body))
                    .await?;
                format!(
                    "node removed, machine reimaged from {} to {os_image}, booting",
                    str_of(&current, "osImage")
                )
            }
            Action::Upgrade { kubelet_version } => {
                let body = json!({
                    "osImage": str_of(&current, "osImage"),
                    "kernelVersion": str_of(&current, "kernelVersion"),
                    "kubeletVersion": kubelet_version,
                    "powerOn": true,
                });
                self.machine_action(&node.name, "reimage", Some(body))
                    .await?;
                format!(
                    "kubelet {} → {kubelet_version}, booting",
                    str_of(&current, "kubeletVersion")
                )
            }
            Action::Reboot => {
                self.machine_action(&node.name, "power-off", None).await?;
                self.machine_action(&node.name, "power-on", None).await?;
                "powered off and on, booting".to_string()
            }
            Action::Provision {
                new_node,
                os_image,
                kernel_version,
                kubelet_version,
            } => {
                if self.machine_opt(new_node).await?.is_none() {
                    let body = json!({
                        "name": new_node,
                        "osImage": os_image,
                        "kernelVersion": kernel_version.clone().unwrap_or_else(|| str_of(&current, "kernelVersion")),
                        "kubeletVersion": kubelet_version.clone().unwrap_or_else(|| str_of(&current, "kubeletVersion")),
                    });
                    self.machine_action(&node.name, "clone", Some(body)).await?;
                }
                self.machine_action(new_node, "power-on", None).await?;
                format!(
                    "machine {new_node} ({os_image}) added next to {}, booting",
                    node.name
                )
            }
            Action::Decommission => {
                self.machine_action(&node.name, "remove-node", None).await?;
                self.machine_action(&node.name, "power-off", None).await?;
                "node removed, machine powered off".to_string()
            }
        };
        Ok(Outcome {
            summary,
            exit_code: None,
            output: String::new(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn progress(
        &self,
        node: &NodeTarget,
        action: &Action,
    ) -> Result<ActionProgress, ProviderError> {
        if let Action::Provision { new_node, .. } = action {
            return Ok(match self.machine_opt(new_node).await? {
                None => ActionProgress::NotStarted,
                Some(m) if m["power"] == "Off" => ActionProgress::NotStarted,
                Some(_) => ActionProgress::Finished,
            });
        }
        let Some(m) = self.machine_opt(&node.name).await? else {
            return Ok(ActionProgress::Unknown);
        };
        let reimaging = m["operation"] == "Reimaging";
        Ok(match action {
            Action::OsMigration { os_image, .. } if m["osImage"] == os_image.as_str() => {
                ActionProgress::Finished
            }
            Action::Upgrade { kubelet_version }
                if m["kubeletVersion"] == kubelet_version.as_str() =>
            {
                ActionProgress::Finished
            }
            Action::OsMigration { .. } | Action::Upgrade { .. } if reimaging => {
                ActionProgress::Running
            }
            Action::OsMigration { .. } | Action::Upgrade { .. } => ActionProgress::NotStarted,
            Action::Decommission if m["power"] == "Off" => ActionProgress::Finished,
            Action::Decommission => ActionProgress::NotStarted,
            Action::Reboot | Action::Provision { .. } => ActionProgress::Unknown,
        })
    }
}

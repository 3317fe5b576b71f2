//! `theseus sim …`: wiring of the simulator crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use theseus_sim::scenario::{self, Expanded, GenerateOptions, Scenario};
use theseus_sim::sim::Simulation;
use theseus_sim::{ApiServer, ServerConfig, kubelet, serve};

use crate::{BadInput, SimCommand};

/// The default scenario: the CKA lab of runbook 002.
const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/cka-002-lab.yaml");

/// Where the control commands find a running `theseus sim serve`.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The simulator's address (default: the server in the kubeconfig written by `sim serve`).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The kubeconfig written by `theseus sim serve`.
    #[arg(long, value_name = "PATH", default_value = "theseus-sim.kubeconfig")]
    kubeconfig: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json", "yaml"])]
    output: String,
}

/// What a scenario file holds.
enum Loaded {
    Living(Box<Expanded>),
    Manifests(Vec<Value>),
}

fn read_scenario(path: Option<&Path>, empty: bool) -> Result<Loaded> {
    if empty {
        return Ok(Loaded::Manifests(Vec::new()));
    }
    let (name, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| {
                BadInput(format!(
                    "cannot read the scenario file {}: {e}",
                    p.display()
                ))
            })?,
        ),
        None => (
            "scenarios/cka-002-lab.yaml (built in)".to_string(),
            DEFAULT_SCENARIO.to_string(),
        ),
    };
    let is_scenario = serde_yaml::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("kind")
                .and_then(Value::as_str)
                .map(|k| k == "Scenario")
        })
        .unwrap_or(false);
    if is_scenario {
        let s = Scenario::parse(&name, &text).map_err(|e| BadInput(e.to_string()))?;
        let e = s.expand(&name).map_err(|e| BadInput(e.to_string()))?;
        Ok(Loaded::Living(Box::new(e)))
    } else {
        let m = scenario::parse_manifests(&name, &text).map_err(|e| BadInput(e.to_string()))?;
        Ok(Loaded::Manifests(m))
    }
}

/// Scales a scenario's durations down by `speed`.
fn speed_up(e: &mut Expanded, speed: f64) {
    let t = &mut e.timing;
    for d in [
        &mut t.boot_seconds,
        &mut t.reimage_seconds,
        &mut t.jitter_seconds,
        &mut t.pod_startup_seconds,
        &mut t.pod_exit_seconds,
        &mut t.endpoint_propagation_seconds,
    ] {
        *d /= speed;
    }
    // Per-workload start-up and exit times (pod template annotations), so that every duration
    // keeps its proportion to the others (a pod's exit against the endpoint propagation decides
    // whether a client sees a failure).
    for m in &mut e.manifests {
        scale_annotations(m, speed);
    }
    // Fault times too (atSeconds, downSeconds, latencySeconds, ...).
    for f in &mut e.faults {
        if let Some(m) = f.as_object_mut() {
            for (k, v) in m.iter_mut() {
                if let (true, Some(x)) = (k.ends_with("Seconds"), v.as_f64()) {
                    *v = json!(x / speed);
                }
            }
        }
    }
}

fn scale_annotations(v: &mut Value, speed: f64) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if matches!(
                    k.as_str(),
                    "sim.theseus.io/startup-seconds" | "sim.theseus.io/exit-seconds"
                ) {
                    if let Some(n) = x.as_str().and_then(|s| s.parse::<f64>().ok()) {
                        *x = json!((n / speed).to_string());
                    }
                } else {
                    scale_annotations(x, speed);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scale_annotations(x, speed)),
        _ => {}
    }
}

/// `theseus sim fault …`: inject, list and clear faults in a running simulator.
#[derive(clap::Subcommand)]
pub enum FaultCommand {
    /// Inject the fault described in FILE (YAML or JSON; `-` reads standard input). Kinds:
    ///   {kind: ApiError, verbs: [create], resources: [pods/eviction], rate: 0.3, code: 429,
    ///    latencySeconds: 0.2, startSeconds: 0, durationSeconds: 60}
    ///   {kind: WatchDrop, resources: [pods], afterSeconds: 30}
    ///   {kind: SlowKubelet, nodes: [worker-1], extraStartupSeconds: 20}
    ///   {kind: MachineCrash, machine: worker-2, atSeconds: 10, downSeconds: 120}
    Add {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// List the faults with whether each is in force and how often it fired.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Remove every fault.
    Clear {
        #[command(flatten)]
        target: Target,
    },
}

async fn fault(cmd: FaultCommand) -> Result<()> {
    match cmd {
        FaultCommand::Add { file, target } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| BadInput(format!("cannot read {}: {e}", file.display())))?
            };
            let v: Value = serde_yaml::from_str(&text)
                .map_err(|e| BadInput(format!("{}: not YAML or JSON: {e}", file.display())))?;
            theseus_sim::faults::FaultSpec::from_json(&v)
                .map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
            let r = call(&target, "POST", "/sim/v1/faults", Some(v)).await?;
            show(&target, &r, |r| println!("fault {} added", r["id"]))
        }
        FaultCommand::List { target } => {
            let v = call(&target, "GET", "/sim/v1/faults", None).await?;
            show(&target, &v, |v| {
                let list = v["faults"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("No faults.");
                    return;
                }
                println!("ID\tKIND\tACTIVE\tFIRED\tSPEC");
                for f in list {
                    let mut spec = f.clone();
                    if let Some(m) = spec.as_object_mut() {
                        for k in ["id", "kind", "active", "fired"] {
                            m.remove(k);
                        }
                    }
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        f["id"],
                        s(&f["kind"]),
                        f["active"],
                        f["fired"],
                        spec
                    );
                }
            })
        }
        FaultCommand::Clear { target } => {
            let v = call(&target, "DELETE", "/sim/v1/faults", None).await?;
            show(&target, &v, |v| println!("{} faults cleared", v["cleared"]))
        }
    }
}

pub async fn run(cmd: SimCommand) -> Result<()> {
    match cmd {
        SimCommand::Serve {
            scenario,
            empty,
            port,
            address,
            kubeconfig,
            server_version,
            pod_exit_seconds,
            speed,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                bail!(BadInput(format!(
                    "--speed must be a positive number, got {speed}"
                )));
            }
            let loaded = read_scenario(scenario.as_deref(), empty)?;
            // Keep the simulation alive for as long as we serve it.
            let (router, _sim) = match loaded {
                Loaded::Living(mut e) => {
                    speed_up(&mut e, speed);
                    let sim = Simulation::start(&e)
                        .await
                        .map_err(|e| BadInput(e.to_string()))?;
                    // Serve a settled cluster, with probes counting from there.
                    eprintln!(
                        "starting the simulated cluster: waiting up to 120 s for every node Ready \
                         and every pod Running..."
                    );
                    if let Err(err) = sim.wait_steady(Duration::from_secs(120)).await {
                        eprintln!("warning: {err}; serving it anyway");
                    }
                    (sim.router(), Some(sim))
                }
                Loaded::Manifests(m) => {
                    let config = ServerConfig {
                        version: server_version,
                        ..Default::default()
                    };
                    let server = api_only(config, m, pod_exit_seconds).await?;
                    (server.router(), None)
                }
            };
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(address, port))
                .await
                .with_context(|| format!("cannot listen on {address}:{port}"))?;
            let addr = listener.local_addr()?;
            std::fs::write(&kubeconfig, serve::kubeconfig(addr))
                .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
            println!("theseus simulator serving the Kubernetes API at http://{addr}");
            println!("kubeconfig written to {}", kubeconfig.display());
            println!(
                "try: kubectl --kubeconfig {} get nodes -o wide      (Ctrl-C to stop)",
                kubeconfig.display()
            );
            tokio::select! {
                r = axum::serve(listener, router) => r.context("the server stopped")?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        SimCommand::Generate {
            nodes,
            pods_per_node,
            zones,
            seed,
            output,
        } => {
            let s = scenario::generate(&GenerateOptions {
                nodes,
                pods_per_node,
                zones,
                seed,
            });
            let text = serde_yaml::to_string(&s).context("serializing the scenario")?;
            match output {
                Some(p) => std::fs::write(&p, text)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        SimCommand::Machines { target } => {
            let v = call(&target, "GET", "/sim/v1/machines", None).await?;
            show(&target, &v, |v| {
                println!("NAME\tPOWER\tOS-IMAGE\tKUBELET");
                for m in v["items"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}\t{}",
                        s(&m["name"]),
                        s(&m["power"]),
                        s(&m["osImage"]),
                        s(&m["kubeletVersion"])
                    );
                }
            })
        }
        SimCommand::PowerOff { node, target } => act(&target, &node, "power-off", None).await,
        SimCommand::PowerOn { node, target } => act(&target, &node, "power-on", None).await,
        SimCommand::Reimage {
            node,
            os_image,
            kernel_version,
            kubelet_version,
            target,
        } => {
            let body = json!({"osImage": os_image, "kernelVersion": kernel_version, "kubeletVersion": kubelet_version});
            act(&target, &node, "reimage", Some(body)).await
        }
        SimCommand::Probes { target } => {
            let v = call(&target, "GET", "/sim/v1/probes", None).await?;
            show(&target, &v, |v| {
                println!("SERVICE\tREQUESTS\tFAILURES\tRETRIED\tLONGEST-GAP");
                for p in v["probes"].as_array().into_iter().flatten() {
                    println!(
                        "{}/{}\t{}\t{}\t{}\t{:.1}s",
                        s(&p["namespace"]),
                        s(&p["service"]),
                        p["requests"],
                        p["failures"],
                        p["retried"],
                        p["longestGapSeconds"].as_f64().unwrap_or(0.0)
                    );
                }
            })
        }
        SimCommand::Fault { command } => fault(command).await,
        SimCommand::Violations { target } => {
            let v = call(&target, "GET", "/sim/v1/violations", None).await?;
            show(&target, &v, |v| {
                let list = v["violations"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("No violations.");
                }
                for x in list {
                    println!(
                        "{:>8.1}s  {}  {}  {}",
                        x["atSeconds"].as_f64().unwrap_or(0.0),
                        s(&x["kind"]),
                        s(&x["object"]),
                        s(&x["message"])
                    );
                }
            })
        }
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn show(target: &Target, v: &Value, table: impl Fn(&Value)) -> Result<()> {
    match target.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", serde_yaml::to_string(v)?),
        _ => table(v),
    }
    Ok(())
}

async fn act(target: &Target, node: &str, action: &str, body: Option<Value>) -> Result<()> {
    let v = call(
        target,
        "POST",
        &format!("/sim/v1/machines/{node}/{action}"),
        body,
    )
    .await?;
    show(target, &v, |v| {
        println!("machine/{node} {action}: {}", s(&v["power"]));
    })
}

/// The simulator's base URL: `--server`, else the kubeconfig's cluster server.
fn base_url(target: &Target) -> Result<String> {
    if let Some(s) = &target.server {
        return Ok(s.trim_end_matches('/').to_string());
    }
    let text = std::fs::read_to_string(&target.kubeconfig).map_err(|e| {
        BadInput(format!(
            "cannot read {} ({e}): start `theseus sim serve` first, or pass --server URL",
            target.kubeconfig.display()
        ))
    })?;
    let v: Value = serde_yaml::from_str(&text).map_err(|e| {
        BadInput(format!(
            "{} is not a kubeconfig: {e}",
            target.kubeconfig.display()
        ))
    })?;
    v.pointer("/clusters/0/cluster/server")
        .and_then(Value::as_str)
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            BadInput(format!(
                "{} names no cluster server",
                target.kubeconfig.display()
            ))
            .into()
        })
}

/// One request to the simulator's control API, with a timeout.
async fn call(target: &Target, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let base = base_url(target)?;
    let url = format!("{base}{path}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<axum::body::Body>();
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .map_err(|e| BadInput(format!("bad address {url}: {e}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .with_context(|| format!("no answer from {url} within 30 s"))?
        .with_context(|| {
            format!("cannot reach the simulator at {base}: is `theseus sim serve` running?")
        })?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("reading the simulator's answer")?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["message"].as_str().unwrap_or("").to_string();
        bail!("{method} {path}: {status}: {msg}");
    }
    Ok(v)
}

async fn api_only(
    config: ServerConfig,
    manifests: Vec<Value>,
    pod_exit_seconds: u64,
) -> Result<Arc<ApiServer>> {
    let server = ApiServer::new(config).await;
    scenario::load(&server, manifests)
        .await
        .map_err(|e| BadInput(format!("the scenario cannot be loaded: {e}")))?;
    kubelet::spawn_termination_confirmer(
        server.clone(),
        kubelet::TerminationPolicy {
            exit_after: Some(Duration::from_secs(pod_exit_seconds)),
        },
    );
    Ok(server)
}

//! `theseus`: the command line. Thin: parsing, wiring and output; the logic lives in the library
//! crates.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use theseus_sim::{ApiServer, ServerConfig, kubelet, scenario, serve};

/// Exit code for bad input (unreadable or invalid files, bad flags).
const EXIT_BAD_INPUT: u8 = 2;

/// The built-in scenario used by `theseus demo` and `theseus sim serve` without `--scenario`.
const SMALL_SCENARIO: &str = include_str!("../../sim/scenarios/small.yaml");

#[derive(Parser)]
#[command(
    name = "theseus",
    version,
    about = "Replace every node, etcd member and control-plane host of a live Kubernetes cluster without downtime",
    long_about = None
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The digital twin: a Kubernetes-API-compatible simulator.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Start the built-in simulated cluster in-process and show it, as kubectl would.
    Demo,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve the simulator's Kubernetes API on a loopback port for kubectl and other clients.
    ///
    /// Writes a kubeconfig for it and runs until Ctrl-C. Example:
    ///   theseus sim serve --scenario cluster.yaml &
    ///   kubectl --kubeconfig theseus-sim.kubeconfig get nodes -o wide
    Serve {
        /// YAML manifests the cluster starts with (several documents, a list, or `kind: List`).
        /// An empty file is an empty cluster. Without it, a built-in three-node cluster is used.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Start with no objects at all (except the four default namespaces).
        #[arg(long, conflicts_with = "scenario")]
        empty: bool,
        /// TCP port (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Address to listen on. Loopback unless you ask otherwise: there is no authentication.
        #[arg(long, default_value = "127.0.0.1")]
        address: IpAddr,
        /// Where to write the kubeconfig.
        #[arg(long, value_name = "PATH", default_value = "theseus-sim.kubeconfig")]
        kubeconfig: PathBuf,
        /// Kubernetes version the server reports.
        #[arg(long, default_value = "v1.33.4")]
        server_version: String,
        /// Seconds a terminating pod's containers take to exit (capped by its grace period).
        #[arg(long, default_value_t = 1)]
        pod_exit_seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Marks errors caused by the user's input (exit code 2).
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sim {
            command:
                SimCommand::Serve {
                    scenario,
                    empty,
                    port,
                    address,
                    kubeconfig,
                    server_version,
                    pod_exit_seconds,
                },
        } => {
            let manifests = load_scenario(scenario.as_deref(), empty)?;
            let config = ServerConfig {
                version: server_version,
                ..Default::default()
            };
            let server = start(config, manifests, pod_exit_seconds).await?;
            let serving = serve::serve(server, SocketAddr::new(address, port))
                .await
                .with_context(|| format!("cannot listen on {address}:{port}"))?;
            std::fs::write(&kubeconfig, serve::kubeconfig(serving.addr))
                .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
            println!(
                "theseus simulator serving the Kubernetes API at http://{}",
                serving.addr
            );
            println!("kubeconfig written to {}", kubeconfig.display());
            println!(
                "try: kubectl --kubeconfig {} get nodes -o wide      (Ctrl-C to stop)",
                kubeconfig.display()
            );
            tokio::select! {
                r = serving.task => {
                    r.context("the server task failed")?.context("the server stopped")?;
                }
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        Command::Demo => demo().await,
    }
}

fn load_scenario(path: Option<&std::path::Path>, empty: bool) -> Result<Vec<serde_json::Value>> {
    if empty {
        return Ok(Vec::new());
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
        None => ("built-in scenario".to_string(), SMALL_SCENARIO.to_string()),
    };
    scenario::parse_manifests(&name, &text).map_err(|e| BadInput(e.to_string()).into())
}

async fn start(
    config: ServerConfig,
    manifests: Vec<serde_json::Value>,
    pod_exit_seconds: u64,
) -> Result<Arc<ApiServer>> {
    let server = ApiServer::new(config).await;
    scenario::load(&server, manifests)
        .await
        .map_err(|e| BadInput(format!("the scenario cannot be loaded: {e}")))?;
    kubelet::spawn_termination_confirmer(
        server.clone(),
        kubelet::TerminationPolicy {
            exit_after: Some(std::time::Duration::from_secs(pod_exit_seconds)),
        },
    );
    Ok(server)
}

/// Prints a Table response the way kubectl does: upper-case headers, aligned columns.
fn print_table(table: &serde_json::Value, wide: bool) {
    let cols: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let rows: Vec<Vec<String>> = table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            cols.iter()
                .map(|(i, _)| match &r["cells"][*i] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|(_, h)| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(cols.iter().map(|(_, h)| h.as_str()).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The demo: the built-in cluster on the in-process simulator, read through the real API path.
/// The migration itself (cordon, drain, reimage, measured availability) arrives with the engine.
async fn demo() -> Result<()> {
    use tower::ServiceExt;
    let manifests = load_scenario(None, false)?;
    let server = start(ServerConfig::default(), manifests, 1).await?;
    let router = server.router();
    for (title, path) in [
        ("nodes", "/api/v1/nodes"),
        ("pods, all namespaces", "/api/v1/pods"),
        (
            "pod disruption budgets",
            "/apis/policy/v1/poddisruptionbudgets",
        ),
    ] {
        let req = http::Request::get(path)
            .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(axum::body::Body::empty())
            .context("building a request")?;
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .context("calling the simulator")?;
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .context("reading the simulator's answer")?;
        let table: serde_json::Value = serde_json::from_slice(&body)?;
        println!("== {title} ==");
        print_table(&table, true);
        println!();
    }
    println!("The simulated cluster above speaks the Kubernetes API; serve it to kubectl with");
    println!("  theseus sim serve");
    Ok(())
}

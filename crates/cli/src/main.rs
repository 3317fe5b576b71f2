//! `theseus`: the command line. Thin: parsing, wiring and output; the logic lives in the library
//! crates.

mod etcd_cmd;
mod plan_cmd;
mod run_cmd;
mod sim_cmd;
mod simulate_cmd;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Exit code for bad input (unreadable or invalid files, bad flags).
const EXIT_BAD_INPUT: u8 = 2;

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
    /// The digital twin: a Kubernetes-API-compatible simulated cluster.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// The main job on the embedded simulator: runbook 000's OS migration, live
    ///
    /// Starts a simulated DCE cluster (3 control-plane nodes, 6 CentOS 7.9 workers, replicated
    /// services with PDBs, a single-replica service, traffic probes) in-process on virtual time,
    /// plans the migration of every worker to Ubuntu 22.04 (remove-before-add, same names and
    /// IPs), runs the real engine and reports nodes migrated, duration against the estimate,
    /// failed probe requests and PDB violations as the simulator measured them. Needs nothing
    /// but this binary.
    ///
    /// Example:
    ///   theseus demo
    ///   theseus demo -o json
    #[command(verbatim_doc_comment)]
    Demo(run_cmd::DemoArgs),
    /// Carry out a migration: plan, confirm, then node by node with gates and a journal
    ///
    /// Captures the cluster (or reads --snapshot), plans, shows the plan and asks (unless
    /// --yes), then runs the waves: cordon, drain (PDB-aware, single-replica Deployments surged
    /// first), node action through spec.provider, wait for the node, uncordon, gates. Every
    /// step is journaled first (./.theseus/NAME.journal.db), so `theseus resume` continues after
    /// a crash. Exit 0 completed, 1 paused/aborted/refused, 2 bad input.
    ///
    /// Examples:
    ///   theseus apply -f migration.yaml --dry-run
    ///   theseus apply -f migration.yaml --context prod --yes -o json
    #[command(verbatim_doc_comment)]
    Apply(run_cmd::ApplyArgs),
    /// Continue a paused, aborted-by-crash or interrupted run from its journal.
    Resume(run_cmd::ResumeArgs),
    /// Show a run's state and each node's last phase (works while `apply` runs).
    Status(run_cmd::StatusArgs),
    /// Ask the running `apply` to pause: running node steps finish, no new node starts.
    Pause(run_cmd::RequestArgs),
    /// Ask the running `apply` to abort: no new node starts; steps that have not acted on a
    /// machine stop and uncordon their node.
    Abort(run_cmd::RequestArgs),
    /// Capture a cluster into a snapshot file for offline planning (versioned JSON)
    ///
    /// Reads nodes, pods (each with its top controller), workloads, PodDisruptionBudgets,
    /// Services, namespaces, control-plane static pods, the kubeadm-config and cluster-info
    /// ConfigMaps and a Kubean inventory, with paginated `get` and `list` requests only:
    /// nothing in the cluster changes. Prints a one-line summary.
    ///
    /// Example:
    ///   theseus snapshot --context prod -o cluster.json
    #[command(verbatim_doc_comment)]
    Snapshot(plan_cmd::SnapshotArgs),
    /// Plan a migration: waves, findings and duration, like `kubeadm upgrade plan`
    ///
    /// Plans from the live cluster (--kubeconfig, --context) or offline from a snapshot
    /// (--snapshot). Nothing in the cluster changes. Exit code 0 when the plan can run, 1 when
    /// an error finding blocks it, 2 when the spec or the snapshot is invalid (each problem
    /// with its field, line and column).
    ///
    /// Examples:
    ///   theseus plan -f migration.yaml --snapshot cluster.json
    ///   theseus plan -f migration.yaml --context prod -o json
    #[command(verbatim_doc_comment)]
    Plan(plan_cmd::PlanArgs),
    /// What if: run a migration on a simulation of a captured cluster, on virtual time
    ///
    /// Builds a simulated cluster from a snapshot (`theseus snapshot`): the same nodes (names,
    /// IPs, OS, kubelet, roles, zones, labels, taints, allocatable), workloads, bare pods,
    /// PodDisruptionBudgets and Services, with synthetic clients probing every Service. Then
    /// plans and runs the migration with the real engine, the simulator's machines standing in
    /// for spec.provider (reimage: spec.provider.expectedActionDuration less the boot, else
    /// 900 s; boot 90 s). Reports the duration against the plan's estimate, the drains a PDB
    /// blocked, the downtime per Service, and what the simulation ignored. Hours of migration
    /// take seconds; nothing touches a real cluster. Exit 0 completed without a failed probe
    /// request, 1 not clean or refused (the reason is printed), 2 bad input.
    ///
    /// Examples:
    ///   theseus snapshot --context prod -o cluster.json
    ///   theseus simulate -f migration.yaml --snapshot cluster.json
    ///   theseus simulate -f migration.yaml --snapshot cluster.json --reimage-seconds 1200 -o json
    #[command(verbatim_doc_comment)]
    Simulate(simulate_cmd::SimulateArgs),
    /// etcd operations against a real cluster, with etcdctl's flags (--endpoints, --cacert,
    /// --cert, --key): health (`status`), safe replacement of one member (`replace`) or of all
    /// (`migrate`), snapshots (`snapshot save|status|restore`), `defrag` and `alarm list|disarm`.
    Etcd {
        #[command(subcommand)]
        command: etcd_cmd::EtcdCommand,
    },
}

#[derive(Subcommand)]
pub enum SimCommand {
    /// Serve a simulated cluster's Kubernetes API on a loopback port for kubectl and other clients.
    ///
    /// A scenario (`kind: Scenario`) runs the whole living cluster: machines and kubelets,
    /// scheduler, controllers, traffic probes, with the control API under /sim/v1. A plain stream
    /// of manifests serves them through the API server alone. Writes a kubeconfig and runs until
    /// Ctrl-C. Example:
    ///   theseus sim serve --scenario scenarios/cka-002-lab.yaml &
    ///   kubectl --kubeconfig theseus-sim.kubeconfig get nodes -o wide
    Serve {
        /// A scenario or a YAML stream of manifests. Without it: the CKA lab of runbook 002.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Start with no objects at all (except the four default namespaces), API server only.
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
        /// Kubernetes version the server reports (manifest streams; a scenario says its own).
        #[arg(long, default_value = "v1.33.4")]
        server_version: String,
        /// Seconds a terminating pod's containers take to exit (manifest streams only).
        #[arg(long, default_value_t = 1)]
        pod_exit_seconds: u64,
        /// Run the scenario's durations (boot, reimage, pod start-up and exit, endpoint propagation) this many times
        /// faster than written.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Write a large synthetic scenario (N workers, pods per worker, PDB mix, zones).
    Generate {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 30)]
        pods_per_node: usize,
        #[arg(long, default_value_t = 3)]
        zones: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default: standard output).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the simulated machines (power state, OS image, kubelet version).
    Machines {
        #[command(flatten)]
        target: sim_cmd::Target,
    },
    /// Power a machine off: its kubelet stops and its pods die with it.
    PowerOff {
        node: String,
        #[command(flatten)]
        target: sim_cmd::Target,
    },
    /// Power a machine on: it boots and its kubelet registers the node again.
    PowerOn {
        node: String,
        #[command(flatten)]
        target: sim_cmd::Target,
    },
    /// Reimage a machine (powered off first if needed) to a new OS image and/or kubelet version.
    Reimage {
        node: String,
        #[arg(long)]
        os_image: Option<String>,
        #[arg(long)]
        kernel_version: Option<String>,
        #[arg(long)]
        kubelet_version: Option<String>,
        #[command(flatten)]
        target: sim_cmd::Target,
    },
    /// Print the traffic probes' results: requests, failures, longest gap per Service.
    Probes {
        #[command(flatten)]
        target: sim_cmd::Target,
    },
    /// Inject faults into a running simulator (API errors and latency, dropped watches, slow
    /// kubelets, machine crashes), list them, clear them.
    Fault {
        #[command(subcommand)]
        command: sim_cmd::FaultCommand,
    },
    /// Print what the invariant recorder saw (PDBs broken, pods lost, nodes left cordoned).
    Violations {
        #[command(flatten)]
        target: sim_cmd::Target,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Simulations (the demo, the what-if) run on a paused current-thread clock: virtual time,
    // deterministic.
    let mut builder = if matches!(cli.command, Command::Demo(_) | Command::Simulate(_)) {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.start_paused(true);
        b
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
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
pub struct BadInput(pub String);

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
        Command::Sim { command } => sim_cmd::run(command).await,
        Command::Demo(args) => run_cmd::demo(args).await,
        Command::Apply(args) => run_cmd::apply(args).await,
        Command::Resume(args) => run_cmd::resume(args).await,
        Command::Status(args) => run_cmd::status(args),
        Command::Pause(args) => run_cmd::request(args, theseus_journal::Request::Pause),
        Command::Abort(args) => run_cmd::request(args, theseus_journal::Request::Abort),
        Command::Snapshot(args) => plan_cmd::snapshot(args).await,
        Command::Plan(args) => plan_cmd::plan(args).await,
        Command::Simulate(args) => simulate_cmd::simulate(args).await,
        Command::Etcd { command } => etcd_cmd::run(command).await,
    }
}

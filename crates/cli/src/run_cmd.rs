//! `theseus apply`, `resume`, `status`, `pause`, `abort` and `demo`: carrying out a migration and
//! watching it. The engine (crates/engine) does the work; this module wires flags, the provider,
//! the journal and the output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use theseus_cluster::Ops;
use theseus_engine::{
    Availability, Engine, EngineOptions, EngineParams, Event, EventSink, HttpProbes, Report,
    SimAvailability, Stamped,
};
use theseus_journal::{Journal, Mark, Request};
use theseus_model::Migration;
use theseus_model::spec::ProviderType;
use theseus_providers::Provider;
use theseus_providers::command::CommandProvider;
use theseus_providers::sim::SimProvider;

use crate::BadInput;
use crate::plan_cmd::{ClusterFlags, capture, connect_with, read_migration, read_snapshot};

/// Output of the run commands.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFormat {
    /// Progress bars (a terminal) or one line per event, then the report.
    Table,
    /// One JSON object per line for every event, then the report as the last line.
    Json,
}

/// Where the journal is.
#[derive(Args, Debug, Clone)]
pub struct JournalFlags {
    /// The run's journal (default: the only one in ./.theseus/).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

/// `theseus apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The migration spec (`kind: Migration`).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Plan from this snapshot instead of a fresh capture (the run still acts on the cluster the
    /// kubeconfig names, and checks that every planned node exists there).
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Show the plan and stop: nothing in the cluster changes.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The journal to create (default: ./.theseus/<migration name>.journal.db).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Flags of the engine shared by apply and resume.
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    /// `table`: progress and a report; `json`: one event per line, the report last.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = RunFormat::Table)]
    pub output: RunFormat,
    /// The SLO guard: pause when more than this share of a probe's requests fail over the
    /// window (0 turns the guard off).
    #[arg(long, value_name = "RATE", default_value_t = 0.01)]
    pub slo_max_failure_rate: f64,
    /// The SLO guard's window in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub slo_window: u64,
    /// Namespace of the Lease that keeps two runs off one cluster.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
}

impl RunFlags {
    fn options(&self) -> EngineOptions {
        EngineOptions {
            slo_max_failure_rate: (self.slo_max_failure_rate > 0.0)
                .then_some(self.slo_max_failure_rate),
            slo_window: Duration::from_secs(self.slo_window.max(5)),
            lease_namespace: self.lease_namespace.clone(),
            ..EngineOptions::default()
        }
    }
}

/// `theseus resume`.
#[derive(Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub journal: JournalFlags,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `theseus status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub journal: JournalFlags,
    /// `table` or `json`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = RunFormat::Table)]
    pub output: RunFormat,
}

/// `theseus pause` and `theseus abort`.
#[derive(Args, Debug)]
pub struct RequestArgs {
    #[command(flatten)]
    pub journal: JournalFlags,
    /// Why (shown in status and the report).
    #[arg(long, default_value = "requested by the operator")]
    pub reason: String,
}

/// `theseus demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// `table`: the plan, progress and the report; `json`: only the report.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = RunFormat::Table)]
    pub output: RunFormat,
}

fn bad(message: String) -> anyhow::Error {
    anyhow!(BadInput(message))
}

fn new_run_id(name: &str) -> String {
    format!("{name}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

/// The journal flag, else the only journal in ./.theseus/.
fn find_journal(flags: &JournalFlags) -> Result<PathBuf> {
    if let Some(p) = &flags.journal {
        return Ok(p.clone());
    }
    let dir = Path::new(".theseus");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".journal.db"))
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(bad(
            "no journal in ./.theseus/: no run was started here; pass --journal FILE or start one with `theseus apply`".into(),
        )),
        many => Err(bad(format!(
            "several journals in ./.theseus/ ({}); pass --journal FILE",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A provider and where availability figures come from.
type Wiring = (Arc<dyn Provider>, Option<Arc<dyn Availability>>);

/// The provider and the availability source the spec asks for, against the cluster at
/// `server`.
fn provider_for(migration: &Migration, server: &str) -> Result<Wiring> {
    let Some(p) = &migration.spec.provider else {
        return Err(bad(
            "spec.provider is required to apply a migration: `type: command` with `command.run` (a script that reinstalls the machine), or `type: sim` against `theseus sim serve`".into(),
        ));
    };
    let timeout = Duration::from_secs(migration.spec.timeouts.node_action.0);
    match p.kind {
        ProviderType::Sim => {
            let base = server.trim_end_matches('/');
            let sim = SimProvider::http(base).map_err(|e| bad(e.to_string()))?;
            let avail: Arc<dyn Availability> = Arc::new(SimAvailability::new(
                SimProvider::http(base).map_err(|e| bad(e.to_string()))?,
            ));
            Ok((Arc::new(sim), Some(avail)))
        }
        ProviderType::Command => {
            let c = p.command.as_ref().ok_or_else(|| {
                bad("spec.provider.command.run is required for `type: command`".into())
            })?;
            let provider =
                CommandProvider::new(c.run.join("\n"), timeout).map_err(|e| bad(e.to_string()))?;
            let avail: Option<Arc<dyn Availability>> = if migration.spec.probes.is_empty() {
                None
            } else {
                Some(Arc::new(
                    HttpProbes::start(&migration.spec.probes).map_err(bad)?,
                ))
            };
            Ok((Arc::new(provider), avail))
        }
        other => Err(bad(format!(
            "the {} provider is not available yet; use `command` or `sim`",
            other.as_str()
        ))),
    }
}

/// `theseus apply`.
pub async fn apply(args: ApplyArgs) -> Result<()> {
    let migration = read_migration(&args.file)?;
    let json = args.run.output == RunFormat::Json;
    let (snapshot, conn) = match &args.snapshot {
        Some(p) => {
            let s = read_snapshot(p)?;
            let conn = connect_with(&args.cluster, true).await?;
            (s, conn)
        }
        None => {
            let (s, _) = capture(&args.cluster).await?;
            (s, connect_with(&args.cluster, true).await?)
        }
    };
    let plan = theseus_plan::plan(&snapshot, &migration);
    if !json {
        print!("{}", theseus_plan::render_text(&plan));
    }
    Engine::preflight(&migration, &plan).map_err(|e| anyhow!("{e}; nothing was changed"))?;
    if args.dry_run {
        if json {
            println!("{}", serde_json::to_string(&plan)?);
        } else {
            println!("\n--dry-run: nothing was changed.");
        }
        return Ok(());
    }
    let (provider, availability) = provider_for(&migration, &conn.server)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(bad(
                "not a terminal, so no one can confirm: pass --yes to apply without asking".into(),
            ));
        }
        eprint!(
            "\nApply this plan to {} ({} nodes in {} waves)? [y/N] ",
            conn.server,
            plan.waves.iter().map(|w| w.nodes.len()).sum::<usize>(),
            plan.waves.len()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not confirmed; nothing was changed");
        }
    }
    let run_id = new_run_id(&migration.metadata.name);
    let path = args
        .journal
        .clone()
        .unwrap_or_else(|| theseus_journal::default_path(&migration.metadata.name));
    let record = theseus_engine::run_record(&run_id, &migration, &plan, &conn.server)?;
    let journal = Arc::new(Journal::create(&path, &record).map_err(|e| bad(e.to_string()))?);
    if !json {
        println!("\nrun {run_id}, journal {}", path.display());
    }
    let progress = Progress::new(args.run.output);
    let engine = Engine::new(EngineParams {
        migration,
        plan,
        run_id,
        ops: Ops::new(conn.client),
        provider,
        journal,
        availability,
        events: progress.sink(),
        options: args.run.options(),
    });
    let report = engine.run().await?;
    progress.finish();
    finish(&report, args.run.output, Some(&path))
}

/// `theseus resume`.
pub async fn resume(args: ResumeArgs) -> Result<()> {
    let path = find_journal(&args.journal)?;
    let journal = Arc::new(Journal::open(&path).map_err(|e| bad(e.to_string()))?);
    let (run_id, migration, plan) = theseus_engine::load_run(&journal)?;
    let conn = connect_with(&args.cluster, true).await?;
    let (provider, availability) = provider_for(&migration, &conn.server)?;
    if args.run.output == RunFormat::Table {
        println!("resuming run {run_id} from {}", path.display());
    }
    let progress = Progress::new(args.run.output);
    let engine = Engine::new(EngineParams {
        migration,
        plan,
        run_id,
        ops: Ops::new(conn.client),
        provider,
        journal,
        availability,
        events: progress.sink(),
        options: args.run.options(),
    });
    let report = engine.run().await?;
    progress.finish();
    finish(&report, args.run.output, Some(&path))
}

/// Prints the report; paused or aborted runs exit 1 with what to do next.
fn finish(report: &Report, format: RunFormat, journal: Option<&Path>) -> Result<()> {
    match format {
        RunFormat::Json => println!("{}", serde_json::to_string(report)?),
        RunFormat::Table => print_report(report),
    }
    let j = journal
        .map(|p| format!(" --journal {}", p.display()))
        .unwrap_or_default();
    match report.state.as_str() {
        "completed" => Ok(()),
        "paused" => bail!(
            "the run paused: {}. Fix the cause, then `theseus resume{j}`",
            report.reason.as_deref().unwrap_or("requested")
        ),
        "aborted" => bail!(
            "the run was aborted: {}",
            report.reason.as_deref().unwrap_or("requested")
        ),
        other => bail!("the run ended {other}"),
    }
}

fn print_report(r: &Report) {
    println!();
    println!("Run {} of {}: {}", r.run_id, r.migration, r.state);
    if let Some(reason) = &r.reason {
        println!("  reason: {reason}");
    }
    println!(
        "  nodes migrated: {}/{}   waves: {}/{}",
        r.nodes_migrated, r.nodes_total, r.waves_completed, r.waves_total
    );
    println!(
        "  duration: {} (plan estimated {}, lower bound {})",
        hms(r.elapsed_seconds),
        hms(r.estimated_seconds as f64),
        hms(r.lower_bound_seconds as f64)
    );
    println!(
        "  evictions: {} (refused by a PDB and retried: {}), single-replica Deployments surged: {}",
        r.evictions, r.evictions_refused, r.surged
    );
    if !r.probes.is_empty() {
        println!();
        println!(
            "{:<32} {:>9} {:>9} {:>12}",
            "PROBE", "REQUESTS", "FAILURES", "LONGEST GAP"
        );
        for p in &r.probes {
            println!(
                "{:<32} {:>9} {:>9} {:>11.1}s",
                p.name, p.requests, p.failures, p.longest_gap_seconds
            );
        }
    }
    println!();
    println!("  probe failures: {}", r.probe_failures);
    if let Some(v) = r.pdb_violations {
        println!("  PDB violations: {v}");
    }
    if let Some(v) = r.lost_pods {
        println!("  workloads below their replicas: {v}");
    }
    if !r.nodes_left.is_empty() {
        println!();
        println!(
            "{:<28} {:<12} {:<9} REASON",
            "NODE LEFT", "STATUS", "CORDONED"
        );
        for n in &r.nodes_left {
            println!(
                "{:<28} {:<12} {:<9} {}",
                n.node,
                n.status,
                if n.cordoned { "yes" } else { "no" },
                n.reason
            );
        }
    }
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// `theseus status`: the run's state and each node's last phase, from the journal (readable
/// while `apply` runs).
pub fn status(args: StatusArgs) -> Result<()> {
    let path = find_journal(&args.journal)?;
    let journal = Journal::open(&path).map_err(|e| bad(e.to_string()))?;
    let run = journal.run()?;
    let states = journal.node_states()?;
    let request = journal.request()?;
    if args.output == RunFormat::Json {
        println!(
            "{}",
            serde_json::json!({
                "runId": run.run_id, "migration": run.migration_name, "cluster": run.cluster,
                "startedAt": run.started_at, "state": run.state,
                "request": request.map(|(r, why)| serde_json::json!({"request": r, "reason": why})),
                "nodes": states,
            })
        );
        return Ok(());
    }
    println!("RUN        {}", run.run_id);
    println!("MIGRATION  {}", run.migration_name);
    println!("CLUSTER    {}", run.cluster);
    println!("STARTED    {}", run.started_at);
    println!(
        "STATE      {}",
        serde_json::to_value(run.state)?.as_str().unwrap_or("")
    );
    if let Some((r, why)) = request {
        println!(
            "REQUEST    {} ({why})",
            serde_json::to_value(r)?.as_str().unwrap_or("")
        );
    }
    println!();
    println!(
        "{:<28} {:<5} {:<14} {:<7} {:<25} DETAIL",
        "NODE", "WAVE", "PHASE", "MARK", "AT"
    );
    for (node, e) in &states {
        let detail = e
            .detail
            .get("error")
            .or_else(|| e.detail.get("reason"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        println!(
            "{:<28} {:<5} {:<14} {:<7} {:<25} {detail}",
            node,
            e.wave.map(|w| w.to_string()).unwrap_or_default(),
            e.phase,
            match e.mark {
                Mark::Intent => "started",
                Mark::Done => "done",
                Mark::Failed => "failed",
                Mark::Info => "info",
            },
            e.at
        );
    }
    Ok(())
}

/// `theseus pause` / `theseus abort`.
pub fn request(args: RequestArgs, r: Request) -> Result<()> {
    let path = find_journal(&args.journal)?;
    let journal = Journal::open(&path).map_err(|e| bad(e.to_string()))?;
    journal.set_request(r, &args.reason)?;
    match r {
        Request::Pause => println!(
            "pause requested: running node steps finish, no new node starts; continue with `theseus resume`"
        ),
        Request::Abort => println!(
            "abort requested: no new node starts, steps not yet acting on a machine stop and uncordon their node"
        ),
    }
    Ok(())
}

const DCE_SCENARIO: &str = include_str!("../../../scenarios/dce-000-centos-to-ubuntu.yaml");
const DCE_MIGRATION: &str = include_str!("../../../scenarios/dce-000-migration.yaml");

/// `theseus demo`: runbook 000 on the embedded simulator, on virtual time.
pub async fn demo(args: DemoArgs) -> Result<()> {
    let json = args.output == RunFormat::Json;
    let scenario =
        theseus_sim::scenario::Scenario::parse("dce-000-centos-to-ubuntu.yaml", DCE_SCENARIO)
            .map_err(|e| anyhow!("the built-in scenario: {e}"))?;
    let expanded = scenario
        .expand("demo")
        .map_err(|e| anyhow!("the built-in scenario: {e}"))?;
    let migration =
        Migration::from_yaml(DCE_MIGRATION).map_err(|e| anyhow!("the built-in migration: {e}"))?;
    if !json {
        println!(
            "Runbook 000 on the simulator: 3 control-plane nodes and 6 CentOS 7.9 workers, every worker\nto Ubuntu 22.04 keeping its name and IP (remove-before-add). Virtual time: hours in seconds.\n"
        );
    }
    let sim = theseus_sim::sim::Simulation::start(&expanded).await?;
    sim.wait_steady(Duration::from_secs(3600)).await?;
    let plan = theseus_engine::twin::plan(&sim, &migration).await?;
    if !json {
        print!("{}", theseus_plan::render_text(&plan));
        println!();
    }
    Engine::preflight(&migration, &plan)?;
    let dir = tempfile_dir()?;
    let run_id = "demo-dce-000".to_string();
    let record = theseus_engine::run_record(&run_id, &migration, &plan, "in-process simulator")?;
    let journal = Arc::new(Journal::create(&dir.join("demo.journal.db"), &record)?);
    let progress = Progress::new(if json {
        RunFormat::Json
    } else {
        RunFormat::Table
    })
    .quiet(json);
    let engine = theseus_engine::twin::engine(
        &sim,
        &migration,
        &plan,
        journal,
        &run_id,
        progress.sink(),
        EngineOptions::default(),
    );
    let report = engine.run().await;
    progress.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if json {
        let v = serde_json::json!({
            "nodesMigrated": report.nodes_migrated,
            "probeFailures": report.probe_failures,
            "pdbViolations": report.pdb_violations.unwrap_or(0),
            "lostPods": report.lost_pods.unwrap_or(0),
            "simulatedSeconds": report.elapsed_seconds.round() as u64,
            "estimatedSeconds": report.estimated_seconds,
            "state": report.state,
            "probes": report.probes,
        });
        println!("{v}");
    } else {
        print_report(&report);
        println!();
        println!(
            "Every worker was migrated with {} failed probe requests and {} PDB violations, measured by\nthe simulator's synthetic clients and invariant recorder, not by theseus itself.",
            report.probe_failures,
            report.pdb_violations.unwrap_or(0)
        );
    }
    if report.clean() {
        Ok(())
    } else {
        bail!(
            "the demo migration did not complete cleanly (state {})",
            report.state
        )
    }
}

/// A fresh private directory for the demo's journal.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "theseus-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Draws events: progress bars on a terminal, one line per event otherwise, JSON lines with
/// `-o json`.
struct Progress {
    inner: Arc<Mutex<ProgressState>>,
}

struct ProgressState {
    format: RunFormat,
    quiet: bool,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    nodes: std::collections::BTreeMap<String, ProgressBar>,
}

impl Progress {
    fn new(format: RunFormat) -> Progress {
        let tty = std::io::stdout().is_terminal() && format == RunFormat::Table;
        let bars = tty.then(|| {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} nodes  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            total.set_prefix("migrate");
            Bars {
                multi,
                total,
                nodes: Default::default(),
            }
        });
        Progress {
            inner: Arc::new(Mutex::new(ProgressState {
                format,
                quiet: false,
                bars,
            })),
        }
    }

    /// Prints nothing (the demo's `-o json` prints only the report).
    fn quiet(self, quiet: bool) -> Progress {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).quiet = quiet;
        self
    }

    fn sink(&self) -> EventSink {
        let inner = self.inner.clone();
        Arc::new(move |e: &Stamped| {
            let mut st = inner.lock().unwrap_or_else(|p| p.into_inner());
            if st.quiet {
                return;
            }
            match (st.format, st.bars.as_mut()) {
                (RunFormat::Json, _) => {
                    if let Ok(s) = serde_json::to_string(e) {
                        println!("{s}");
                    }
                }
                (RunFormat::Table, Some(b)) => draw(b, e),
                (RunFormat::Table, None) => {
                    if let Some(line) = line(e) {
                        println!("[{:>7.0}s] {line}", e.at);
                    }
                }
            }
        })
    }

    fn finish(&self) {
        let st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = &st.bars {
            b.total.finish();
            let _ = b.multi.clear();
        }
    }
}

fn draw(b: &mut Bars, e: &Stamped) {
    let spinner = |b: &mut Bars, node: &str| -> ProgressBar {
        b.nodes
            .entry(node.to_string())
            .or_insert_with(|| {
                let pb = b.multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{prefix:>20.bold} {spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_prefix(node.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            })
            .clone()
    };
    match &e.event {
        Event::RunStarted {
            nodes,
            already_done,
            ..
        } => {
            b.total.set_length(*nodes as u64);
            b.total.set_position(*already_done as u64);
        }
        Event::WaveStarted { wave, nodes } => {
            b.total
                .set_message(format!("wave {wave}: {}", nodes.join(", ")));
        }
        Event::Phase {
            node,
            phase,
            detail,
            ..
        } => {
            spinner(b, node).set_message(format!("{phase} {detail}"));
        }
        Event::Blocked {
            node, pod, reason, ..
        } => {
            spinner(b, node).set_message(format!("drain blocked: {pod} {reason}"));
        }
        Event::NodeDone { node, seconds, .. } => {
            spinner(b, node).finish_with_message(format!("done in {}", hms(*seconds)));
            b.total.inc(1);
        }
        Event::NodeFailed { node, error, .. } => {
            spinner(b, node).abandon_with_message(format!("FAILED: {error}"));
        }
        Event::NodeStopped { node, reason, .. } => {
            spinner(b, node).abandon_with_message(format!("stopped: {reason}"));
        }
        Event::Gate { detail, status, .. } => {
            b.total.set_message(format!("gate {status} {detail}"));
        }
        other => {
            if let Some(l) = line(&Stamped {
                at: e.at,
                event: other.clone(),
            }) {
                let _ = b.multi.println(l);
            }
        }
    }
}

/// One line per event for logs and pipes.
fn line(e: &Stamped) -> Option<String> {
    Some(match &e.event {
        Event::RunStarted {
            run_id,
            waves,
            nodes,
            resumed,
            already_done,
            ..
        } => format!(
            "run {run_id}: {nodes} nodes in {waves} waves{}",
            if *resumed {
                format!(", resumed ({already_done} nodes already done)")
            } else {
                String::new()
            }
        ),
        Event::WaveStarted { wave, nodes } => format!("wave {wave}: {}", nodes.join(", ")),
        Event::Phase {
            node,
            phase,
            detail,
            ..
        } => format!(
            "{node}: {phase}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        Event::Blocked {
            node, pod, reason, ..
        } => format!("{node}: drain blocked: {pod} {reason}"),
        Event::NodeDone { node, seconds, .. } => format!("{node}: done in {}", hms(*seconds)),
        Event::NodeFailed { node, error, .. } => format!("{node}: FAILED: {error}"),
        Event::NodeStopped { node, reason, .. } => {
            format!("{node}: stopped ({reason}), uncordoned")
        }
        Event::Gate {
            wave,
            status,
            detail,
            ..
        } => format!(
            "gates before wave {wave}: {status}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        Event::WaveDone { wave, seconds } => format!("wave {wave} done in {}", hms(*seconds)),
        Event::SloBreached { probe, detail } => {
            format!("SLO guard: probe {probe}: {detail}; pausing")
        }
        Event::Paused { reason } => format!("paused: {reason}"),
        Event::Aborted { reason } => format!("aborted: {reason}"),
        Event::RunFinished { state } => format!("run {state}"),
    })
}

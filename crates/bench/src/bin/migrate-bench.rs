//! Benchmark: a full OS migration of a synthetic cluster through the real engine, in-process on
//! virtual time (a paused current-thread runtime). Prints wall time, peak RSS, the simulated
//! makespan against the plan's estimate and lower bound, and what the cluster saw (evictions,
//! refusals, probe failures, violations). Then, for comparison, the same migration run two other
//! ways, each on a fresh simulation: `serial` (one node per wave, in the plan's node order) and
//! `fixed5` (waves of 5 nodes in that order, whatever the PDBs say: the engine retries refused
//! evictions). Asserts nothing about time.
//!
//!   cargo run --release -p theseus-bench --bin migrate-bench -- --nodes 1000 --pods-per-node 30 --seed 1
//!   ... -- --nodes 1000 --modes planned,fixed5 --compare-nodes 100   (serial and fixed5 at 100 nodes)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use theseus_engine::{Engine, EngineOptions, Event, EventSink, Report, Stamped, twin};
use theseus_journal::Journal;
use theseus_model::Migration;
use theseus_model::plan::{Plan, Wave};
use theseus_sim::scenario::{GenerateOptions, Scenario, generate};
use theseus_sim::sim::Simulation;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The OS the workers are migrated to.
const TARGET_OS: &str = "Ubuntu 22.04.4 LTS";
/// The OS the workers start with when the generator gives them the target already.
const SOURCE_OS: &str = "CentOS Linux 7 (Core)";

#[derive(Parser)]
#[command(
    name = "migrate-bench",
    about = "Runs a full OS migration of a synthetic cluster through the real engine on virtual time"
)]
struct Args {
    /// Workers (plus 3 control-plane nodes the migration leaves alone).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 3)]
    zones: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated: planned (the plan's waves), serial (one node per wave), fixed5 (waves
    /// of 5 nodes regardless of PDBs).
    #[arg(long, default_value = "planned,serial,fixed5")]
    modes: String,
    /// Run serial and fixed5 on a cluster of this many workers instead of --nodes (they take
    /// far longer); planned then also runs at that size, for the table.
    #[arg(long)]
    compare_nodes: Option<usize>,
    /// Instead of migrating, let the steady cluster run this many virtual seconds and print the
    /// wall time (the simulator's own cost, for comparison with a migration's).
    #[arg(long)]
    idle_seconds: Option<u64>,
    /// Only plan (after the steady state) and print the waves, without migrating.
    #[arg(long)]
    plan_only: bool,
    /// Stop (exit 3) when the resident set grows beyond this many MiB.
    #[arg(long, default_value_t = 4096)]
    max_rss_mib: u64,
    /// Print a progress line every this many waves (0: never).
    #[arg(long, default_value_t = 10)]
    progress_every: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Planned,
    Serial,
    Fixed(usize),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Planned => "planned".into(),
            Mode::Serial => "serial".into(),
            Mode::Fixed(n) => format!("fixed{n}"),
        }
    }
}

/// One run's figures.
struct Row {
    mode: String,
    workers: usize,
    wall_start: f64,
    wall_run: f64,
    rss_peak: u64,
    report: Report,
    waves: usize,
}

fn rss_mib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The migration: every worker to Ubuntu 22.04, remove before add, automatic wave size.
fn migration(force: bool) -> Res<Migration> {
    let text = format!(
        r#"apiVersion: theseus.io/v1alpha1
kind: Migration
metadata:
  name: bench-os-migration
spec:
  operation:
    osMigration:
      targetOsImage: {TARGET_OS}
  nodes:
    roles: [worker]
  strategy:
    type: removeBeforeAdd
    maxUnavailable: auto
  drain:
    deleteEmptyDirData: true
    force: {force}
  gates:
    soak: 30s
  provider:
    type: sim
    # The simulator's reimage (300 s) and boot (60 s, up to 10 s jitter): the plan's estimate and
    # lower bound then use the simulated machines' time instead of the 20-minute default.
    expectedActionDuration: 6m
"#
    );
    Ok(Migration::from_yaml(&text).map_err(|e| format!("{e}\n{text}"))?)
}

/// The synthetic scenario, with the workers on another OS than the target if the generator
/// gives them the target already.
fn scenario(a: &Args, nodes: usize) -> (Scenario, bool) {
    let mut s = generate(&GenerateOptions {
        nodes,
        pods_per_node: a.pods_per_node,
        zones: a.zones,
        seed: a.seed,
    });
    let mut changed = false;
    for p in &mut s.node_pools {
        let cp = p
            .roles
            .iter()
            .any(|r| r == "control-plane" || r == "master");
        if !cp && p.os_image == TARGET_OS {
            p.os_image = SOURCE_OS.into();
            changed = true;
        }
    }
    (s, changed)
}

/// The plan's nodes in order, regrouped into waves of `size`.
fn regroup(plan: &Plan, size: usize) -> Plan {
    let Some(template) = plan.waves.first() else {
        return plan.clone();
    };
    let nodes: Vec<String> = plan.waves.iter().flat_map(|w| w.nodes.clone()).collect();
    let mut out = plan.clone();
    out.waves = nodes
        .chunks(size.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let mut w: Wave = template.clone();
            w.index = i as u32 + 1;
            w.nodes = chunk.to_vec();
            w.zones = Vec::new();
            w.evicted_pods = 0;
            w.surge_pods = 0;
            w.deleted_pods = 0;
            w.estimated_seconds = 0;
            w.blocked = false;
            w.primary = false;
            w
        })
        .collect();
    out
}

/// The events the time breakdown needs.
type Timeline = Arc<Mutex<Vec<Stamped>>>;

/// Progress on stderr: a line every `every` waves, and failures. Exits the process when the
/// resident set exceeds `max_rss` MiB. Keeps the wave and phase events in `timeline`.
fn progress(
    mode: String,
    every: u32,
    max_rss: u64,
    wall: Instant,
    timeline: Timeline,
) -> EventSink {
    let seen = Arc::new(AtomicU64::new(0));
    let last_blocked = Arc::new(Mutex::new(String::new()));
    // MIGRATE_BENCH_TRACE=text: print every engine event that mentions it (debugging a probe
    // failure or a violation the summary names).
    let trace = std::env::var("MIGRATE_BENCH_TRACE").ok();
    Arc::new(move |e: &Stamped| {
        if let Some(t) = &trace {
            let text = format!("{:?}", e.event);
            if text.contains(t.as_str()) {
                println!("    trace {:.1}s {text}", e.at);
            }
        }
        if matches!(
            e.event,
            Event::WaveStarted { .. }
                | Event::WaveDone { .. }
                | Event::NodeDone { .. }
                | Event::Phase { .. }
        ) {
            timeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.clone());
        }
        on_event(&mode, every, max_rss, wall, &seen, &last_blocked, e)
    })
}

fn on_event(
    mode: &str,
    every: u32,
    max_rss: u64,
    wall: Instant,
    seen: &AtomicU64,
    last_blocked: &Mutex<String>,
    e: &Stamped,
) {
    if seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) && rss_mib().0 > max_rss {
        println!(
            "[{mode}] stopped: RSS {} MiB > --max-rss-mib {max_rss} at virtual {:.0} s, wall {:.1} s",
            rss_mib().0,
            e.at,
            wall.elapsed().as_secs_f64()
        );
        std::process::exit(3);
    }
    match &e.event {
        Event::WaveDone { wave, .. } if every > 0 && wave.is_multiple_of(every) => {
            let (rss, _) = rss_mib();
            eprintln!(
                "  [{mode}] wave {wave} done at virtual {:.0} s, wall {:.1} s, RSS {rss} MiB",
                e.at,
                wall.elapsed().as_secs_f64()
            );
        }
        Event::NodeFailed { node, error, .. } => eprintln!("  [{mode}] {node} FAILED: {error}"),
        Event::Paused { reason } => eprintln!("  [{mode}] PAUSED: {reason}"),
        Event::Gate { status, detail, .. } if status == "waiting" => {
            let mut l = last_blocked.lock().unwrap_or_else(|p| p.into_inner());
            if *l != *detail {
                eprintln!("  [{mode}] gate waiting: {detail}");
                *l = detail.clone();
            }
        }
        _ => {}
    }
}

/// Where a wave's time goes (means over the waves, seconds of virtual time): from the wave's
/// start until its last node's machine action started (cordon, drain, replacements), from there
/// until its last node was done (the action, the node back Ready, uncordon), and from the wave's
/// end to the next wave's start (soak and gates).
fn breakdown(timeline: &[Stamped]) -> String {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct W {
        start: f64,
        done: f64,
        last_action: f64,
        first_action: f64,
        last_node_done: f64,
    }
    let mut waves: BTreeMap<u32, W> = BTreeMap::new();
    let mut action_started: BTreeMap<(u32, String), f64> = BTreeMap::new();
    let mut node_action = Vec::new();
    for e in timeline {
        match &e.event {
            Event::WaveStarted { wave, .. } => {
                waves.entry(*wave).or_default().start = e.at;
                waves.entry(*wave).or_default().first_action = f64::MAX;
            }
            Event::WaveDone { wave, .. } => waves.entry(*wave).or_default().done = e.at,
            Event::Phase {
                node, wave, phase, ..
            } if phase == "action" && !action_started.contains_key(&(*wave, node.clone())) => {
                action_started.insert((*wave, node.clone()), e.at);
                let w = waves.entry(*wave).or_default();
                w.last_action = w.last_action.max(e.at);
                w.first_action = w.first_action.min(e.at);
            }
            Event::NodeDone { wave, node, .. } => {
                if let Some(t) = action_started.get(&(*wave, node.clone())) {
                    node_action.push(e.at - t);
                }
                let w = waves.entry(*wave).or_default();
                w.last_node_done = w.last_node_done.max(e.at);
            }
            _ => {}
        }
    }
    let ws: Vec<&W> = waves.values().filter(|w| w.done > 0.0).collect();
    if ws.is_empty() {
        return "no wave finished".into();
    }
    let n = ws.len() as f64;
    let mean = |f: &dyn Fn(&W) -> f64| ws.iter().map(|w| f(w)).sum::<f64>() / n;
    let gaps: Vec<f64> = ws.windows(2).map(|p| p[1].start - p[0].done).collect();
    let gap = if gaps.is_empty() {
        0.0
    } else {
        gaps.iter().sum::<f64>() / gaps.len() as f64
    };
    format!(
        "per wave {:.0} s: first action after {:.0} s, last after {:.0} s (drain), last node done {:.0} s later (action, back, uncordon; one node {:.0} s); {:.0} s between waves (soak, gates)",
        mean(&|w| w.done - w.start),
        mean(&|w| w.first_action - w.start),
        mean(&|w| w.last_action - w.start),
        mean(&|w| w.last_node_done - w.last_action),
        node_action.iter().sum::<f64>() / node_action.len().max(1) as f64,
        gap
    )
}

async fn run_mode(a: &Args, mode: Mode, workers: usize, dir: &std::path::Path) -> Res<Row> {
    let (s, changed) = scenario(a, workers);
    let force = s.workloads.iter().any(|w| w.kind == "Pod");
    let m = migration(force)?;
    let mut expanded = s.expand("generated")?;
    let pods: usize = s.workloads.iter().map(|w| w.replicas).sum();
    println!(
        "== {}: {} nodes ({} workers{}), {} pods in {} Deployments, seed {} ==",
        mode.name(),
        expanded.nodes.len(),
        workers,
        if changed {
            format!(", starting on {SOURCE_OS:?}")
        } else {
            String::new()
        },
        pods,
        s.workloads.len(),
        a.seed
    );
    let wall = Instant::now();
    let sim = Simulation::start(&expanded).await?;
    // The simulator has its objects; the input is the benchmark's, not its memory.
    expanded.manifests = Vec::new();
    sim.wait_steady(Duration::from_secs(3600)).await?;
    let wall_start = wall.elapsed().as_secs_f64();
    let (rss, _) = rss_mib();
    println!("{:<44} wall {wall_start:8.2} s   RSS {rss} MiB", "steady");
    if let Some(idle) = a.idle_seconds {
        let wall = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let (rss, peak) = rss_mib();
        println!(
            "{:<44} wall {:8.2} s   RSS {rss} MiB  peak {peak} MiB",
            format!("idle for {idle} virtual s"),
            wall.elapsed().as_secs_f64()
        );
        return Err("--idle-seconds: no migration".into());
    }
    if a.plan_only {
        let t = Instant::now();
        let plan = twin::plan(&sim, &m).await?;
        println!(
            "plan: {:.2} s, {} waves, sizes {}, drain rounds {} (at most {}), estimate {} s, lower bound {} s ({}, {} worker waves), ratio {:.3}",
            t.elapsed().as_secs_f64(),
            plan.waves.len(),
            compact(plan.waves.iter().map(|w| w.nodes.len() as u64)),
            compact(plan.waves.iter().map(|w| u64::from(w.drain_rounds))),
            plan.selection.max_drain_rounds,
            plan.estimate.total_seconds,
            plan.estimate.lower_bound_seconds,
            plan.estimate.min_worker_waves_bound,
            plan.estimate.min_worker_waves,
            plan.estimate.total_seconds as f64 / plan.estimate.lower_bound_seconds.max(1) as f64
        );
        return Err("--plan-only: no migration".into());
    }
    let wall = Instant::now();
    let timeline: Timeline = Arc::default();
    let events = progress(
        mode.name(),
        a.progress_every,
        a.max_rss_mib,
        wall,
        timeline.clone(),
    );
    let journal = dir.join(format!("{}-{workers}.journal.db", mode.name()));
    let _ = std::fs::remove_file(&journal);
    let run_id = format!("bench-{}", mode.name());
    let (plan, report) = match mode {
        Mode::Planned => twin::run(
            &sim,
            &m,
            &journal,
            &run_id,
            events,
            EngineOptions::default(),
        )
        .await
        .map_err(|e| format!("{}: {e}", mode.name()))?,
        Mode::Serial | Mode::Fixed(_) => {
            let planned = twin::plan(&sim, &m).await?;
            let size = match mode {
                Mode::Fixed(n) => n,
                _ => 1,
            };
            let plan = regroup(&planned, size);
            Engine::preflight(&m, &plan)?;
            let record = theseus_engine::run_record(&run_id, &m, &plan, "in-process simulator")?;
            let j = Arc::new(Journal::create(&journal, &record)?);
            let engine = twin::engine(
                &sim,
                &m,
                &plan,
                j,
                &run_id,
                events,
                EngineOptions::default(),
            );
            let report = engine.run().await?;
            (plan, report)
        }
    };
    let wall_run = wall.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    let r = &report;
    let lb = r.lower_bound_seconds.max(1) as f64;
    println!(
        "{:<44} wall {wall_run:8.2} s   RSS {rss} MiB  peak {peak} MiB",
        format!(
            "migration {} ({} of {} nodes)",
            r.state, r.nodes_migrated, r.nodes_total
        )
    );
    println!(
        "{:<44} {:.0} s = {:.2} h   estimate {} s   lower bound {} s   makespan/lower bound {:.3}",
        "simulated makespan",
        r.elapsed_seconds,
        r.elapsed_seconds / 3600.0,
        r.estimated_seconds,
        r.lower_bound_seconds,
        r.elapsed_seconds / lb
    );
    println!(
        "{:<44} {} waves ({} completed), largest {} nodes; plan's minimum {} worker waves ({}); sizes {}; drain rounds {} (at most {})",
        "waves",
        plan.waves.len(),
        r.waves_completed,
        plan.waves.iter().map(|w| w.nodes.len()).max().unwrap_or(0),
        plan.estimate.min_worker_waves,
        plan.estimate.min_worker_waves_bound,
        compact(plan.waves.iter().map(|w| w.nodes.len() as u64)),
        compact(plan.waves.iter().map(|w| u64::from(w.drain_rounds))),
        plan.selection.max_drain_rounds,
    );
    println!(
        "{:<44} {} evicted, {} refused (429), {} surged",
        "evictions", r.evictions, r.evictions_refused, r.surged
    );
    let requests: u64 = r.probes.iter().map(|p| p.requests).sum();
    println!(
        "{:<44} {} failed of {} requests ({} probes); PDB violations {}, lost pods {}, violations {}",
        "availability",
        r.probe_failures,
        requests,
        r.probes.len(),
        r.pdb_violations.unwrap_or(0),
        r.lost_pods.unwrap_or(0),
        r.violations.len()
    );
    println!(
        "{:<44} {}",
        "time",
        breakdown(&timeline.lock().unwrap_or_else(|p| p.into_inner()))
    );
    for v in r.violations.iter().take(5) {
        println!("    {v}");
    }
    // Where requests failed, the simulator's own account: when, and why.
    for p in sim
        .probes
        .reports()
        .iter()
        .filter(|p| p.failures > 0)
        .take(5)
    {
        println!(
            "    probe {}/{}: {} failed of {}, longest gap {:.1} s, causes {:?}, first at {:?}",
            p.namespace,
            p.service,
            p.failures,
            p.requests,
            p.longest_gap_seconds,
            p.failures_by_cause,
            p.timeline
                .iter()
                .take(3)
                .map(|f| format!("{:.1}s {}", f.at_seconds, f.cause))
                .collect::<Vec<_>>()
        );
    }
    if let Some(reason) = &r.reason {
        println!("{:<44} {reason}", "stopped");
    }
    let _ = std::fs::remove_file(&journal);
    Ok(Row {
        mode: mode.name(),
        workers,
        wall_start,
        wall_run,
        rss_peak: peak,
        waves: plan.waves.len(),
        report,
    })
}

/// mimalloc hands pages that emptied back to the OS 10 ms later (its `purge_delay`), and the
/// simulation, which frees and allocates object versions all the time, touches them again at
/// once: the kernel then faults and zeroes them anew (a 1,000-worker migration spent 7.7 s of
/// system time, 5.3 s with purging off). The option is read when the allocator starts, before
/// `main`, so the benchmark starts itself once more with `MIMALLOC_PURGE_DELAY=-1`, unless the
/// variable is set already (set it to `10` to measure with mimalloc's default).
fn keep_freed_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MIMALLOC_PURGE_DELAY", "-1")
        .exec();
    eprintln!("warning: could not restart with MIMALLOC_PURGE_DELAY=-1 ({err}); going on without");
}

fn main() {
    keep_freed_pages();
    let a = Args::parse();
    let mut modes = Vec::new();
    for m in a.modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        modes.push(match m {
            "planned" => Mode::Planned,
            "serial" => Mode::Serial,
            "fixed5" => Mode::Fixed(5),
            other => match other.strip_prefix("fixed").and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => Mode::Fixed(n),
                _ => {
                    eprintln!("error: unknown mode {other:?} (planned, serial, fixed5 or fixedN)");
                    std::process::exit(2);
                }
            },
        });
    }
    // (mode, workers) in order.
    let mut runs: Vec<(Mode, usize)> = Vec::new();
    for &m in &modes {
        if m == Mode::Planned {
            runs.push((m, a.nodes));
        }
    }
    let compare = a.compare_nodes.unwrap_or(a.nodes);
    if compare != a.nodes && modes.iter().any(|m| *m != Mode::Planned) {
        runs.push((Mode::Planned, compare));
    }
    for &m in &modes {
        if m != Mode::Planned {
            runs.push((m, compare));
        }
    }
    let dir = std::env::temp_dir().join(format!("theseus-migrate-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        std::process::exit(1);
    }
    println!(
        "migrate-bench: OS migration of every worker to {TARGET_OS:?} through the real engine, in-process, virtual time ({} CPUs)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for (mode, workers) in runs {
        // A fresh runtime (and simulation) per run, so that nothing of the previous one is left.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                std::process::exit(1);
            }
        };
        match rt.block_on(run_mode(&a, mode, workers, &dir)) {
            Ok(r) => rows.push(r),
            Err(e) => {
                println!("{} at {workers} workers: error: {e}", mode.name());
                failed = true;
            }
        }
        drop(rt);
        println!();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:<8} {:>7} {:>6} {:>10} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>9}",
        "mode",
        "workers",
        "waves",
        "makespan",
        "estimate",
        "lower",
        "ratio",
        "evicted",
        "refused",
        "probes",
        "viol",
        "setup",
        "run",
        "peak RSS"
    );
    for r in &rows {
        let p = &r.report;
        println!(
            "{:<8} {:>7} {:>6} {:>9.0}s {:>7}s {:>7}s {:>7.3} {:>8} {:>8} {:>7} {:>6} {:>7.1}s {:>7.1}s {:>5} MiB",
            r.mode,
            r.workers,
            r.waves,
            p.elapsed_seconds,
            p.estimated_seconds,
            p.lower_bound_seconds,
            p.elapsed_seconds / p.lower_bound_seconds.max(1) as f64,
            p.evictions,
            p.evictions_refused,
            p.probe_failures,
            p.violations.len(),
            r.wall_start,
            r.wall_run,
            r.rss_peak
        );
    }
    // Each comparison against the planned run of the same size.
    for r in rows.iter().filter(|r| r.mode != "planned") {
        if let Some(p) = rows
            .iter()
            .find(|p| p.mode == "planned" && p.workers == r.workers)
        {
            println!(
                "{} vs planned at {} workers: {:.2}x the makespan",
                r.mode,
                r.workers,
                r.report.elapsed_seconds / p.report.elapsed_seconds.max(1.0)
            );
        }
    }
    println!(
        "targets: 1,000 workers through the real engine <= 60 s wall; makespan <= 1.15x the lower bound; 0 probe failures"
    );
    if failed {
        std::process::exit(1);
    }
}

/// `60,60,58,2`, or the first 12 and `…` for long lists.
fn compact(values: impl Iterator<Item = u64>) -> String {
    let v: Vec<String> = values.map(|x| x.to_string()).collect();
    if v.len() > 12 {
        format!("{},…", v[..12].join(","))
    } else {
        v.join(",")
    }
}

//! plan-bench: parse a cluster snapshot and plan a migration of it; prints the parse time, the
//! plan time and the peak RSS. Asserts nothing about time (machines differ); the design targets
//! (plan ≤ 2 s, ≤ 1 GiB RSS for 5,000 nodes / 150,000 pods / 5,000 PDBs) are printed beside.
//!
//!   cargo run --release -p theseus-bench --bin plan-bench
//!   cargo run --release -p theseus-bench --bin plan-bench -- --snapshot cluster.json -f migration.yaml
//!
//! Without `--snapshot`, a synthetic snapshot is generated and written by a child process, so
//! that the peak RSS printed is the parse and the plan alone.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use theseus_model::ClusterSnapshot;
use theseus_model::plan::Severity;
use theseus_model::spec::Migration;
use theseus_plan::synthetic::{SyntheticSpec, describe, synthetic_snapshot};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PLAN_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_KIB: u64 = 1024 * 1024;

const DEFAULT_MIGRATION: &str = "\
apiVersion: theseus.io/v1alpha1
kind: Migration
metadata:
  name: bench-os-migration
spec:
  operation:
    osMigration: {targetOsImage: Ubuntu 22.04.4 LTS}
  strategy: {maxUnavailable: auto}
  drain: {deleteEmptyDirData: true}
";

#[derive(Parser, Debug)]
#[command(
    name = "plan-bench",
    about = "Benchmarks parsing a snapshot and planning a migration"
)]
struct Args {
    /// Snapshot to plan (default: a synthetic one, written to a temporary file).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Migration spec (default: an OS migration of every node, maxUnavailable auto).
    #[arg(short = 'f', long)]
    migration: Option<PathBuf>,
    /// Synthetic cluster: nodes.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Synthetic cluster: pods.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,
    /// Synthetic cluster: PodDisruptionBudgets.
    #[arg(long, default_value_t = 5_000)]
    pdbs: usize,
    /// Synthetic cluster: zones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Synthetic cluster: seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Synthetic cluster: CPU utilization of the workers by requests (0..1).
    #[arg(long, default_value_t = 0.5)]
    fill: f64,
    /// Plans to run (best and median are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Internal: write the synthetic snapshot to this file and exit.
    #[arg(long, hide = true)]
    write_only: Option<PathBuf>,
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) of this process so far, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Res<()> {
    let args = Args::parse();
    let spec = SyntheticSpec {
        nodes: args.nodes,
        pods: args.pods,
        pdbs: args.pdbs,
        zones: args.zones,
        seed: args.seed,
        fill: args.fill,
        ..Default::default()
    };
    if let Some(out) = &args.write_only {
        let t = Instant::now();
        let snap = synthetic_snapshot(&spec);
        let gen_time = t.elapsed();
        let json = snap.to_json()?;
        std::fs::write(out, &json)?;
        println!(
            "generated: {} in {}, {:.1} MiB of JSON",
            describe(&snap),
            ms(gen_time),
            json.len() as f64 / (1 << 20) as f64
        );
        return Ok(());
    }

    let mut temp = None;
    let path = match &args.snapshot {
        Some(p) => p.clone(),
        None => {
            let p = std::env::temp_dir()
                .join(format!("theseus-plan-bench-{}.json", std::process::id()));
            let status = Command::new(std::env::current_exe()?)
                .args([
                    "--nodes",
                    &args.nodes.to_string(),
                    "--pods",
                    &args.pods.to_string(),
                ])
                .args([
                    "--pdbs",
                    &args.pdbs.to_string(),
                    "--zones",
                    &args.zones.to_string(),
                ])
                .args([
                    "--seed",
                    &args.seed.to_string(),
                    "--fill",
                    &args.fill.to_string(),
                ])
                .arg("--write-only")
                .arg(&p)
                .status()?;
            if !status.success() {
                return Err("generating the synthetic snapshot failed".into());
            }
            temp = Some(p.clone());
            p
        }
    };
    let migration_text = match &args.migration {
        Some(p) => std::fs::read_to_string(p)?,
        None => DEFAULT_MIGRATION.to_string(),
    };
    let migration = Migration::from_yaml(&migration_text).map_err(|e| e.to_string())?;

    let t = Instant::now();
    let bytes = std::fs::read(&path)?;
    let read_time = t.elapsed();
    let t = Instant::now();
    let snapshot = ClusterSnapshot::from_json_slice(&bytes)?;
    let parse_time = t.elapsed();
    drop(bytes);
    let rss_after_parse = vm_hwm_kib();
    println!("snapshot: {} ({})", describe(&snapshot), path.display());
    println!("read:  {}", ms(read_time));
    println!("parse: {}", ms(parse_time));

    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for _ in 0..args.runs.max(1) {
        let c = cpu_time();
        let t = Instant::now();
        let plan = theseus_plan::plan(&snapshot, &migration);
        times.push(t.elapsed());
        if let (Some(before), Some(after)) = (c, cpu_time()) {
            cpu.push(after.saturating_sub(before));
        }
        last = Some(plan);
    }
    cpu.sort();
    times.sort();
    let best = times[0];
    let median = times[times.len() / 2];
    let rss = vm_hwm_kib();
    if let Some(plan) = &last {
        let by = |s| plan.findings_of(s).count();
        let largest = plan.waves.iter().map(|w| w.nodes.len()).max().unwrap_or(0);
        let evicted: u64 = plan.waves.iter().map(|w| u64::from(w.evicted_pods)).sum();
        println!(
            "plan:  {} waves (largest {} nodes, {} evictions), findings: {} errors, {} warnings, {} info; estimate {} s (lower bound {} s)",
            plan.waves.len(),
            largest,
            evicted,
            by(Severity::Error),
            by(Severity::Warning),
            by(Severity::Info),
            plan.estimate.total_seconds,
            plan.estimate.lower_bound_seconds
        );
    }
    println!(
        "plan time: best {}, median {} over {} runs (target ≤ {})",
        ms(best),
        ms(median),
        times.len(),
        ms(PLAN_TARGET)
    );
    if let (Some(b), Some(m)) = (cpu.first(), cpu.get(cpu.len() / 2)) {
        println!(
            "plan CPU time: best {}, median {} (wall time above includes waiting for a busy CPU)",
            ms(*b),
            ms(*m)
        );
    }
    match (rss_after_parse, rss) {
        (Some(a), Some(b)) => println!(
            "peak RSS (VmHWM): {:.0} MiB after parse, {:.0} MiB after planning (target ≤ {} MiB)",
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            RSS_TARGET_KIB / 1024
        ),
        _ => println!("peak RSS: /proc/self/status not readable"),
    }
    if let Some(p) = temp {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

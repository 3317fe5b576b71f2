//! `theseus simulate`: the what-if of a migration on a captured cluster. The snapshot becomes a
//! simulated cluster, the real engine migrates it on virtual time, and the report says how long
//! it took against the plan's estimate, which drains were blocked and what each Service's
//! clients saw. Nothing touches a real cluster.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use theseus_engine::whatif::{self, WhatIfError, WhatIfReport, WhatIfTiming};

use crate::BadInput;
use crate::plan_cmd::{read_migration, read_snapshot};

/// Output formats of `theseus simulate`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulateFormat {
    /// The human report.
    Table,
    /// The what-if report as JSON (the engine's report, estimate, blocked drains, downtime per
    /// Service, warnings).
    Json,
}

/// `theseus simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The migration spec (`kind: Migration`, YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The cluster to simulate: a snapshot written by `theseus snapshot`.
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = SimulateFormat::Table)]
    pub output: SimulateFormat,
    /// Seconds one machine's reimage takes (default: the spec's
    /// provider.expectedActionDuration less the boot, else 900).
    #[arg(long, value_name = "SECONDS")]
    pub reimage_seconds: Option<f64>,
    /// Seconds from power-on to a Ready node (default 90).
    #[arg(long, value_name = "SECONDS")]
    pub boot_seconds: Option<f64>,
}

fn bad(message: String) -> anyhow::Error {
    anyhow!(BadInput(message))
}

fn seconds(flag: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(s) if !(s.is_finite() && s >= 0.0) => Err(bad(format!(
            "--{flag} must be a number of seconds, 0 or more (got {s})"
        ))),
        other => Ok(other),
    }
}

/// `theseus simulate`. Exit code 0 when the simulated migration completed with no failed probe
/// request (and no PDB violation or lost pod), 1 otherwise or when the plan is refused, 2 for
/// bad input.
pub async fn simulate(args: SimulateArgs) -> Result<()> {
    let migration = read_migration(&args.file)?;
    let snapshot = read_snapshot(&args.snapshot)?;
    let mut timing = WhatIfTiming {
        reimage_seconds: seconds("reimage-seconds", args.reimage_seconds)?,
        ..WhatIfTiming::default()
    };
    if let Some(b) = seconds("boot-seconds", args.boot_seconds)? {
        timing.boot_seconds = b;
    }
    let json = args.output == SimulateFormat::Json;
    if !json {
        eprintln!(
            "Simulating {} on {} nodes of {} (virtual time)…",
            migration.metadata.name,
            snapshot.nodes.len(),
            args.snapshot.display()
        );
    }
    let wall = Instant::now();
    let report =
        match whatif::simulate(&snapshot, &migration, &timing, theseus_engine::discard()).await {
            Ok(r) => r,
            Err(e @ WhatIfError::Scenario(_)) => {
                return Err(bad(format!("{}: {e}", args.snapshot.display())));
            }
            Err(e) => return Err(anyhow!(e).context("the what-if could not run")),
        };
    let wall = wall.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot encode the report")?
        );
    } else {
        print_table(&report, &args.snapshot, wall);
    }
    if report.clean() {
        Ok(())
    } else {
        bail!(
            "the simulated migration was not clean: {}",
            report.problems().join("; ")
        )
    }
}

fn hms(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

fn print_table(w: &WhatIfReport, snapshot: &std::path::Path, wall: f64) {
    let r = &w.report;
    println!(
        "What-if of {} on {} (simulated: {wall:.1} s of wall time)",
        r.migration,
        snapshot.display()
    );
    println!("  node actions: {}", w.provider);
    println!();
    println!("Run: {}", r.state);
    if let Some(reason) = &r.reason {
        println!("  reason: {reason}");
    }
    println!(
        "  nodes migrated: {}/{}   waves: {}/{}",
        r.nodes_migrated, r.nodes_total, r.waves_completed, r.waves_total
    );
    let vs = if w.plan_estimated_seconds > 0 {
        format!(
            " ({:+.0} % against the estimate)",
            (w.simulated_seconds / w.plan_estimated_seconds as f64 - 1.0) * 100.0
        )
    } else {
        String::new()
    };
    println!(
        "  duration: {} simulated; plan estimated {}, lower bound {}{vs}",
        hms(w.simulated_seconds),
        hms(w.plan_estimated_seconds as f64),
        hms(w.plan_lower_bound_seconds as f64)
    );
    println!(
        "  evictions: {} (refused by a PDB and retried: {}), single-replica Deployments surged: {}",
        r.evictions, r.evictions_refused, r.surged
    );
    println!(
        "  PDB violations: {}   workloads below their replicas: {}",
        r.pdb_violations.unwrap_or(0),
        r.lost_pods.unwrap_or(0)
    );
    println!();
    if w.blocked_drains.is_empty() {
        println!("Blocked drains: none");
    } else {
        println!(
            "{:>9} {:<5} {:<24} {:<40} PDB",
            "AT", "WAVE", "BLOCKED DRAIN", "POD"
        );
        for b in &w.blocked_drains {
            println!(
                "{:>9} {:<5} {:<24} {:<40} {}",
                hms(b.at_seconds),
                b.wave,
                b.node,
                b.pod,
                if b.pdbs.is_empty() {
                    b.reason.clone()
                } else {
                    b.pdbs.join(", ")
                }
            );
        }
    }
    println!();
    if w.downtime.is_empty() {
        println!("Downtime: no Service was probed");
    } else {
        println!(
            "{:<36} {:>9} {:>9} {:>12}  WORKLOADS",
            "SERVICE", "REQUESTS", "FAILURES", "LONGEST GAP"
        );
        for d in &w.downtime {
            println!(
                "{:<36} {:>9} {:>9} {:>11.1}s  {}",
                d.service,
                d.requests,
                d.failures,
                d.longest_gap_seconds,
                d.workloads.join(", ")
            );
        }
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
    if !w.warnings.is_empty() {
        println!();
        println!("What the what-if ignored or approximated:");
        for warning in &w.warnings {
            println!("  - {warning}");
        }
    }
}

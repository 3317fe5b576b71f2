//! Benchmark: a synthetic living cluster from scenario to steady state (every node Ready, every pod
//! Running and Ready), in virtual time on a paused current-thread runtime. Prints wall time,
//! virtual time and memory; asserts nothing about time.
//!
//!   cargo run --release -p theseus-bench --bin sim-steady -- --nodes 1000 --pods-per-node 30

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use theseus_sim::scenario::{GenerateOptions, generate};
use theseus_sim::sim::Simulation;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 3)]
    zones: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up after this much virtual time.
    #[arg(long, default_value_t = 3600)]
    virtual_timeout_seconds: u64,
    /// At steady state, print per resource: objects, serialized bytes, an estimate of their size
    /// in memory, and the watch history kept.
    #[arg(long)]
    census: bool,
    /// Start this many fresh simulations one after another and report each and the median (wall
    /// time on a shared VM varies by 10-20 % from run to run).
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

async fn census(sim: &Simulation) {
    use futures::StreamExt;
    use std::collections::HashSet;
    use std::sync::Arc;
    let c = &sim.cluster;
    println!("census at revision {}", sim.server.store.revision());
    for r in [
        &c.res.pods,
        &c.res.events,
        &c.res.nodes,
        &c.res.leases,
        &c.res.deployments,
        &c.res.replicasets,
        &c.res.endpoints,
        &c.res.pdbs,
        &c.res.services,
    ] {
        let Ok((items, _)) = c.list(r, None).await else {
            continue;
        };
        let wire: usize = items.iter().map(|o| o.json().len()).sum();
        let mut seen: HashSet<usize> = items.iter().map(|o| Arc::as_ptr(o) as usize).collect();
        // Parts shared between objects or versions count once (interned keys included).
        let mut parts: HashSet<usize> = HashSet::new();
        let mem: usize = items.iter().map(|o| o.value.heap_bytes(&mut parts)).sum();
        // The history: watch from the oldest revision still kept.
        let oldest = match sim.server.store.watch(&r.key(), None, 0).await {
            Err(theseus_sim::store::StoreError::Expired { oldest, .. }) => oldest,
            _ => 0,
        };
        let (mut events, mut older) = (0usize, 0usize);
        if let Ok(mut w) = sim.server.store.watch(&r.key(), None, oldest).await
            && let Ok(Some(Ok(batch))) =
                tokio::time::timeout(Duration::from_millis(1), w.next()).await
        {
            for e in batch {
                events += 1;
                for o in std::iter::once(&e.object).chain(e.previous.as_ref()) {
                    if seen.insert(Arc::as_ptr(o) as usize) {
                        older += o.value.heap_bytes(&mut parts);
                    }
                }
            }
        }
        println!(
            "  {:<22} {:>7} objects {:>6} MiB serialized  ~{:>5} MiB in memory; history {:>6} events holding ~{} MiB of older versions",
            r.resource,
            items.len(),
            wire >> 20,
            mem >> 20,
            events,
            older >> 20
        );
    }
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

fn main() {
    let a = Args::parse();
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
    let scenario = generate(&GenerateOptions {
        nodes: a.nodes,
        pods_per_node: a.pods_per_node,
        zones: a.zones,
        seed: a.seed,
    });
    let mut expanded = match scenario.expand("generated") {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let pods: usize = scenario.workloads.iter().map(|w| w.replicas).sum();
    println!(
        "sim-steady: {} nodes ({} workers), {} Deployment pods, {} workloads, seed {}",
        expanded.nodes.len(),
        a.nodes,
        pods,
        scenario.workloads.len(),
        a.seed
    );
    rt.block_on(async {
        let runs = a.runs.max(1);
        let mut walls = Vec::new();
        for run in 1..=runs {
            if runs > 1 {
                println!("run {run}");
            }
            let wall = Instant::now();
            let virt = tokio::time::Instant::now();
            let sim = match Simulation::start(&expanded).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            };
            if run == runs {
                // The simulator has its objects; the input is the benchmark's, not its memory.
                expanded.manifests = Vec::new();
            }
            println!(
                "start (machines added, objects created)   wall {:8.2} s",
                wall.elapsed().as_secs_f64()
            );
            let r = sim
                .wait_steady(Duration::from_secs(a.virtual_timeout_seconds))
                .await;
            let (rss, peak) = rss_mib();
            let took = wall.elapsed().as_secs_f64();
            match r {
                Ok(()) => println!(
                    "steady state                              wall {took:8.2} s   virtual {:7.1} s   RSS {rss} MiB  peak {peak} MiB",
                    virt.elapsed().as_secs_f64()
                ),
                Err(e) => {
                    println!("NOT steady: {e}   wall {took:.2} s   RSS {rss} MiB  peak {peak} MiB");
                    std::process::exit(1);
                }
            }
            walls.push(took);
            if a.census && run == runs {
                census(&sim).await;
            }
        }
        if walls.len() > 1 {
            walls.sort_by(f64::total_cmp);
            println!(
                "{} runs: median wall {:.2} s, fastest {:.2} s, slowest {:.2} s",
                walls.len(),
                walls[walls.len() / 2],
                walls[0],
                walls[walls.len() - 1]
            );
        }
        let target = if a.nodes <= 1000 { "target <= 20 s wall (1,000 nodes / 30,000 pods)" } else { "target <= 120 s wall, <= 4 GiB (5,000 nodes / 150,000 pods)" };
        println!("{target}");
    });
}

//! Benchmark: the drain of a 110-pod node over loopback HTTP, theseus against `kubectl drain`, on
//! two identical nodes of the same simulated cluster, in real time.
//!
//! The simulator (its own multi-thread runtime) serves a cluster of two 110-pod nodes (`drain-1`,
//! `drain-2`, filled to their pod capacity by 22 Deployments of 10 replicas, pods exiting in 0–1 s,
//! no PodDisruptionBudget) and two spare nodes that were tainted until the pods settled. theseus'
//! [`Drainer`](theseus_engine::Drainer) (cordon, drain, every pod gone) runs through a kube-rs
//! client built from a kubeconfig, on its own current-thread runtime; `kubectl drain NODE
//! --ignore-daemonsets --delete-emptydir-data --force --timeout=300s` runs as a process. Each
//! repetition starts a fresh cluster and alternates which drain goes first. Prints every time,
//! the medians and their ratio; asserts nothing.
//!
//!   cargo run --release -p theseus-bench --bin drain-bench -- --runs 3

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use serde_json::json;
use theseus_cluster::{ClientOptions, Ops, connect};
use theseus_engine::{DrainEvent, Drainer};
use theseus_model::spec::{DrainPolicy, SpecDuration};
use theseus_sim::scenario::{NodePool, Scenario, Timing, Workload};
use theseus_sim::sim::Simulation;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NODE_A: &str = "drain-1";
const NODE_B: &str = "drain-2";
const SPARE_TAINT: &str = "bench.theseus.io/spare";

#[derive(Parser)]
#[command(
    name = "drain-bench",
    about = "Drains a 110-pod node with theseus and another with kubectl drain, over loopback HTTP"
)]
struct Args {
    /// Repetitions (each on a fresh cluster); the medians are compared.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pods per drained node (its pod capacity).
    #[arg(long, default_value_t = 110)]
    pods: usize,
    /// kubectl (default: $THESEUS_KUBECTL, else <workspace>/target/tools/kubectl).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// How often theseus' drain looks whether the evicted pods are gone, in ms (the engine's
    /// default poll is 1000; kubectl drain polls every 1000).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Extra arguments for kubectl drain (e.g. `--kubectl-arg=-v=6`).
    #[arg(long, allow_hyphen_values = true)]
    kubectl_arg: Vec<String>,
    /// Append kubectl's output of every run to this file.
    #[arg(long)]
    kubectl_log: Option<PathBuf>,
}

fn kubectl_path(a: &Args) -> PathBuf {
    a.kubectl
        .clone()
        .or_else(|| std::env::var_os("THESEUS_KUBECTL").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/kubectl"))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn pool(
    name: &str,
    pattern: &str,
    ip: &str,
    pods: u32,
    taints: Vec<serde_json::Value>,
) -> NodePool {
    NodePool {
        name: name.into(),
        count: 2,
        name_pattern: pattern.into(),
        first_index: 1,
        roles: vec![],
        ip_start: ip.into(),
        os_image: "Ubuntu 22.04.4 LTS".into(),
        kernel_version: "5.15.0-105-generic".into(),
        kubelet_version: None,
        container_runtime: "containerd://1.7.27".into(),
        architecture: "amd64".into(),
        zones: vec!["zone-a".into()],
        cpu: "64".into(),
        memory: "256Gi".into(),
        pods,
        labels: Default::default(),
        taints,
    }
}

/// Two 110-pod nodes filled by Deployments, two tainted spares with room for both.
fn scenario(pods_per_node: usize) -> Scenario {
    let total = 2 * pods_per_node;
    let replicas = 10;
    let workloads = (0..total.div_ceil(replicas))
        .map(|i| Workload {
            kind: "Deployment".into(),
            name: format!("app-{i}"),
            namespace: format!("team-{}", i % 4),
            replicas: replicas.min(total - i * replicas),
            image: "registry.k8s.io/pause:3.10".into(),
            cpu: Some("10m".into()),
            memory: Some("16Mi".into()),
            anti_affinity: None,
            node_selector: Default::default(),
            tolerations: vec![],
            empty_dir: i % 5 == 0,
            node_name: None,
            startup_seconds: Some(1.0),
            // 0–1 s, the same on both nodes (their pods come from the same Deployments).
            exit_seconds: Some((i % 11) as f64 / 10.0),
            termination_grace_period_seconds: None,
            pdb: None,
            service: None,
            priority_class_name: None,
        })
        .collect();
    Scenario {
        api_version: "sim.theseus.io/v1alpha1".into(),
        kind: "Scenario".into(),
        seed: 1,
        kubernetes_version: "v1.33.4".into(),
        timing: Timing {
            boot_seconds: 1.0,
            reimage_seconds: 1.0,
            jitter_seconds: 0.0,
            pod_startup_seconds: 1.0,
            pod_exit_seconds: 0.5,
            endpoint_propagation_seconds: 0.1,
        },
        node_pools: vec![
            pool(
                "drain",
                "drain-{index}",
                "10.1.0.10",
                pods_per_node as u32,
                vec![],
            ),
            pool(
                "spare",
                "spare-{index}",
                "10.2.0.10",
                (2 * pods_per_node + 30) as u32,
                vec![json!({"key": SPARE_TAINT, "effect": "NoSchedule"})],
            ),
        ],
        workloads,
        ..Scenario::default()
    }
}

/// A running simulated cluster on loopback, on its own runtime.
struct Served {
    rt: tokio::runtime::Runtime,
    sim: Option<Simulation>,
    kubeconfig: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        // Components are tokio tasks of `rt`: drop the simulation inside it.
        let _guard = self.rt.enter();
        self.sim.take();
    }
}

fn start(pods_per_node: usize, dir: &Path) -> Res<Served> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let e = scenario(pods_per_node).expand("drain-bench")?;
    let kubeconfig = dir.join("kubeconfig");
    let kc = kubeconfig.clone();
    let sim = rt.block_on(async move {
        let sim = Simulation::start(&e).await?;
        sim.wait_steady(Duration::from_secs(120)).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = sim.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        std::fs::write(&kc, theseus_sim::serve::kubeconfig(addr))?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(sim)
    })?;
    Ok(Served {
        rt,
        sim: Some(sim),
        kubeconfig,
    })
}

/// Pods on `node` that a drain moves (all of them here: no DaemonSets, no mirror pods).
async fn pods_on(ops: &Ops, node: &str) -> Res<usize> {
    Ok(ops
        .pods_on_node(node)
        .await?
        .iter()
        .filter(|p| p.phase != "Succeeded" && p.phase != "Failed")
        .count())
}

/// Checks both nodes run `want` pods, then lets the spares take pods.
async fn prepare(ops: &Ops, want: usize) -> Res<()> {
    for n in [NODE_A, NODE_B] {
        let have = pods_on(ops, n).await?;
        if have != want {
            return Err(
                format!("{n} runs {have} pods, not {want}: the nodes are not identical").into(),
            );
        }
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(ops.client().clone());
    for spare in ["spare-1", "spare-2"] {
        nodes
            .patch(
                spare,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&json!({"spec": {"taints": null}})),
            )
            .await?;
    }
    Ok(())
}

async fn theseus_drain(ops: &Ops, node: &str, poll: Duration) -> Res<(f64, u64)> {
    let policy = DrainPolicy {
        ignore_daemon_sets: true,
        delete_empty_dir_data: true,
        force: true,
        timeout: SpecDuration(300),
        ..DrainPolicy::default()
    };
    let on_event = |_: DrainEvent| {};
    let d = Drainer {
        ops,
        policy: &policy,
        surge_single_replica: false,
        run_id: "drain-bench",
        poll,
        pods_ready_timeout: Duration::from_secs(300),
        endpoint_settle: Duration::from_secs(5),
        on_event: &on_event,
        guard: None,
    };
    let t = Instant::now();
    ops.cordon(node, "drain-bench").await?;
    let stats = d.drain(node).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, stats.evicted))
}

fn kubectl_drain(a: &Args, kubectl: &Path, kubeconfig: &Path, node: &str) -> Res<f64> {
    let t = Instant::now();
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            "--timeout=300s",
        ])
        .args(&a.kubectl_arg)
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if let Some(log) = &a.kubectl_log {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        f.write_all(&out.stdout)?;
        f.write_all(&out.stderr)?;
    }
    if !out.status.success() {
        return Err(format!(
            "kubectl drain {node} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(secs)
}

fn main() {
    let a = Args::parse();
    let kubectl = kubectl_path(&a);
    if !kubectl.exists() {
        println!(
            "drain-bench: kubectl not found at {}: run scripts/setup (or scripts/fetch-kubectl, which installs kubectl 1.33 to target/tools/kubectl), or pass --kubectl / set THESEUS_KUBECTL. Skipped.",
            kubectl.display()
        );
        return;
    }
    if let Err(e) = run(&a, &kubectl) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args, kubectl: &Path) -> Res<()> {
    let version = Command::new(kubectl)
        .args(["version", "--client"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!(
        "drain-bench: a {}-pod node drained over loopback HTTP, theseus (poll {} ms) vs kubectl drain ({version}), {} runs",
        a.pods, a.poll_ms, a.runs
    );
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..a.runs {
        let dir =
            std::env::temp_dir().join(format!("theseus-drain-bench-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let t = Instant::now();
        let served = start(a.pods, &dir)?;
        let setup = t.elapsed().as_secs_f64();
        let conn = client_rt.block_on(connect(&ClientOptions {
            kubeconfig: Some(served.kubeconfig.clone()),
            context: None,
            no_retry: true,
        }))?;
        let ops = Ops::new(conn.client);
        client_rt.block_on(prepare(&ops, a.pods))?;
        let poll = Duration::from_millis(a.poll_ms);
        let theseus_first = run % 2 == 0;
        let mut t_ours = 0.0;
        let mut t_theirs = 0.0;
        let mut evicted = 0;
        for step in 0..2 {
            if (step == 0) == theseus_first {
                let (s, n) = client_rt.block_on(theseus_drain(&ops, NODE_A, poll))?;
                t_ours = s;
                evicted = n;
            } else {
                t_theirs = kubectl_drain(a, kubectl, &served.kubeconfig, NODE_B)?;
            }
        }
        let left_a = client_rt.block_on(pods_on(&ops, NODE_A))?;
        let left_b = client_rt.block_on(pods_on(&ops, NODE_B))?;
        println!(
            "run {}: theseus {NODE_A} {t_ours:6.3} s ({evicted} evicted, {left_a} left)   kubectl {NODE_B} {t_theirs:6.3} s ({left_b} left)   {} first   ratio {:.3}   (cluster setup {setup:.1} s)",
            run + 1,
            if theseus_first { "theseus" } else { "kubectl" },
            t_ours / t_theirs
        );
        ours.push(t_ours);
        theirs.push(t_theirs);
        drop(ops);
        drop(served);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (m_ours, m_theirs) = (median(&ours), median(&theirs));
    println!(
        "median: theseus {m_ours:.3} s, kubectl drain {m_theirs:.3} s, theseus/kubectl {:.3} (target <= 1.0)",
        m_ours / m_theirs
    );
    Ok(())
}

//! sim-bench: figures for the simulator at cluster scale. It prints measurements and asserts
//! nothing about wall-clock time (machines differ); the design targets are printed next to them.
//!
//!   cargo run --release -p theseus-bench --bin sim-bench -- --pods 150000 --nodes 5000
//!
//! Everything runs in-process: objects are loaded with `ApiServer::create_internal`, lists and
//! watches go through the axum router as a tower service (raw, or under kube-rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use clap::Parser;
use futures::StreamExt;
use http::Request;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use theseus_sim::store::{ListOptions, ResourceKey};
use theseus_sim::{ApiServer, ServerConfig};
use tower::ServiceExt;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Design target for a full list of 150,000 pods.
const LIST_TARGET: Duration = Duration::from_secs(1);
/// Namespace the watch fan-out writes its configmaps to.
const WATCH_NS: &str = "bench-watch";

#[derive(Parser, Debug)]
#[command(
    name = "sim-bench",
    about = "Benchmarks the theseus simulator in-process and prints figures"
)]
struct Args {
    /// Pods to load.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,
    /// Nodes to load (pods are spread over them).
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// ConfigMaps created during the watch fan-out.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Concurrent watchers during the watch fan-out.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
    /// Namespaces the pods are spread over.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Runs of the router list (best and median are printed).
    #[arg(long, default_value_t = 5)]
    router_runs: usize,
    /// Runs of the kube-rs list (best and median are printed).
    #[arg(long, default_value_t = 3)]
    kube_runs: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Res<()> {
    let args = Args::parse();
    let config = ServerConfig {
        // Keep every configmap event of the fan-out in the watch window.
        history_limit: ServerConfig::default().history_limit.max(args.events + 1),
        ..ServerConfig::default()
    };
    let server = ApiServer::new(config).await;
    let client = kube::Client::new(server.router(), "default");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sim-bench: {} pods, {} nodes, {} namespaces, {} events x {} watchers ({} CPUs, tokio multi-thread)",
        args.pods, args.nodes, args.namespaces, args.events, args.watchers, threads
    );
    let (rss0, _) = memory();
    line("baseline", format!("RSS {}", mb(rss0)));

    // 1. setup
    let t = Instant::now();
    for n in 0..args.namespaces {
        create(&server, namespace_json(&ns_name(n))).await?;
    }
    create(&server, namespace_json(WATCH_NS)).await?;
    for i in 0..args.nodes {
        create(&server, node_json(i)).await?;
    }
    let nodes_time = t.elapsed();
    let t = Instant::now();
    for i in 0..args.pods {
        create(&server, pod_json(i, &args)).await?;
    }
    let pods_time = t.elapsed();
    let (rss, hwm) = memory();
    line(
        &format!("create {} nodes (create_internal)", args.nodes),
        format!(
            "{}  {:>8.0} /s",
            secs(nodes_time),
            rate(args.nodes, nodes_time)
        ),
    );
    let manifest = serde_json::to_vec(&pod_json(0, &args))?.len();
    line(
        &format!("create {} pods (create_internal)", args.pods),
        format!(
            "{}  {:>8.0} /s  manifest {manifest} B/pod",
            secs(pods_time),
            rate(args.pods, pods_time)
        ),
    );
    line(
        "setup total",
        format!(
            "{}  RSS {}  peak {}",
            secs(nodes_time + pods_time),
            mb(rss),
            mb(hwm)
        ),
    );

    // 2. list through the raw router
    let target = if args.pods == 150_000 {
        format!("target <= {:.2} s", LIST_TARGET.as_secs_f64())
    } else {
        // Scale the target linearly so that small runs can be compared with it.
        format!(
            "target <= {:.2} s (1 s per 150000 pods)",
            LIST_TARGET.as_secs_f64() * args.pods as f64 / 150_000.0
        )
    };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.router_runs.max(1) {
        let (d, b) = router_list(&server, "/api/v1/pods").await?;
        times.push(d);
        bytes = b;
    }
    line(
        &format!("list {} pods (router, in-process)", args.pods),
        format!(
            "{}  {}  {} B/pod as stored  {}",
            best_median(&mut times),
            mb(bytes),
            bytes / args.pods.max(1),
            target
        ),
    );

    // Breakdown: the store's part of that list (collecting the Arcs under the lock).
    let mut times = Vec::new();
    for _ in 0..args.router_runs.max(1) {
        let t = Instant::now();
        let res = server
            .store
            .list(&ResourceKey::new("", "pods"), &ListOptions::default())
            .await?;
        times.push(t.elapsed());
        check_count("store list", res.items.len(), args.pods)?;
    }
    line(
        "  of which store.list (MemoryStore)",
        best_median(&mut times),
    );

    // 3. list through kube-rs
    let pods: Api<Pod> = Api::all(client.clone());
    let mut times = Vec::new();
    for _ in 0..args.kube_runs.max(1) {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await?;
        times.push(t.elapsed());
        check_count("kube-rs list", list.items.len(), args.pods)?;
    }
    let (rss, hwm) = memory();
    line(
        &format!("list {} pods (kube-rs, k8s-openapi)", args.pods),
        format!(
            "{}  RSS {}  peak {}",
            best_median(&mut times),
            mb(rss),
            mb(hwm)
        ),
    );

    // 4. paginated list through kube-rs
    let t = Instant::now();
    let mut lp = ListParams::default().limit(500);
    let (mut total, mut pages) = (0, 0);
    loop {
        let page = pods.list(&lp).await?;
        total += page.items.len();
        pages += 1;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let paged = t.elapsed();
    check_count("paginated list", total, args.pods)?;
    line(
        &format!("list {} pods (kube-rs, limit=500)", args.pods),
        format!(
            "{}  {} pages  {:.1} ms/page",
            secs(paged),
            pages,
            paged.as_secs_f64() * 1000.0 / pages as f64
        ),
    );

    // Breakdown: the store's part of those pages (same options as the continue tokens give).
    let t = Instant::now();
    let pods_key = ResourceKey::new("", "pods");
    let mut opts = ListOptions {
        limit: Some(500),
        at_revision: Some(server.store.revision()),
        ..ListOptions::default()
    };
    let mut total = 0;
    loop {
        let page = server.store.list(&pods_key, &opts).await?;
        total += page.items.len();
        match page.items.last().filter(|_| page.remaining > 0) {
            Some(last) => {
                let name = last.value["metadata"]["name"].as_str().unwrap_or_default();
                opts.after = Some((last.namespace().to_string(), name.to_string()));
            }
            None => break,
        }
    }
    check_count("paginated store list", total, args.pods)?;
    line("  of which store.list (MemoryStore)", secs(t.elapsed()));

    // 5. watch fan-out
    watch_fan_out(&server, &client, &args).await?;
    let (rss, hwm) = memory();
    line("end", format!("RSS {}  peak {}", mb(rss), mb(hwm)));
    Ok(())
}

/// W kube-rs watchers from the current resourceVersion, then E configmaps created; measures when
/// every watcher has seen all E ADDED events.
async fn watch_fan_out(server: &Arc<ApiServer>, client: &kube::Client, args: &Args) -> Res<()> {
    let (w, e) = (args.watchers, args.events);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), WATCH_NS);
    let rv = server.store.revision().to_string();
    let wp = WatchParams::default().timeout(290);
    let mut streams = Vec::new();
    for _ in 0..w {
        streams.push(cms.watch(&wp, &rv).await?.boxed());
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < e {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(_))) => seen += 1,
                    Some(Ok(WatchEvent::Error(err))) => {
                        return Err(format!("watch error: {err:?}"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(format!("watch stream failed: {err}")),
                    None => return Err(format!("watch ended after {seen} of {e} events")),
                }
            }
            Ok(Instant::now())
        }));
    }
    for i in 0..e {
        create(server, configmap_json(i)).await?;
        if i % 64 == 63 {
            // The store never awaits: let the watchers run on this worker too.
            tokio::task::yield_now().await;
        }
    }
    let created = start.elapsed();
    let mut first = None::<Duration>;
    let mut last = Duration::ZERO;
    for t in tasks {
        let done = t
            .await?
            .map_err(|m| -> Box<dyn std::error::Error + Send + Sync> { m.into() })?;
        let d = done.duration_since(start);
        first = Some(first.map_or(d, |f| f.min(d)));
        last = last.max(d);
    }
    line(
        &format!("watch: create {e} configmaps"),
        format!("{}  {:>8.0} /s", secs(created), rate(e, created)),
    );
    line(
        &format!("watch: {w} watchers x {e} events (kube-rs)"),
        format!(
            "all delivered {}  first watcher {}  {:>8.0} events/s delivered",
            secs(last),
            secs(first.unwrap_or_default()),
            rate(w * e, last)
        ),
    );
    Ok(())
}

async fn create(server: &ApiServer, obj: Value) -> Res<()> {
    server
        .create_internal(obj)
        .await
        .map(drop)
        .map_err(|e| format!("create_internal failed: {e:?}").into())
}

/// One GET through the router as a tower service, body collected: (wall time, body bytes).
async fn router_list(server: &Arc<ApiServer>, uri: &str) -> Res<(Duration, usize)> {
    let t = Instant::now();
    let req = Request::get(uri).body(Body::empty())?;
    let resp = server.router().oneshot(req).await?;
    if !resp.status().is_success() {
        return Err(format!("GET {uri}: {}", resp.status()).into());
    }
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
    Ok((t.elapsed(), body.len()))
}

fn check_count(what: &str, got: usize, want: usize) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got} items, expected {want}").into())
    }
}

// ----------------------------------------------------------------------------------------------
// Objects

fn ns_name(n: usize) -> String {
    format!("team-{n:02}")
}

fn namespace_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "labels": {"team": name}}})
}

/// A stable pseudo-random 64-bit value (splitmix64), for hashes, uids and container ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uid(seed: u64) -> String {
    let (a, b) = (mix(seed), mix(seed ^ 0xABCD));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn node_name(i: usize) -> String {
    format!("worker-{i:05}")
}

fn node_ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)
}

fn node_json(i: usize) -> Value {
    let name = node_name(i);
    let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": format!("kubelet reports {t}={s}"),
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "m6i.4xlarge",
            "topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": zone,
            "node-role.kubernetes.io/worker": ""}},
        "spec": {"providerID": format!("aws:///{zone}/i-{:017x}", mix(i as u64) >> 4),
            "podCIDR": format!("100.64.{}.0/24", i % 256)},
        "status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "15890m", "memory": "62Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady")],
            "addresses": [{"type": "InternalIP", "address": node_ip(i)},
                {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.4", "kubeProxyVersion": "v1.33.4",
                "containerRuntimeVersion": "containerd://1.7.27", "osImage": "Ubuntu 24.04.2 LTS",
                "kernelVersion": "6.8.0-1024-aws", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": format!("{:016x}{:016x}", mix(i as u64 + 7), mix(i as u64 + 9)),
                "systemUUID": uid(i as u64 + 11), "bootID": uid(i as u64 + 13)}}
    })
}

/// A pod of a Deployment's ReplicaSet (ten replicas per ReplicaSet), ~1.5 KB as stored.
fn pod_json(i: usize, args: &Args) -> Value {
    let rs = i / 10;
    let ns = ns_name(rs % args.namespaces.max(1));
    let app = format!("svc-{rs}");
    let hash = format!("{:010x}", mix(rs as u64) >> 24);
    let rs_name = format!("{app}-{hash}");
    // Unique within the ReplicaSet: the last character is the replica's index.
    let name = format!("{rs_name}-{:04x}{}", mix(i as u64) & 0xffff, i % 10);
    let node = args.nodes.max(1);
    let node_i = i % node;
    let pod_ip = format!("100.64.{}.{}", node_i % 256, i / node % 250 + 2);
    let image = format!("registry.example.com/shop/{app}:1.{}.{}", rs % 7, rs % 13);
    let tier = ["frontend", "backend", "worker"][rs % 3];
    let ts = "2026-01-01T00:00:00Z";
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": ts});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "generateName": format!("{rs_name}-"),
            "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": hash, "tier": tier},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                "uid": uid(rs as u64), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": node_name(node_i),
            "containers": [{"name": "app", "image": image,
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"}},
                }]},
        "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": node_ip(node_i),
            "podIP": pod_ip, "startTime": ts,
            "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0,
                "image": image,
                "containerID": format!("containerd://{:016x}{:016x}", mix(i as u64 + 2), mix(i as u64 + 3)),
                "state": {"running": {"startedAt": ts}}}]}
    })
}

fn configmap_json(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i:06}"), "namespace": WATCH_NS, "labels": {"bench": "watch"}},
        "data": {"index": i.to_string(), "payload": "x".repeat(64)}})
}

// ----------------------------------------------------------------------------------------------
// Figures

fn line(label: &str, figures: String) {
    println!("{label:<46} {figures}");
}

fn secs(d: Duration) -> String {
    format!("{:>8.4} s", d.as_secs_f64())
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn best_median(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "best {}  median {}",
        secs(times[0]),
        secs(times[times.len() / 2])
    )
}

fn mb(bytes: usize) -> String {
    format!("{:>6.0} MB", bytes as f64 / 1e6)
}

/// (VmRSS, VmHWM) in bytes, from /proc/self/status (0 where unavailable).
fn memory() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

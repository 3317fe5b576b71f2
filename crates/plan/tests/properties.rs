//! Property tests over random clusters: every plan passes the independent checker of
//! `util::check_plan` (each selected node in exactly one wave, control-plane nodes alone and the
//! primary last, every displaced pod placeable in every wave that is not blocked, every PDB
//! within budget in every multi-node wave), covers exactly the selected nodes, respects the cap,
//! and is deterministic.

mod util;

use std::collections::BTreeSet;

use proptest::prelude::*;
use theseus_model::IntOrPercent;
use theseus_model::plan::WaveKind;
use theseus_model::selector::{Taint, TaintEffect};
use theseus_model::snapshot::{
    ClusterSnapshot, Inventory, LABEL_HOSTNAME, LABEL_ZONE, NodeCondition, WorkloadKind,
};
use theseus_plan::plan_detailed;
use util::{Cluster, GI, MI, check_plan, migration};

/// splitmix64, so that one seed gives one cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
struct Shape {
    seed: u64,
    workers: usize,
    control_plane: usize,
    workloads: usize,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (any::<u64>(), 2usize..9, 0usize..4, 0usize..7).prop_map(
        |(seed, workers, control_plane, workloads)| Shape {
            seed,
            workers,
            control_plane,
            workloads,
        },
    )
}

/// A random cluster whose pods sit where a scheduler could have put them.
fn cluster(shape: &Shape) -> ClusterSnapshot {
    let mut r = Rng(shape.seed);
    let zones = 1 + r.below(3) as usize;
    let zone = |i: usize| ["a", "b", "c"][i % zones].to_string();
    let mut c = Cluster::new("v1.30.2");
    let cp_schedulable = r.chance(30);
    for i in 0..shape.control_plane {
        c.control_plane(
            &format!("cp{i}"),
            &format!("10.0.1.{i}"),
            &zone(i),
            cp_schedulable,
        );
    }
    for i in 0..shape.workers {
        let cpu = 2000 + 1000 * r.below(7) as i64;
        let mem = (4 + r.below(13) as i64) * GI;
        let pods = 8 + r.below(23) as i64;
        c.worker(
            &format!("w{i}"),
            &format!("10.0.0.{i}"),
            &zone(i + 1),
            cpu,
            mem,
            pods,
        );
    }
    if r.chance(20) {
        let n = shape.control_plane + r.below(shape.workers as u64) as usize;
        c.snap.nodes[n].unschedulable = true;
    }
    if r.chance(10) {
        let n = shape.control_plane + r.below(shape.workers as u64) as usize;
        c.snap.nodes[n].conditions.push(NodeCondition {
            kind: "Ready".into(),
            status: "False".into(),
            reason: None,
        });
    }
    if r.chance(15) && shape.workers > 2 {
        c.snap.nodes[shape.control_plane].taints.push(Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: TaintEffect::NoSchedule,
        });
    }
    if r.chance(50) {
        c.daemonset("kube-system", "agent", 50, 32 * MI);
    }
    let node_names: Vec<String> = c.snap.nodes.iter().map(|n| n.name.clone()).collect();
    for w in 0..shape.workloads {
        let name = format!("app{w}");
        let replicas = 1 + r.below(5) as usize;
        let cpu = 100 + 100 * r.below(15) as i64;
        let mem = (64 + 64 * r.below(16) as i64) * MI;
        let kind = if r.chance(25) {
            WorkloadKind::StatefulSet
        } else {
            WorkloadKind::Deployment
        };
        let anti = match r.below(10) {
            0 | 1 => Some(LABEL_HOSTNAME),
            2 => Some(LABEL_ZONE),
            _ => None,
        };
        let zone_pin = r.chance(10).then(|| zone(r.below(3) as usize));
        // Place replicas like a scheduler would: the first node (from a random offset) that
        // fits, honouring taints, the zone pin, anti-affinity and capacity.
        let mut placed: Vec<String> = Vec::new();
        let start = r.below(node_names.len() as u64) as usize;
        for _ in 0..replicas {
            let mut chosen = None;
            for k in 0..node_names.len() {
                let n = &node_names[(start + k + placed.len()) % node_names.len()];
                let node = c.snap.node(n).unwrap();
                if node
                    .taints
                    .iter()
                    .any(|t| t.effect != TaintEffect::PreferNoSchedule)
                    || node.unschedulable
                    || !node.is_ready()
                {
                    continue;
                }
                if zone_pin
                    .as_ref()
                    .is_some_and(|z| node.labels.get(LABEL_ZONE) != Some(z))
                {
                    continue;
                }
                if let Some(key) = anti {
                    let dom = node.labels.get(key);
                    if placed
                        .iter()
                        .any(|p| c.snap.node(p).unwrap().labels.get(key) == dom)
                    {
                        continue;
                    }
                }
                let (used_cpu, used_mem, used_pods) = c
                    .snap
                    .pods
                    .iter()
                    .filter(|p| p.node_name.as_deref() == Some(n))
                    .fold((0, 0, 0), |a, p| {
                        (
                            a.0 + p.requests.cpu_millis,
                            a.1 + p.requests.memory_bytes,
                            a.2 + 1,
                        )
                    });
                let a = node.allocatable;
                if used_cpu + cpu <= a.cpu_millis
                    && used_mem + mem <= a.memory_bytes
                    && used_pods < a.pods
                {
                    chosen = Some(n.clone());
                    break;
                }
            }
            let Some(n) = chosen else { break };
            c.replica(
                kind.clone(),
                "ns",
                &name,
                &format!("{name}-{}", placed.len()),
                &n,
                cpu,
                mem,
            );
            placed.push(n);
        }
        if placed.is_empty() {
            continue;
        }
        c.workload_record(kind.clone(), "ns", &name, placed.len());
        for p in c
            .snap
            .pods
            .iter_mut()
            .filter(|p| p.labels.get("app") == Some(&name))
        {
            if let Some(z) = &zone_pin {
                p.node_selector.insert(LABEL_ZONE.into(), z.clone());
            }
            if r.chance(3) {
                p.ready = false;
            }
            if r.chance(10) {
                p.empty_dir = vec!["scratch".into()];
            }
        }
        if let Some(key) = anti {
            c.anti_affinity("ns", &name, key);
        }
        let n = placed.len() as i64;
        match r.below(6) {
            0 => {
                // Now and then one that never allows a disruption (minAvailable = replicas).
                let min = if r.chance(10) {
                    n
                } else {
                    r.below(n as u64) as i64
                };
                c.pdb("ns", &name, &name, Some(IntOrPercent::Int(min)), None);
            }
            1 => {
                let max = if r.chance(10) {
                    0
                } else {
                    1 + r.below(2) as i64
                };
                c.pdb("ns", &name, &name, None, Some(IntOrPercent::Int(max)));
            }
            2 => {
                c.pdb(
                    "ns",
                    &name,
                    &name,
                    None,
                    Some(IntOrPercent::Percent([25, 50][r.below(2) as usize])),
                );
            }
            3 => {
                c.pdb("ns", &name, &name, Some(IntOrPercent::Percent(50)), None);
            }
            _ => {}
        }
    }
    if r.chance(20) && shape.workers > 0 {
        let n = format!("w{}", r.below(shape.workers as u64));
        c.naked_pod("ns", "naked", &n);
    }
    if shape.control_plane > 1 && r.chance(50) {
        let mut cps: Vec<String> = (0..shape.control_plane).map(|i| format!("cp{i}")).collect();
        cps.rotate_left(r.below(shape.control_plane as u64) as usize);
        c.snap.control_plane.inventory = Some(Inventory {
            kube_control_plane: cps,
            ..Default::default()
        });
    }
    c.build()
}

fn spec(seed: u64) -> String {
    let mut r = Rng(seed ^ 0x5eed);
    let op = if r.chance(50) {
        "  operation: {osMigration: {targetOsImage: Ubuntu 22.04.4 LTS}}\n"
    } else {
        "  operation: {maintenance: {action: reboot}}\n"
    };
    let strategy = [
        "removeBeforeAdd",
        "removeBeforeAdd",
        "removeBeforeAdd",
        "addBeforeRemove",
    ][r.below(4) as usize];
    let max = ["auto", "1", "2", "50%"][r.below(4) as usize];
    let cap = if max == "auto" && r.chance(50) {
        ", maxUnavailableCap: 100%"
    } else {
        ""
    };
    let zbz = r.chance(30);
    let protect = r.chance(80);
    let surge = r.chance(80);
    let force = r.chance(50);
    format!(
        "{op}  strategy: {{type: {strategy}, maxUnavailable: {max}{cap}, zoneByZone: {zbz}, protectUnbudgeted: {protect}}}\n  surge: {{singleReplicaDeployments: {surge}}}\n  drain: {{force: {force}, deleteEmptyDirData: true}}\n"
    )
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=5000 for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn plans_are_safe_by_construction(shape in shapes()) {
        let snap = cluster(&shape);
        let m = migration(&spec(shape.seed));
        let detail = plan_detailed(&snap, &m);
        let p = &detail.plan;

        let violations = check_plan(&snap, &detail);
        prop_assert!(violations.is_empty(), "{violations:#?}\n{}", theseus_plan::render_text(p));

        // Exactly the selected nodes, each once.
        let in_waves: Vec<&String> = p.waves.iter().flat_map(|w| w.nodes.iter()).collect();
        let unique: BTreeSet<&String> = in_waves.iter().copied().collect();
        prop_assert_eq!(in_waves.len(), unique.len());
        let expected: BTreeSet<&String> = snap.nodes.iter().map(|n| &n.name).filter(|n| !p.selection.skipped.contains(n)).collect();
        prop_assert_eq!(unique, expected);

        // The cap holds; control-plane waves are single and last (OS migration, maintenance),
        // the primary very last.
        for w in &p.waves {
            if w.kind == WaveKind::Workers {
                prop_assert!(w.nodes.len() <= p.selection.max_wave_size as usize);
            }
        }
        let first_cp = p.waves.iter().position(|w| w.kind == WaveKind::ControlPlane);
        if let Some(i) = first_cp {
            prop_assert!(p.waves[i..].iter().all(|w| w.kind == WaveKind::ControlPlane && w.nodes.len() == 1));
            if let Some(primary) = &p.control_plane.primary {
                prop_assert_eq!(&p.waves.last().unwrap().nodes[0], primary);
            }
        }
        prop_assert!(p.estimate.lower_bound_seconds <= p.estimate.total_seconds);
        // A blocked wave always comes with an error finding.
        if p.waves.iter().any(|w| w.blocked) {
            prop_assert!(p.is_blocked());
        }

        // Deterministic, and the JSON round-trips.
        let again = plan_detailed(&snap, &m);
        prop_assert_eq!(&again.plan, p);
        prop_assert_eq!(&again.trace, &detail.trace);
        let json = serde_json::to_string(p).unwrap();
        let back: theseus_model::plan::Plan = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, p);
    }

    #[test]
    fn snapshots_round_trip_through_json(shape in shapes()) {
        let snap = cluster(&shape);
        let json = snap.to_json().unwrap();
        prop_assert_eq!(ClusterSnapshot::from_json(&json).unwrap(), snap);
    }
}

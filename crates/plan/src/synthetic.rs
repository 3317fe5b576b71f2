//! Synthetic clusters for benchmarks and tests: deterministic for a seed, shaped like a
//! production cluster (zones, DaemonSets on every node, Deployments and StatefulSets guarded by
//! PDBs of every kind, a few single-replica and anti-affine workloads), filled to a chosen CPU
//! utilization.

use std::collections::BTreeMap;

use theseus_model::IntOrPercent;
use theseus_model::KubeVersion;
use theseus_model::selector::{
    LabelSelector, Labels, Taint, TaintEffect, Toleration, TolerationOperator,
};
use theseus_model::snapshot::{
    Affinity, Allocatable, COMPONENT_APISERVER, COMPONENT_CONTROLLER_MANAGER, COMPONENT_ETCD,
    COMPONENT_SCHEDULER, ClusterSnapshot, ControlPlane, ControlPlaneComponent, ControllerRef,
    KubeadmConfig, LABEL_HOSTNAME, LABEL_ZONE, Node, NodeAddress, NodeCondition, Pod,
    PodAffinityTerm, PodDisruptionBudget, PodPhase, Resources, Service, SnapshotMetadata, Workload,
    WorkloadKind,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Nodes in total, control plane included.
    pub nodes: usize,
    /// Control-plane nodes (tainted NoSchedule).
    pub control_plane: usize,
    /// Pods in total, DaemonSet pods included.
    pub pods: usize,
    /// PodDisruptionBudgets (one per workload, for the first `pdbs` workloads).
    pub pdbs: usize,
    /// Zones the nodes are spread over.
    pub zones: usize,
    /// Target CPU utilization of the workers by requests, 0..1.
    pub fill: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            nodes: 5_000,
            control_plane: 3,
            pods: 150_000,
            pdbs: 5_000,
            zones: 3,
            fill: 0.5,
            seed: 1,
        }
    }
}

/// splitmix64.
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

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 10 + i / 65_536, (i / 256) % 256, i % 256)
}

/// A synthetic cluster.
pub fn synthetic_snapshot(spec: &SyntheticSpec) -> ClusterSnapshot {
    let mut rng = Rng(spec.seed);
    let version = KubeVersion::new(1, 33, Some(4));
    let zones = spec.zones.max(1);
    let cp_count = spec.control_plane.min(spec.nodes);
    let mut nodes = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes {
        let control_plane = i < cp_count;
        let name = if control_plane {
            format!("cp-{}", i + 1)
        } else {
            format!("worker-{:05}", i - cp_count + 1)
        };
        let zone = format!("zone-{}", (b'a' + (i % zones) as u8) as char);
        let mut labels = Labels::new();
        labels.insert(LABEL_HOSTNAME.into(), name.clone());
        labels.insert(LABEL_ZONE.into(), zone.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        let big = !control_plane && rng.chance(30);
        labels.insert(
            "pool".into(),
            if control_plane {
                "system"
            } else if big {
                "large"
            } else {
                "general"
            }
            .into(),
        );
        let mut roles = Vec::new();
        let mut taints = Vec::new();
        if control_plane {
            labels.insert(
                "node-role.kubernetes.io/control-plane".into(),
                String::new(),
            );
            roles.push("control-plane".to_string());
            taints.push(Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: TaintEffect::NoSchedule,
            });
        }
        nodes.push(Node {
            name,
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: ip(i + 1),
            }],
            roles,
            labels,
            taints,
            zone: Some(zone),
            allocatable: Allocatable {
                cpu_millis: if big { 32_000 } else { 16_000 },
                memory_bytes: if big { 128 * GI } else { 64 * GI },
                pods: 110,
            },
            os_image: "CentOS Linux 7 (Core)".into(),
            kernel_version: "3.10.0-1160.el7.x86_64".into(),
            kubelet_version: Some(version.clone()),
            container_runtime_version: "containerd://1.7.20".into(),
            architecture: "amd64".into(),
            conditions: vec![NodeCondition {
                kind: "Ready".into(),
                status: "True".into(),
                reason: None,
            }],
            unschedulable: false,
        });
    }
    let mut free_cpu: Vec<i64> = nodes.iter().map(|n| n.allocatable.cpu_millis).collect();
    let mut free_mem: Vec<i64> = nodes.iter().map(|n| n.allocatable.memory_bytes).collect();
    let mut free_pods: Vec<i64> = nodes.iter().map(|n| n.allocatable.pods).collect();
    let mut pods: Vec<Pod> = Vec::with_capacity(spec.pods);
    let mut workloads: Vec<Workload> = Vec::new();
    let mut pdbs: Vec<PodDisruptionBudget> = Vec::new();
    let mut services: Vec<Service> = Vec::new();

    // DaemonSets on every node.
    let daemonsets = [
        ("kube-system", "calico-node", 100, 128 * MI),
        ("monitoring", "node-exporter", 50, 64 * MI),
    ];
    let tolerate_all = vec![Toleration {
        operator: TolerationOperator::Exists,
        ..Default::default()
    }];
    for (ns, name, cpu, mem) in daemonsets {
        if pods.len() + nodes.len() > spec.pods {
            break;
        }
        workloads.push(Workload {
            kind: WorkloadKind::DaemonSet,
            namespace: ns.into(),
            name: name.into(),
            replicas: nodes.len() as i32,
            ready_replicas: nodes.len() as i32,
            available_replicas: None,
            strategy: None,
            selector: Some(LabelSelector::from_labels([("app", name)])),
            min_ready_seconds: None,
        });
        for (i, node) in nodes.iter().enumerate() {
            free_cpu[i] -= cpu;
            free_mem[i] -= mem;
            free_pods[i] -= 1;
            pods.push(Pod {
                namespace: ns.into(),
                name: format!("{name}-{i:05}"),
                node_name: Some(node.name.clone()),
                labels: [("app".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
                controller: Some(ControllerRef {
                    kind: WorkloadKind::DaemonSet,
                    name: name.into(),
                }),
                requests: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                },
                phase: PodPhase::Running,
                ready: true,
                tolerations: tolerate_all.clone(),
                ..Default::default()
            });
        }
    }

    // Application workloads over the workers.
    let workers: Vec<usize> = (cp_count..nodes.len()).collect();
    let app_pods = spec.pods.saturating_sub(pods.len());
    if workers.is_empty() || app_pods == 0 {
        return finish(nodes, pods, workloads, pdbs, services, cp_count, version);
    }
    let n_workloads = (spec.pdbs + spec.pdbs / 10).max(1).min(app_pods);
    let avg_replicas = (app_pods / n_workloads).max(1);
    let worker_cpu: i64 = workers.iter().map(|&i| free_cpu[i]).sum();
    let avg_cpu = ((worker_cpu as f64 * spec.fill) / app_pods as f64).max(10.0) as i64;
    let namespaces = 50usize;
    let mut placed = 0usize;
    let mut cursor = rng.below(workers.len() as u64) as usize;
    for w in 0..n_workloads {
        if placed >= app_pods {
            break;
        }
        let remaining_workloads = n_workloads - w;
        let mut replicas = if w % 50 == 7 {
            1
        } else {
            (avg_replicas / 2 + rng.below(avg_replicas as u64 + 1) as usize).max(2)
        };
        if remaining_workloads == 1 {
            replicas = app_pods - placed;
        }
        replicas = replicas.min(app_pods - placed);
        let ns = format!("team-{:02}", w % namespaces);
        let stateful = w % 10 == 3;
        let name = format!("{}-{w:05}", if stateful { "db" } else { "app" });
        let kind = if stateful {
            WorkloadKind::StatefulSet
        } else {
            WorkloadKind::Deployment
        };
        let cpu = (avg_cpu / 2 + rng.below(avg_cpu as u64 + 1) as i64).max(10);
        let mem = (cpu * 4 * MI / 1000 * 2).max(64 * MI);
        let anti = replicas <= workers.len() / 4 && w % 13 == 5;
        let selector = LabelSelector::from_labels([("app", name.as_str())]);
        let affinity = anti.then(|| Affinity {
            pod_anti_affinity: vec![PodAffinityTerm {
                label_selector: selector.clone(),
                topology_key: LABEL_HOSTNAME.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        workloads.push(Workload {
            kind: kind.clone(),
            namespace: ns.clone(),
            name: name.clone(),
            replicas: replicas as i32,
            ready_replicas: replicas as i32,
            available_replicas: Some(replicas as i32),
            strategy: None,
            selector: Some(selector.clone()),
            min_ready_seconds: None,
        });
        let mut used_nodes: Vec<usize> = Vec::new();
        for r in 0..replicas {
            // Next worker with room (and, for anti-affine workloads, without a replica).
            let mut chosen = None;
            for step in 0..workers.len() {
                let i = workers[(cursor + step) % workers.len()];
                if free_pods[i] >= 1
                    && free_cpu[i] >= cpu
                    && free_mem[i] >= mem
                    && !(anti && used_nodes.contains(&i))
                {
                    chosen = Some(i);
                    cursor = (cursor + step + 1 + rng.below(3) as usize) % workers.len();
                    break;
                }
            }
            let Some(i) = chosen else { break };
            free_cpu[i] -= cpu;
            free_mem[i] -= mem;
            free_pods[i] -= 1;
            used_nodes.push(i);
            let pod_name = if stateful {
                format!("{name}-{r}")
            } else {
                format!("{name}-{:08x}", rng.next() as u32)
            };
            let mut labels = Labels::new();
            labels.insert("app".into(), name.clone());
            labels.insert(
                "tier".into(),
                if w % 3 == 0 { "web" } else { "backend" }.into(),
            );
            pods.push(Pod {
                namespace: ns.clone(),
                name: pod_name,
                node_name: Some(nodes[i].name.clone()),
                labels,
                controller: Some(ControllerRef {
                    kind: kind.clone(),
                    name: name.clone(),
                }),
                requests: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                },
                phase: PodPhase::Running,
                ready: true,
                empty_dir: if w % 17 == 4 {
                    vec!["cache".into()]
                } else {
                    Vec::new()
                },
                affinity: affinity.clone(),
                termination_grace_period_seconds: Some(30),
                startup_seconds: Some(5 + (rng.below(25) as u32)),
                ..Default::default()
            });
            placed += 1;
        }
        if w < spec.pdbs && replicas >= 2 {
            let (min_available, max_unavailable) = match w % 10 {
                0..=3 => (None, Some(IntOrPercent::Int(1))),
                4..=6 => (None, Some(IntOrPercent::Percent(25))),
                7 | 8 => (Some(IntOrPercent::Percent(50)), None),
                _ => (Some(IntOrPercent::Int(replicas as i64 - 1)), None),
            };
            pdbs.push(PodDisruptionBudget {
                namespace: ns.clone(),
                name,
                selector: selector.clone(),
                min_available,
                max_unavailable,
                unhealthy_pod_eviction_policy: None,
                status: None,
            });
        }
        if w % 4 == 0 {
            services.push(Service {
                namespace: ns,
                name: format!("svc-{w:05}"),
                kind: Some("ClusterIP".into()),
                selector: selector.match_labels.clone(),
                cluster_ip: None,
                ports: Vec::new(),
            });
        }
    }
    finish(nodes, pods, workloads, pdbs, services, cp_count, version)
}

fn finish(
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    workloads: Vec<Workload>,
    pdbs: Vec<PodDisruptionBudget>,
    services: Vec<Service>,
    cp_count: usize,
    version: KubeVersion,
) -> ClusterSnapshot {
    let mut components = Vec::new();
    let mut pods = pods;
    for node in nodes.iter().take(cp_count) {
        for c in [
            COMPONENT_APISERVER,
            COMPONENT_CONTROLLER_MANAGER,
            COMPONENT_SCHEDULER,
            COMPONENT_ETCD,
        ] {
            components.push(ControlPlaneComponent {
                component: c.into(),
                node: node.name.clone(),
                version: (c != COMPONENT_ETCD).then(|| version.clone()),
                image: Some(format!("registry.k8s.io/{c}:{version}")),
            });
            pods.push(Pod {
                namespace: "kube-system".into(),
                name: format!("{c}-{}", node.name),
                node_name: Some(node.name.clone()),
                mirror: true,
                phase: PodPhase::Running,
                ready: true,
                requests: Resources {
                    cpu_millis: 100,
                    memory_bytes: 128 * MI,
                },
                ..Default::default()
            });
        }
    }
    let endpoint = nodes
        .first()
        .and_then(|n| n.addresses.first())
        .map(|a| format!("{}:6443", a.address));
    ClusterSnapshot {
        metadata: SnapshotMetadata {
            source: Some("synthetic".into()),
            ..Default::default()
        },
        kubernetes_version: Some(version.clone()),
        control_plane: ControlPlane {
            nodes: nodes
                .iter()
                .take(cp_count)
                .map(|n| n.name.clone())
                .collect(),
            components,
            kubeadm: Some(KubeadmConfig {
                config_map: Some("kube-system/kubeadm-config".into()),
                kubernetes_version: Some(version),
                control_plane_endpoint: endpoint.clone(),
                cluster_name: Some("synthetic".into()),
                external_etcd_endpoints: Vec::new(),
            }),
            cluster_info_server: endpoint.map(|e| format!("https://{e}")),
            ..Default::default()
        },
        nodes,
        pods,
        workloads,
        pod_disruption_budgets: pdbs,
        services,
        ..Default::default()
    }
}

/// Counts of a snapshot, for printing.
pub fn describe(s: &ClusterSnapshot) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for w in &s.workloads {
        *kinds.entry(w.kind.to_string()).or_insert(0) += 1;
    }
    format!(
        "{} nodes, {} pods, {} PDBs, workloads: {}",
        s.nodes.len(),
        s.pods.len(),
        s.pod_disruption_budgets.len(),
        kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let spec = SyntheticSpec {
            nodes: 50,
            pods: 1200,
            pdbs: 40,
            ..Default::default()
        };
        let a = synthetic_snapshot(&spec);
        let b = synthetic_snapshot(&spec);
        assert_eq!(a, b);
        assert_eq!(a.nodes.len(), 50);
        // DaemonSets and apps fill up to the requested count, plus the static pods.
        let non_static = a.pods.iter().filter(|p| !p.mirror).count();
        assert!(non_static <= 1200 && non_static > 1100, "{non_static}");
        assert!(a.pod_disruption_budgets.len() >= 30);
        for n in &a.nodes {
            let pods = a
                .pods
                .iter()
                .filter(|p| p.node_name.as_deref() == Some(&n.name))
                .count() as i64;
            assert!(pods <= n.allocatable.pods);
        }
    }
}

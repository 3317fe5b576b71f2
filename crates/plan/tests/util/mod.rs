//! Helpers to write small snapshots by hand, and an independent checker of plans.
#![allow(dead_code, clippy::too_many_arguments)]

use std::collections::{BTreeMap, BTreeSet};

use theseus_model::plan::{Plan, WaveKind};
use theseus_model::selector::{
    LabelSelector, Labels, Taint, TaintEffect, Toleration, TolerationOperator, tolerates_all,
};
use theseus_model::snapshot::{
    Affinity, Allocatable, ClusterSnapshot, ControllerRef, LABEL_HOSTNAME, LABEL_ZONE, Node,
    NodeAddress, Pod, PodAffinityTerm, PodDisruptionBudget, PodPhase, Resources, Workload,
    WorkloadKind,
};
use theseus_model::spec::Migration;
use theseus_model::{IntOrPercent, KubeVersion};
use theseus_plan::PlanDetail;

pub const MI: i64 = 1 << 20;
pub const GI: i64 = 1 << 30;

/// A cluster written by hand.
pub struct Cluster {
    pub snap: ClusterSnapshot,
    seq: usize,
}

impl Cluster {
    pub fn new(version: &str) -> Self {
        let snap = ClusterSnapshot {
            kubernetes_version: Some(KubeVersion::parse(version).unwrap()),
            ..Default::default()
        };
        Cluster { snap, seq: 0 }
    }

    /// A worker node.
    pub fn worker(
        &mut self,
        name: &str,
        ip: &str,
        zone: &str,
        cpu: i64,
        mem: i64,
        pods: i64,
    ) -> &mut Self {
        let mut labels = Labels::new();
        labels.insert(LABEL_HOSTNAME.into(), name.into());
        if !zone.is_empty() {
            labels.insert(LABEL_ZONE.into(), zone.into());
        }
        let version = self.snap.kubernetes_version.clone();
        self.snap.nodes.push(Node {
            name: name.into(),
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: ip.into(),
            }],
            labels,
            zone: (!zone.is_empty()).then(|| zone.to_string()),
            allocatable: Allocatable {
                cpu_millis: cpu,
                memory_bytes: mem,
                pods,
            },
            os_image: "CentOS Linux 7 (Core)".into(),
            kubelet_version: version,
            ..Default::default()
        });
        self
    }

    /// A control-plane node, tainted NoSchedule unless `schedulable`.
    pub fn control_plane(
        &mut self,
        name: &str,
        ip: &str,
        zone: &str,
        schedulable: bool,
    ) -> &mut Self {
        self.worker(name, ip, zone, 8000, 16 * GI, 110);
        let n = self.snap.nodes.last_mut().unwrap();
        n.roles.push("control-plane".into());
        n.labels.insert(
            "node-role.kubernetes.io/control-plane".into(),
            String::new(),
        );
        if !schedulable {
            n.taints.push(Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: TaintEffect::NoSchedule,
            });
        }
        self
    }

    fn pod(
        &mut self,
        ns: &str,
        name: &str,
        node: &str,
        app: &str,
        controller: Option<(WorkloadKind, &str)>,
        cpu: i64,
        mem: i64,
    ) -> &mut Pod {
        self.seq += 1;
        let mut labels = Labels::new();
        labels.insert("app".into(), app.into());
        self.snap.pods.push(Pod {
            namespace: ns.into(),
            name: name.into(),
            node_name: Some(node.into()),
            labels,
            controller: controller.map(|(kind, name)| ControllerRef {
                kind,
                name: name.into(),
            }),
            requests: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
            phase: PodPhase::Running,
            ready: true,
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        });
        self.snap.pods.last_mut().unwrap()
    }

    /// A Deployment (or StatefulSet) whose replicas sit on `nodes`, round robin.
    pub fn workload(
        &mut self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        replicas: usize,
        cpu: i64,
        mem: i64,
        nodes: &[&str],
    ) -> &mut Self {
        self.snap.workloads.push(Workload {
            kind: kind.clone(),
            namespace: ns.into(),
            name: name.into(),
            replicas: replicas as i32,
            ready_replicas: replicas as i32,
            available_replicas: Some(replicas as i32),
            strategy: None,
            selector: Some(LabelSelector::from_labels([("app", name)])),
            min_ready_seconds: None,
        });
        for r in 0..replicas {
            let node = nodes[r % nodes.len()];
            let pod_name = format!("{name}-{r}");
            self.pod(
                ns,
                &pod_name,
                node,
                name,
                Some((kind.clone(), name)),
                cpu,
                mem,
            );
        }
        self
    }

    pub fn deployment(
        &mut self,
        ns: &str,
        name: &str,
        replicas: usize,
        cpu: i64,
        mem: i64,
        nodes: &[&str],
    ) -> &mut Self {
        self.workload(
            WorkloadKind::Deployment,
            ns,
            name,
            replicas,
            cpu,
            mem,
            nodes,
        )
    }

    /// One pod of workload `app` on `node`.
    pub fn replica(
        &mut self,
        kind: WorkloadKind,
        ns: &str,
        app: &str,
        pod_name: &str,
        node: &str,
        cpu: i64,
        mem: i64,
    ) -> &mut Self {
        self.pod(ns, pod_name, node, app, Some((kind, app)), cpu, mem);
        self
    }

    /// The record of a workload whose pods were added with [`Cluster::replica`].
    pub fn workload_record(
        &mut self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        replicas: usize,
    ) -> &mut Self {
        self.snap.workloads.push(Workload {
            kind,
            namespace: ns.into(),
            name: name.into(),
            replicas: replicas as i32,
            ready_replicas: replicas as i32,
            available_replicas: Some(replicas as i32),
            strategy: None,
            selector: Some(LabelSelector::from_labels([("app", name)])),
            min_ready_seconds: None,
        });
        self
    }

    /// Adds required anti-affinity on `key` among the pods of `app`.
    pub fn anti_affinity(&mut self, ns: &str, app: &str, key: &str) -> &mut Self {
        for p in
            self.snap.pods.iter_mut().filter(|p| {
                p.namespace == ns && p.labels.get("app").map(String::as_str) == Some(app)
            })
        {
            p.affinity = Some(Affinity {
                pod_anti_affinity: vec![PodAffinityTerm {
                    label_selector: LabelSelector::from_labels([("app", app)]),
                    topology_key: key.into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        self
    }

    /// A DaemonSet with a pod on every node.
    pub fn daemonset(&mut self, ns: &str, name: &str, cpu: i64, mem: i64) -> &mut Self {
        let nodes: Vec<String> = self.snap.nodes.iter().map(|n| n.name.clone()).collect();
        self.snap.workloads.push(Workload {
            kind: WorkloadKind::DaemonSet,
            namespace: ns.into(),
            name: name.into(),
            replicas: nodes.len() as i32,
            ready_replicas: nodes.len() as i32,
            available_replicas: None,
            strategy: None,
            selector: None,
            min_ready_seconds: None,
        });
        for (i, node) in nodes.iter().enumerate() {
            let pod_name = format!("{name}-{i}");
            let p = self.pod(
                ns,
                &pod_name,
                node,
                name,
                Some((WorkloadKind::DaemonSet, name)),
                cpu,
                mem,
            );
            p.tolerations = vec![Toleration {
                operator: TolerationOperator::Exists,
                ..Default::default()
            }];
        }
        self
    }

    /// A pod without a controller.
    pub fn naked_pod(&mut self, ns: &str, name: &str, node: &str) -> &mut Self {
        self.pod(ns, name, node, name, None, 100, 64 * MI);
        self
    }

    pub fn pdb(
        &mut self,
        ns: &str,
        name: &str,
        app: &str,
        min_available: Option<IntOrPercent>,
        max_unavailable: Option<IntOrPercent>,
    ) -> &mut Self {
        self.snap.pod_disruption_budgets.push(PodDisruptionBudget {
            namespace: ns.into(),
            name: name.into(),
            selector: LabelSelector::from_labels([("app", app)]),
            min_available,
            max_unavailable,
            ..Default::default()
        });
        self
    }

    pub fn build(&self) -> ClusterSnapshot {
        self.snap.clone()
    }
}

/// A migration from the body of `spec:`.
pub fn migration(spec_body: &str) -> Migration {
    let yaml = format!(
        "apiVersion: theseus.io/v1alpha1\nkind: Migration\nmetadata:\n  name: test\nspec:\n{spec_body}"
    );
    Migration::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// What the checker found wrong.
pub type Violations = Vec<String>;

/// An independent check of a plan against its snapshot: replays the predicted moves wave by
/// wave on a state of its own and checks, with brute-force matching, that
///
/// - every selected node is in exactly one wave per pass, control-plane nodes alone, the
///   primary last among the control-plane waves of a pass;
/// - in every wave that is not blocked, every evicted pod lands on a node that is not out,
///   Ready, schedulable, whose taints it tolerates, whose labels its nodeSelector and node
///   affinity accept, with room for it (CPU, memory, pods), without breaking required pod
///   anti-affinity (either way) or affinity;
/// - in every multi-node wave, the ready pods each PDB covers that the wave evicts are at most
///   the disruptions it allows times the wave's drain rounds (none when it allows none), and
///   the wave's drain rounds are at most the plan's `maxDrainRounds`;
/// - a blocked wave means a blocked plan.
pub fn check_plan(snap: &ClusterSnapshot, detail: &PlanDetail) -> Violations {
    let plan: &Plan = &detail.plan;
    let mut v = Vec::new();
    let mut nodes: Vec<Node> = snap.nodes.clone();
    let node_ix = |nodes: &Vec<Node>, name: &str| nodes.iter().position(|n| n.name == name);
    // Where each pod is (None: not running anywhere).
    let mut at: Vec<Option<String>> = snap
        .pods
        .iter()
        .map(|p| {
            if p.phase.is_terminal() {
                None
            } else {
                p.node_name.clone()
            }
        })
        .collect();
    let mut ready: Vec<bool> = snap.pods.iter().map(|p| p.ready).collect();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut returned: BTreeSet<String> = BTreeSet::new();
    let add_before_remove = plan.strategy == theseus_model::spec::StrategyType::AddBeforeRemove;

    // Waves by pass: a pass ends when a control-plane wave follows worker waves or a node repeats.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for w in &plan.waves {
        if w.kind == WaveKind::ControlPlane && w.nodes.len() != 1 {
            v.push(format!(
                "wave {}: control-plane wave with {} nodes",
                w.index,
                w.nodes.len()
            ));
        }
        if w.kind == WaveKind::ControlPlane {
            for n in &w.nodes {
                let is_cp = snap.node(n).is_some_and(|x| x.is_control_plane());
                if !is_cp {
                    v.push(format!(
                        "wave {}: {n} in a control-plane wave is not a control-plane node",
                        w.index
                    ));
                }
            }
        }
        if w.kind == WaveKind::Workers {
            for n in &w.nodes {
                if snap.node(n).is_some_and(|x| x.is_control_plane()) {
                    v.push(format!(
                        "wave {}: control-plane node {n} in a worker wave",
                        w.index
                    ));
                }
            }
        }
        if w.target_version.is_none() {
            for n in &w.nodes {
                if !seen.insert(n.clone()) {
                    v.push(format!("node {n} in more than one wave"));
                }
            }
        }
        if w.blocked && !plan.is_blocked() {
            v.push(format!("wave {} blocked but the plan is not", w.index));
        }
    }
    if let Some(primary) = &plan.control_plane.primary {
        let cp_waves: Vec<&theseus_model::plan::Wave> = plan
            .waves
            .iter()
            .filter(|w| w.kind == WaveKind::ControlPlane && w.target_version.is_none())
            .collect();
        if cp_waves.iter().any(|w| w.nodes.contains(primary))
            && cp_waves.last().is_some_and(|w| !w.nodes.contains(primary))
        {
            v.push(format!(
                "primary {primary} is not the last control-plane wave"
            ));
        }
    }

    for (w, tr) in plan.waves.iter().zip(&detail.trace) {
        assert_eq!(w.index, tr.index);
        let out: BTreeSet<&str> = w.nodes.iter().map(String::as_str).collect();
        for added in &tr.added_nodes {
            if node_ix(&nodes, added).is_none() {
                let orig = added.trim_end_matches("-new");
                let mut n = snap.node(orig).cloned().unwrap();
                n.name = added.clone();
                n.labels.insert(LABEL_HOSTNAME.into(), added.clone());
                n.unschedulable = false;
                n.conditions.clear();
                nodes.push(n);
            }
        }
        // Every movable pod on an out node must be moved (or the wave is blocked).
        let moved: BTreeSet<usize> = tr.moves.iter().map(|m| m.pod).collect();
        for (i, p) in snap.pods.iter().enumerate() {
            let on_out = at[i].as_deref().is_some_and(|n| out.contains(n));
            let movable = p
                .controller
                .as_ref()
                .is_some_and(|c| c.kind != WorkloadKind::DaemonSet)
                && !p.mirror
                && !p.phase.is_terminal();
            if on_out && movable && !moved.contains(&i) {
                v.push(format!(
                    "wave {}: pod {} on an out node is not moved",
                    w.index,
                    p.key()
                ));
            }
        }
        // PDB budgets for multi-node waves.
        if w.nodes.len() > 1 && w.drain_rounds > plan.selection.max_drain_rounds {
            v.push(format!(
                "wave {}: {} drain rounds, more than the plan's maximum {}",
                w.index, w.drain_rounds, plan.selection.max_drain_rounds
            ));
        }
        if w.nodes.len() > 1 {
            for pdb in &snap.pod_disruption_budgets {
                let covered: Vec<usize> = snap
                    .pods
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.namespace == pdb.namespace
                            && pdb.selector.matches(&p.labels)
                            && !p.phase.is_terminal()
                    })
                    .map(|(i, _)| i)
                    .collect();
                let healthy = covered.iter().filter(|&&i| snap.pods[i].ready).count() as i64;
                let surged = covered
                    .iter()
                    .filter(|&&i| moved.contains(&i) && single_replica_deployment(snap, i))
                    .count() as i64;
                let expected = expected_pods(snap, pdb, &covered) + surged;
                let desired = desired_healthy(pdb, expected);
                let allowed = (healthy + surged - desired).max(0);
                let evicted = covered
                    .iter()
                    .filter(|&&i| moved.contains(&i) && ready[i])
                    .count() as i64;
                let rounds = i64::from(w.drain_rounds);
                if evicted > allowed * rounds {
                    v.push(format!(
                        "wave {}: evicts {evicted} ready pods of PDB {} which allows {allowed} in each of {rounds} drain rounds",
                        w.index,
                        pdb.key()
                    ));
                }
            }
        }
        // Apply the moves, then check the destinations.
        for &i in &tr.deleted {
            at[i] = None;
        }
        for m in &tr.moves {
            at[m.pod] = m.to.clone();
            if m.to.is_none() && !w.blocked {
                v.push(format!(
                    "wave {}: pod {} has no place but the wave is not blocked",
                    w.index,
                    snap.pods[m.pod].key()
                ));
            }
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for m in &tr.moves {
            let Some(to) = &m.to else { continue };
            touched.insert(to.clone());
            let Some(ni) = node_ix(&nodes, to) else {
                v.push(format!("wave {}: unknown destination {to}", w.index));
                continue;
            };
            let node = &nodes[ni];
            let pod = &snap.pods[m.pod];
            if out.contains(to.as_str()) || gone.contains(to) {
                v.push(format!(
                    "wave {}: {} placed on out node {to}",
                    w.index,
                    pod.key()
                ));
            }
            if (!node.is_ready() && !returned.contains(to)) || node.unschedulable {
                v.push(format!(
                    "wave {}: {} placed on unusable node {to}",
                    w.index,
                    pod.key()
                ));
            }
            if !tolerates_all(&pod.tolerations, &node.taints) {
                v.push(format!(
                    "wave {}: {} placed on {to} whose taints it does not tolerate",
                    w.index,
                    pod.key()
                ));
            }
            if !pod
                .node_selector
                .iter()
                .all(|(k, val)| node.labels.get(k) == Some(val))
            {
                v.push(format!(
                    "wave {}: {} placed on {to} against its nodeSelector",
                    w.index,
                    pod.key()
                ));
            }
            if let Some(na) = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref())
                && !na.matches(&node.labels, &node.name)
            {
                v.push(format!(
                    "wave {}: {} placed on {to} against its node affinity",
                    w.index,
                    pod.key()
                ));
            }
        }
        // Resources of every node that received pods, on the state after the wave.
        for name in &touched {
            let Some(ni) = node_ix(&nodes, name) else {
                continue;
            };
            let node = &nodes[ni];
            let (mut cpu, mut mem, mut count) = (0i64, 0i64, 0i64);
            for (i, p) in snap.pods.iter().enumerate() {
                if at[i].as_deref() == Some(name.as_str()) {
                    cpu += p.requests.cpu_millis;
                    mem += p.requests.memory_bytes;
                    count += 1;
                }
            }
            if tr.added_nodes.contains(name) {
                // Its DaemonSet pods are not in the snapshot; the original's stand for them.
                let orig = name.trim_end_matches("-new");
                for p in snap
                    .pods
                    .iter()
                    .filter(|p| p.node_name.as_deref() == Some(orig) && p.is_daemonset())
                {
                    cpu += p.requests.cpu_millis;
                    mem += p.requests.memory_bytes;
                    count += 1;
                }
            }
            let a = node.allocatable;
            if cpu > a.cpu_millis || mem > a.memory_bytes || count > a.pods {
                v.push(format!(
                    "wave {}: {name} overcommitted after the wave: cpu {cpu}/{}, memory {mem}/{}, pods {count}/{}",
                    w.index, a.cpu_millis, a.memory_bytes, a.pods
                ));
            }
        }
        // Pod anti-affinity and affinity on the state after the wave (nodes out excluded).
        let live = |i: usize, at: &Vec<Option<String>>| -> Option<usize> {
            let n = at[i].as_deref()?;
            if out.contains(n) || gone.contains(n) {
                return None;
            }
            node_ix(&nodes, n)
        };
        let domain = |ni: usize, key: &str| nodes[ni].labels.get(key).cloned();
        for m in &tr.moves {
            let Some(ni) = live(m.pod, &at) else { continue };
            let pod = &snap.pods[m.pod];
            for (j, other) in snap.pods.iter().enumerate() {
                if j == m.pod {
                    continue;
                }
                let Some(nj) = live(j, &at) else { continue };
                let term_hits = |holder: &Pod, target: &Pod, t: &PodAffinityTerm| {
                    let ns_ok = if t.namespaces.is_empty() && t.namespace_selector.is_none() {
                        target.namespace == holder.namespace
                    } else {
                        t.namespaces.contains(&target.namespace) || t.namespace_selector.is_some()
                    };
                    ns_ok && t.label_selector.matches(&target.labels)
                };
                if let Some(a) = &pod.affinity {
                    for t in &a.pod_anti_affinity {
                        if term_hits(pod, other, t)
                            && let (Some(d1), Some(d2)) =
                                (domain(ni, &t.topology_key), domain(nj, &t.topology_key))
                            && d1 == d2
                        {
                            v.push(format!(
                                "wave {}: {} shares {}={d1} with {} against its anti-affinity",
                                w.index,
                                pod.key(),
                                t.topology_key,
                                other.key()
                            ));
                        }
                    }
                }
                if let Some(a) = &other.affinity {
                    for t in &a.pod_anti_affinity {
                        if term_hits(other, pod, t)
                            && let (Some(d1), Some(d2)) =
                                (domain(ni, &t.topology_key), domain(nj, &t.topology_key))
                            && d1 == d2
                        {
                            v.push(format!(
                                "wave {}: {} placed next to {} whose anti-affinity excludes it",
                                w.index,
                                pod.key(),
                                other.key()
                            ));
                        }
                    }
                }
            }
        }
        // After the wave: nodes come back (or are gone), moved pods are Ready.
        for n in &w.nodes {
            if add_before_remove {
                gone.insert(n.clone());
            } else {
                returned.insert(n.clone());
            }
        }
        for m in &tr.moves {
            if m.to.is_some() {
                ready[m.pod] = true;
            }
        }
    }
    v
}

fn single_replica_deployment(snap: &ClusterSnapshot, pod: usize) -> bool {
    let p = &snap.pods[pod];
    let Some(c) = &p.controller else { return false };
    if c.kind != WorkloadKind::Deployment {
        return false;
    }
    snap.workloads
        .iter()
        .find(|w| w.kind == c.kind && w.namespace == p.namespace && w.name == c.name)
        .is_some_and(|w| w.replicas == 1)
}

fn expected_pods(snap: &ClusterSnapshot, pdb: &PodDisruptionBudget, covered: &[usize]) -> i64 {
    let scale = pdb.max_unavailable.is_some()
        || matches!(pdb.min_available, Some(IntOrPercent::Percent(_)));
    if !scale {
        return covered.len() as i64;
    }
    let mut owners: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut naked = 0;
    for &i in covered {
        let p = &snap.pods[i];
        match &p.controller {
            Some(c) => {
                let replicas = snap
                    .workloads
                    .iter()
                    .find(|w| w.kind == c.kind && w.namespace == p.namespace && w.name == c.name)
                    .map(|w| i64::from(w.replicas))
                    .unwrap_or_else(|| {
                        covered
                            .iter()
                            .filter(|&&j| snap.pods[j].controller.as_ref() == Some(c))
                            .count() as i64
                    });
                owners.insert((c.kind.to_string(), c.name.clone()), replicas);
            }
            None => naked += 1,
        }
    }
    owners.values().sum::<i64>() + naked
}

fn desired_healthy(pdb: &PodDisruptionBudget, expected: i64) -> i64 {
    let pct = |p: u32| (i64::from(p) * expected + 99) / 100;
    match (pdb.min_available, pdb.max_unavailable) {
        (_, Some(IntOrPercent::Int(n))) => (expected - n).max(0),
        (_, Some(IntOrPercent::Percent(p))) => (expected - pct(p)).max(0),
        (Some(IntOrPercent::Int(n)), None) => n,
        (Some(IntOrPercent::Percent(p)), None) => pct(p),
        (None, None) => 0,
    }
}

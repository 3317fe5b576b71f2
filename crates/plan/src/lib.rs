//! theseus-plan: the planner. A pure function of (snapshot, migration spec): no I/O, no clock.
//!
//! [`plan`] answers a [`Plan`]: the waves in execution order (control-plane nodes one at a time,
//! the primary last; workers in waves as large as PDBs, capacity and the cap allow), every
//! preflight finding with a stable code, and duration estimates with a lower bound.
//! [`plan_detailed`] also returns the predicted pod moves of every wave, which tests and the
//! simulator comparison use to check the plan independently. [`render_text`] prints a plan the
//! way `kubeadm upgrade plan` does. [`synthetic`] generates large clusters for benchmarks and
//! property tests.
//!
//! How it works, in order:
//! 1. [`index`]: indices over the snapshot (pods by node, an inverted label index, workloads,
//!    PDBs with their pods and disruption arithmetic).
//! 2. [`select`]: the selected nodes; the primary control-plane node (Kubean inventory, else
//!    the node the endpoint names, else the first by name).
//! 3. [`findings`], [`skew`], [`controlplane`]: static findings.
//! 4. [`waves`] over [`placement`]: the waves, predicted on an evolving placement of the pods.
//! 5. [`estimate`]: durations and the lower bound.

pub mod controlplane;
pub mod estimate;
pub mod findings;
pub mod index;
pub mod placement;
pub mod render;
pub mod select;
pub mod skew;
pub mod synthetic;
pub mod util;
pub mod waves;

use std::collections::BTreeMap;

use theseus_model::plan::{
    ClusterSummary, ComponentChange, Estimate, FindingCode, ObjectRef, PLAN_KIND, Plan, Selection,
    Severity, UpgradeHop, Wave, WaveKind,
};
use theseus_model::selector::LabelSelector;
use theseus_model::snapshot::{
    COMPONENT_APISERVER, COMPONENT_CONTROLLER_MANAGER, COMPONENT_ETCD, COMPONENT_SCHEDULER,
    ClusterSnapshot, Node,
};
use theseus_model::spec::{Migration, OperationKind, StrategyType};
use theseus_model::{API_VERSION, KubeVersion};

use crate::estimate::{CORDON_SECONDS, Timing, grace_of, startup_of, wave_time};
use crate::findings::Findings;
use crate::index::{Index, PodKind};
use crate::select::Selected;
use crate::util::{FxHashSet, NONE, list_names, natural_cmp, plural};
use crate::waves::{BuiltWave, WaveBuilder, WaveOptions};

pub use render::render_text;

/// The predicted pod moves of one wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveTrace {
    /// 1-based wave index (as in the plan).
    pub index: u32,
    /// Nodes taken out.
    pub nodes: Vec<String>,
    /// Nodes added before the wave (add-before-remove), named `<old>-new`, with the labels,
    /// taints and allocatable of the node they replace.
    pub added_nodes: Vec<String>,
    /// Evicted pods and where they are predicted to run afterwards.
    pub moves: Vec<PodMove>,
    /// Unmanaged pods deleted (index into `snapshot.pods`).
    pub deleted: Vec<usize>,
}

/// One evicted pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMove {
    /// Index into `snapshot.pods`. The replacement pod is modelled as the same pod on another
    /// node (same requests, labels and constraints).
    pub pod: usize,
    /// Node it was on when the wave started.
    pub from: String,
    /// Node it runs on after the wave; `None` if it fits nowhere (blocked wave).
    pub to: Option<String>,
}

/// A plan and the predicted pod moves behind it.
#[derive(Debug, Clone)]
pub struct PlanDetail {
    pub plan: Plan,
    pub trace: Vec<WaveTrace>,
}

/// Plans `migration` on the cluster of `snapshot`.
pub fn plan(snapshot: &ClusterSnapshot, migration: &Migration) -> Plan {
    plan_detailed(snapshot, migration).plan
}

fn zone_of(node: &Node) -> String {
    node.zone
        .clone()
        .or_else(|| Node::zone_from_labels(&node.labels))
        .unwrap_or_default()
}

/// Worker order: nodes by name within each zone, zones interleaved (so that waves spread over
/// zones), or one zone after another.
fn worker_groups(snap: &ClusterSnapshot, nodes: &[u32], zone_by_zone: bool) -> Vec<Vec<u32>> {
    let mut by_zone: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for &n in nodes {
        by_zone
            .entry(zone_of(&snap.nodes[n as usize]))
            .or_default()
            .push(n);
    }
    if zone_by_zone {
        return by_zone.into_values().collect();
    }
    let groups: Vec<Vec<u32>> = by_zone.into_values().collect();
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(nodes.len());
    for i in 0..longest {
        for g in &groups {
            if let Some(&n) = g.get(i) {
                order.push(n);
            }
        }
    }
    vec![order]
}

fn run_workers(
    builder: &mut WaveBuilder<'_>,
    snap: &ClusterSnapshot,
    nodes: &[u32],
    zone_by_zone: bool,
    target: Option<String>,
) -> Vec<BuiltWave> {
    let mut out = Vec::new();
    for group in worker_groups(snap, nodes, zone_by_zone) {
        out.extend(builder.worker_waves(&group, target.clone()));
    }
    out
}

/// "4 x v1.11.1" style counts.
fn counts<I: IntoIterator<Item = String>>(values: I) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for v in values {
        *m.entry(v).or_insert(0) += 1;
        total += 1;
    }
    if total == 0 {
        return "unknown".to_string();
    }
    m.into_iter()
        .map(|(v, c)| {
            if c == 1 && total == 1 {
                v
            } else {
                format!("{c} x {v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The version a control-plane node runs: its kube-apiserver static pod, else its kubelet.
fn cp_node_version(snap: &ClusterSnapshot, node: &Node) -> Option<KubeVersion> {
    snap.control_plane
        .components
        .iter()
        .find(|c| c.component == COMPONENT_APISERVER && c.node == node.name)
        .and_then(|c| c.version.clone())
        .or_else(|| node.kubelet_version.clone())
}

fn below(v: Option<&KubeVersion>, hop: &KubeVersion) -> bool {
    match v {
        None => true,
        Some(v) => {
            let minors = v.minors_to(hop);
            minors > 0 || (minors == 0 && hop.patch.is_some_and(|p| Some(p) > v.patch))
        }
    }
}

struct Phases {
    built: Vec<BuiltWave>,
    hops: Vec<UpgradeHop>,
    worker_passes: u32,
}

/// Plans and returns the predicted pod moves as well.
pub fn plan_detailed(snapshot: &ClusterSnapshot, migration: &Migration) -> PlanDetail {
    let snap = snapshot;
    let spec = &migration.spec;
    let pod_selector = spec
        .drain
        .pod_selector
        .as_deref()
        .and_then(|s| LabelSelector::parse(s).ok());
    let idx = Index::new(snap, pod_selector.as_ref());
    let sel = select::select(&idx, migration);
    let mut f = Findings::default();
    let op = spec.operation.kind();
    let strategy = if op == Some(OperationKind::ControlPlaneRelocation) {
        StrategyType::AddBeforeRemove
    } else {
        spec.strategy.kind
    };

    selection_findings(&idx, migration, &sel, &mut f);

    let max_wave = spec.strategy.max_wave_size(sel.workers.len());
    let timing = Timing::from_spec(migration);
    let max_rounds = estimate::max_drain_rounds(snap, &idx, &sel.workers, &timing);
    let mut builder = WaveBuilder::new(
        &idx,
        WaveOptions {
            add_before_remove: strategy == StrategyType::AddBeforeRemove,
            surge_single_replica: spec.surge.single_replica_deployments,
            protect_unbudgeted: spec.strategy.protect_unbudgeted,
            max_wave_size: max_wave,
            max_rounds,
        },
    );
    findings::pod_findings(
        &idx,
        migration,
        &sel,
        &mut builder.pl,
        &builder.pod_surge,
        &mut f,
    );

    let api_versions = snap.apiserver_versions();
    skew_findings(&idx, &api_versions, &mut f);

    let phases = build_phases(&idx, migration, &sel, &api_versions, &mut builder, &mut f);

    // Waves in the plan's schema.
    let primary = sel.primary.as_ref().map(|(p, _)| p.as_str());
    let mut waves = Vec::with_capacity(phases.built.len());
    let mut trace = Vec::with_capacity(phases.built.len());
    let mut drain_over: Vec<u32> = Vec::new();
    for (i, w) in phases.built.iter().enumerate() {
        let index = i as u32 + 1;
        let names: Vec<String> = w
            .nodes
            .iter()
            .map(|&n| builder.pl.node_name(n).to_string())
            .collect();
        let mut zones: Vec<String> = w
            .nodes
            .iter()
            .filter_map(|&n| builder.pl.node(n).map(zone_of))
            .filter(|z| !z.is_empty())
            .collect();
        zones.sort();
        zones.dedup();
        let action = match w.kind {
            WaveKind::ControlPlane => timing.control_plane_action,
            WaveKind::Workers => timing.worker_action,
        };
        let t = wave_time(snap, w, &builder.pod_surge, action, &timing);
        if t.drain > timing.drain_timeout {
            drain_over.push(index);
        }
        if let Some(block) = &w.block {
            findings::blocked_wave(&idx, &mut f, index, &names, w.moves.len(), block);
        }
        waves.push(Wave {
            index,
            kind: w.kind,
            target_version: w.target_version.clone(),
            primary: primary.is_some_and(|p| names.iter().any(|n| n == p)),
            nodes: names.clone(),
            zones,
            evicted_pods: w.moves.len() as u32,
            surge_pods: w.surge_pods,
            deleted_pods: w.deleted.len() as u32,
            drain_rounds: w.rounds,
            estimated_seconds: t.total,
            blocked: w.block.is_some(),
        });
        trace.push(WaveTrace {
            index,
            nodes: names,
            added_nodes: w
                .added
                .iter()
                .map(|&n| builder.pl.node_name(n).to_string())
                .collect(),
            moves: w
                .moves
                .iter()
                .map(|&(p, from, to)| PodMove {
                    pod: p as usize,
                    from: builder.pl.node_name(from).to_string(),
                    to: (to != NONE).then(|| builder.pl.node_name(to).to_string()),
                })
                .collect(),
            deleted: w.deleted.iter().map(|&(p, _)| p as usize).collect(),
        });
    }
    if !drain_over.is_empty() {
        f.add(
            Severity::Warning,
            FindingCode::DrainTimeoutTooShort,
            format!(
                "the drain of {} is expected to take longer than drain.timeout ({}s): grace periods and start-up times of the evicted pods add up",
                list_names(&drain_over.iter().map(|w| format!("wave {w}")).collect::<Vec<_>>(), 5),
                timing.drain_timeout
            ),
            Vec::new(),
            "raise drain.timeout, or lower the pods' terminationGracePeriodSeconds",
        );
    }

    let control_plane = controlplane::control_plane(
        &idx,
        &sel,
        &waves,
        op == Some(OperationKind::Upgrade),
        &mut f,
    );
    let estimate = estimate_totals(
        &idx,
        migration,
        &sel,
        &waves,
        &builder,
        &timing,
        phases.worker_passes,
        max_wave,
        &mut f,
    );
    let components = components(&idx, migration, &sel, &api_versions, &phases.hops);

    // Errors first, then warnings, then info; emission order within a severity.
    let mut list = f.list;
    list.sort_by_key(|x| x.severity);
    let plan = Plan {
        api_version: API_VERSION.to_string(),
        kind: PLAN_KIND.to_string(),
        migration: migration.metadata.name.clone(),
        operation: op,
        strategy,
        cluster: ClusterSummary {
            kubernetes_version: api_versions.first().map(ToString::to_string),
            nodes: snap.nodes.len() as u32,
            control_plane_nodes: sel.all_control_plane.len() as u32,
            pods: snap.pods.len() as u32,
            pod_disruption_budgets: snap.pod_disruption_budgets.len() as u32,
        },
        selection: Selection {
            nodes: (sel.control_plane.len() + sel.workers.len()) as u32,
            control_plane: sel.control_plane.len() as u32,
            workers: sel.workers.len() as u32,
            skipped: sel
                .skipped
                .iter()
                .map(|&n| snap.nodes[n as usize].name.clone())
                .collect(),
            max_wave_size: max_wave as u32,
            max_drain_rounds: max_rounds,
        },
        components,
        upgrade_path: phases.hops,
        control_plane,
        waves,
        findings: list,
        estimate,
    };
    PlanDetail { plan, trace }
}

fn selection_findings(idx: &Index<'_>, mig: &Migration, sel: &Selected, f: &mut Findings) {
    let snap = idx.snap;
    let spec = &mig.spec;
    if spec.operation.kind().is_none() {
        f.add(
            Severity::Error,
            FindingCode::InvalidSpec,
            "the migration has no operation (or more than one): nothing can be planned",
            Vec::new(),
            "set exactly one of spec.operation.osMigration, upgrade, maintenance, controlPlaneRelocation",
        );
    }
    if !sel.unknown_names.is_empty() {
        f.add(
            Severity::Error,
            FindingCode::UnknownNode,
            format!(
                "the spec names {} the cluster does not have: {}",
                plural(sel.unknown_names.len(), "node"),
                list_names(&sel.unknown_names, 10)
            ),
            sel.unknown_names
                .iter()
                .map(|n| ObjectRef::node(n))
                .collect(),
            "check spec.nodes.names against `kubectl get nodes`",
        );
    }
    if sel.control_plane.is_empty() && sel.workers.is_empty() && sel.skipped.is_empty() {
        f.add(
            Severity::Error,
            FindingCode::EmptySelection,
            "spec.nodes selects no node of this cluster",
            Vec::new(),
            "check spec.nodes (selector, names, roles, exclude) against `kubectl get nodes --show-labels`",
        );
    }
    if !sel.skipped.is_empty() {
        let names: Vec<String> = sel
            .skipped
            .iter()
            .map(|&n| snap.nodes[n as usize].name.clone())
            .collect();
        f.add(
            Severity::Info,
            FindingCode::NodesAlreadyAtTarget,
            format!(
                "{} already at the target and skipped: {}",
                plural(names.len(), "node is").replace("nodes is", "nodes are"),
                list_names(&names, 10)
            ),
            names.iter().map(|n| ObjectRef::node(n)).collect(),
            "",
        );
    }
    let not_ready: Vec<String> = sel
        .all()
        .filter(|&n| !snap.nodes[n as usize].is_ready())
        .map(|n| snap.nodes[n as usize].name.clone())
        .collect();
    if !not_ready.is_empty() {
        f.add(
            Severity::Warning,
            FindingCode::NodeNotReady,
            format!(
                "{} not Ready: {} (their pods may already be gone, and they count as out from the start)",
                plural(not_ready.len(), "selected node is").replace("nodes is", "nodes are"),
                list_names(&not_ready, 10)
            ),
            not_ready.iter().map(|n| ObjectRef::node(n)).collect(),
            "find out why before migrating; the migration reinstalls them like the others",
        );
    }
    let cordoned: Vec<String> = sel
        .all()
        .filter(|&n| snap.nodes[n as usize].unschedulable)
        .map(|n| snap.nodes[n as usize].name.clone())
        .collect();
    if !cordoned.is_empty() {
        f.add(
            Severity::Info,
            FindingCode::NodeCordoned,
            format!(
                "{} cordoned already: {} (they stay cordoned after their wave)",
                plural(cordoned.len(), "selected node is").replace("nodes is", "nodes are"),
                list_names(&cordoned, 10)
            ),
            cordoned.iter().map(|n| ObjectRef::node(n)).collect(),
            "",
        );
    }
    if let Some(r) = &spec.operation.control_plane_relocation {
        let not_cp: Vec<&str> = r
            .moves
            .iter()
            .filter(|m| {
                idx.node_id
                    .get(m.from.as_str())
                    .is_some_and(|&n| !idx.is_cp[n as usize])
            })
            .map(|m| m.from.as_str())
            .collect();
        if !not_cp.is_empty() {
            f.add(
                Severity::Error,
                FindingCode::ControlPlaneRelocation,
                format!("not control-plane nodes: {}", not_cp.join(", ")),
                not_cp.iter().map(|n| ObjectRef::node(n)).collect(),
                "controlPlaneRelocation moves control-plane nodes only",
            );
        }
        let moves: Vec<String> = r
            .moves
            .iter()
            .map(|m| format!("{} → {}", m.from, m.to))
            .collect();
        f.add(
            Severity::Info,
            FindingCode::ControlPlaneRelocation,
            format!(
                "control-plane hosts move one at a time, the new host joining before the old one leaves (etcd: learner added, promoted, old member removed): {}",
                moves.join(", ")
            ),
            Vec::new(),
            "",
        );
    }
}

fn skew_findings(idx: &Index<'_>, api: &[KubeVersion], f: &mut Findings) {
    let snap = idx.snap;
    let (Some(oldest), Some(newest)) = (api.first(), api.last()) else {
        return;
    };
    if oldest.minors_to(newest) > 1 {
        f.add(
            Severity::Error,
            FindingCode::ApiServerSkew,
            format!(
                "the API servers run {} and {}: HA kube-apiserver instances must be within one minor version",
                oldest, newest
            ),
            Vec::new(),
            "finish the interrupted control-plane upgrade first",
        );
    }
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &snap.nodes {
        if let Some(k) = &node.kubelet_version
            && let Some(p) = skew::kubelet_problem(k, oldest)
        {
            problems.entry(p).or_default().push(node.name.clone());
        }
    }
    for (problem, nodes) in problems {
        f.add(
            Severity::Error,
            FindingCode::KubeletSkew,
            format!("{problem} on {}: outside the version skew policy", list_names(&nodes, 8)),
            nodes.iter().map(|n| ObjectRef::node(n)).collect(),
            "kubelets must not be newer than the API server, nor more than three minors older (two before 1.25)",
        );
    }
}

fn build_phases(
    idx: &Index<'_>,
    mig: &Migration,
    sel: &Selected,
    api: &[KubeVersion],
    builder: &mut WaveBuilder<'_>,
    f: &mut Findings,
) -> Phases {
    let snap = idx.snap;
    let spec = &mig.spec;
    let zone_by_zone = spec.strategy.zone_by_zone;
    let mut built = Vec::new();
    let mut hops_out = Vec::new();
    let mut worker_passes = 0;
    match spec.operation.kind() {
        None => {}
        Some(OperationKind::OsMigration | OperationKind::Maintenance) => {
            if !sel.workers.is_empty() {
                worker_passes = 1;
            }
            built.extend(run_workers(builder, snap, &sel.workers, zone_by_zone, None));
            built.extend(builder.single_node_waves(
                &sel.control_plane,
                WaveKind::ControlPlane,
                None,
            ));
        }
        Some(OperationKind::ControlPlaneRelocation) => {
            built.extend(builder.single_node_waves(
                &sel.control_plane,
                WaveKind::ControlPlane,
                None,
            ));
        }
        Some(OperationKind::Upgrade) => {
            let Some(up) = spec.operation.upgrade.as_ref() else {
                return Phases {
                    built,
                    hops: hops_out,
                    worker_passes,
                };
            };
            let current = api
                .first()
                .cloned()
                .or_else(|| {
                    snap.control_plane
                        .kubeadm
                        .as_ref()
                        .and_then(|k| k.kubernetes_version.clone())
                })
                .or_else(|| {
                    snap.nodes
                        .iter()
                        .filter_map(|n| n.kubelet_version.clone())
                        .max()
                });
            let Some(current) = current else {
                f.add(
                    Severity::Error,
                    FindingCode::UpgradePath,
                    "the snapshot does not say which Kubernetes version the cluster runs",
                    Vec::new(),
                    "capture the snapshot again: it needs the API server's /version or the control-plane static pods",
                );
                return Phases {
                    built,
                    hops: hops_out,
                    worker_passes,
                };
            };
            let oldest_kubelet = snap
                .nodes
                .iter()
                .filter(|n| {
                    !idx.node_id
                        .get(n.name.as_str())
                        .is_some_and(|&i| idx.is_cp[i as usize])
                })
                .filter_map(|n| n.kubelet_version.clone())
                .min();
            let hops = match skew::upgrade_hops(
                &current,
                &up.target_version,
                &up.path,
                oldest_kubelet.as_ref(),
            ) {
                Ok(h) => h,
                Err(msg) => {
                    f.add(
                        Severity::Error,
                        FindingCode::DowngradeNotSupported,
                        msg,
                        Vec::new(),
                        "choose a target version newer than the cluster's",
                    );
                    return Phases {
                        built,
                        hops: hops_out,
                        worker_passes,
                    };
                }
            };
            if hops.is_empty() {
                f.add(
                    Severity::Info,
                    FindingCode::NodesAlreadyAtTarget,
                    format!("the cluster already runs {current}: nothing to upgrade"),
                    Vec::new(),
                    "",
                );
                return Phases {
                    built,
                    hops: hops_out,
                    worker_passes,
                };
            }
            let missing_cp: Vec<String> = sel
                .all_control_plane
                .iter()
                .filter(|n| !sel.control_plane.contains(n))
                .map(|&n| snap.nodes[n as usize].name.clone())
                .collect();
            if !missing_cp.is_empty() {
                f.add(
                    Severity::Error,
                    FindingCode::ApiServerSkew,
                    format!(
                        "control-plane {} not selected: {}; its API server would fall more than one minor behind the others",
                        plural(missing_cp.len(), "node is").replace("nodes is", "nodes are"),
                        missing_cp.join(", ")
                    ),
                    missing_cp.iter().map(|n| ObjectRef::node(n)).collect(),
                    "an upgrade must include every control-plane node",
                );
            }
            let cp_names: Vec<String> = sel
                .control_plane
                .iter()
                .map(|&n| snap.nodes[n as usize].name.clone())
                .collect();
            let mut from = current.to_string();
            let mut kubelet_label = oldest_kubelet
                .as_ref()
                .map_or_else(|| current.to_string(), ToString::to_string);
            for (i, hop) in hops.iter().enumerate() {
                let cp_nodes: Vec<u32> = sel
                    .control_plane
                    .iter()
                    .copied()
                    .filter(|&n| {
                        below(
                            cp_node_version(snap, &snap.nodes[n as usize]).as_ref(),
                            &hop.version,
                        )
                    })
                    .collect();
                let cp_waves = builder.single_node_waves(
                    &cp_nodes,
                    WaveKind::ControlPlane,
                    Some(hop.label.clone()),
                );
                built.extend(cp_waves);
                let mut worker_wave_count = 0;
                if hop.workers {
                    let workers: Vec<u32> = sel
                        .workers
                        .iter()
                        .copied()
                        .filter(|&n| {
                            below(
                                snap.nodes[n as usize].kubelet_version.as_ref(),
                                &hop.version,
                            )
                        })
                        .collect();
                    if !workers.is_empty() {
                        worker_passes += 1;
                    }
                    let w = run_workers(
                        builder,
                        snap,
                        &workers,
                        zone_by_zone,
                        Some(hop.label.clone()),
                    );
                    worker_wave_count = w.len();
                    built.extend(w);
                }
                let mut steps = Vec::new();
                if snap.control_plane.kubeadm.is_some() {
                    steps.push(format!(
                        "install kubeadm {} on every control-plane node",
                        hop.label
                    ));
                }
                match cp_names.split_first() {
                    Some((first, rest)) if !rest.is_empty() => steps.push(format!(
                        "`kubeadm upgrade apply {}` on {first}, then `kubeadm upgrade node` on {} (one node per wave, the primary last)",
                        hop.label,
                        rest.join(", ")
                    )),
                    Some((first, _)) => steps.push(format!("`kubeadm upgrade apply {}` on {first}", hop.label)),
                    None => {}
                }
                if !cp_names.is_empty() {
                    steps.push(format!(
                        "on each control-plane node: drain, kubelet and kubectl {}, restart kubelet, uncordon",
                        hop.label
                    ));
                }
                if hop.workers {
                    steps.push(format!(
                        "workers: drain, `kubeadm upgrade node`, kubelet {}, restart kubelet, uncordon ({})",
                        hop.label,
                        plural(worker_wave_count, "wave")
                    ));
                    kubelet_label = hop.label.clone();
                } else {
                    steps.push(format!(
                        "workers stay at kubelet {kubelet_label} (the skew policy lets kubelets trail the API server)"
                    ));
                }
                hops_out.push(UpgradeHop {
                    hop: i as u32 + 1,
                    from: from.clone(),
                    to: hop.label.clone(),
                    workers: hop.workers,
                    steps,
                });
                from = hop.label.clone();
            }
            let labels: Vec<&str> = hops.iter().map(|h| h.label.as_str()).collect();
            let worker_hops: Vec<&str> = hops
                .iter()
                .filter(|h| h.workers)
                .map(|h| h.label.as_str())
                .collect();
            f.add(
                Severity::Info,
                FindingCode::UpgradePath,
                format!(
                    "{current} → {}: {} ({}), the control plane one minor at a time; worker kubelets move at {}",
                    up.target_version,
                    plural(hops.len(), "hop"),
                    labels.join(" → "),
                    worker_hops.join(" and ")
                ),
                Vec::new(),
                "",
            );
            // Nodes left out of the upgrade must stay within the skew of the target.
            let upgraded: FxHashSet<u32> = sel.all().collect();
            let mut left: Vec<String> = Vec::new();
            for (i, node) in snap.nodes.iter().enumerate() {
                if upgraded.contains(&(i as u32)) {
                    continue;
                }
                if let Some(k) = &node.kubelet_version
                    && skew::kubelet_problem(k, &up.target_version).is_some()
                {
                    left.push(node.name.clone());
                }
            }
            if !left.is_empty() {
                f.add(
                    Severity::Error,
                    FindingCode::KubeletSkew,
                    format!(
                        "after the upgrade to {}, the kubelets of {} (not selected) would be outside the version skew policy",
                        up.target_version,
                        list_names(&left, 8)
                    ),
                    left.iter().map(|n| ObjectRef::node(n)).collect(),
                    "select these nodes too, or upgrade them first",
                );
            }
        }
    }
    Phases {
        built,
        hops: hops_out,
        worker_passes,
    }
}

#[allow(clippy::too_many_arguments)]
fn estimate_totals(
    idx: &Index<'_>,
    mig: &Migration,
    sel: &Selected,
    waves: &[Wave],
    builder: &WaveBuilder<'_>,
    timing: &Timing,
    worker_passes: u32,
    max_wave: usize,
    f: &mut Findings,
) -> Estimate {
    let snap = idx.snap;
    let total: u64 = waves
        .iter()
        .fold(0u64, |a, w| a.saturating_add(w.estimated_seconds));
    let cp_time: u64 = waves
        .iter()
        .filter(|w| w.kind == WaveKind::ControlPlane)
        .fold(0u64, |a, w| a.saturating_add(w.estimated_seconds));
    let workers = &sel.workers;
    let mut min_waves = 0u64;
    let mut bound = "none";
    // Longest chain of one PDB's drain rounds (seconds of start-up one after another).
    let mut pdb_chain = 0u64;
    if !workers.is_empty() {
        let by_cap = (workers.len() as u64).div_ceil(max_wave.max(1) as u64);
        min_waves = by_cap;
        bound = "cap";
        let on_workers: FxHashSet<u32> = workers.iter().copied().collect();
        // PDBs do not bound the number of waves: a wave may drain a PDB's pods in rounds (see
        // `waves`). They bound time: the rounds of one PDB run one after another, each waiting
        // for the previous round's replacements to start.
        for info in &idx.pdbs {
            let surge = info
                .pods
                .iter()
                .filter(|&&p| builder.pod_surge[p as usize])
                .count() as i64;
            let allowed = info.allowed_with(surge);
            if allowed < 1 {
                continue;
            }
            let ready_on: Vec<u32> = info
                .pods
                .iter()
                .copied()
                .filter(|&p| {
                    snap.pods[p as usize].ready && on_workers.contains(&idx.pod_node[p as usize])
                })
                .collect();
            let rounds = (ready_on.len() as i64).div_euclid(allowed)
                + i64::from(ready_on.len() as i64 % allowed != 0);
            let startup = ready_on
                .iter()
                .map(|&p| startup_of(snap, p))
                .min()
                .unwrap_or(0);
            let chain = u64::try_from(rounds - 1)
                .unwrap_or(0)
                .saturating_mul(startup);
            if chain > pdb_chain {
                pdb_chain = chain;
            }
        }
        if mig.spec.strategy.kind == StrategyType::RemoveBeforeAdd
            && mig.spec.operation.kind() != Some(OperationKind::ControlPlaneRelocation)
        {
            // Each wave's nodes weigh (free + movable requests) ≤ the cluster's total free room.
            let mut free = [0i64; 3];
            let mut weight = [0i64; 3];
            for (n, node) in snap.nodes.iter().enumerate() {
                let mut used = [0i64; 3];
                let mut movable = [0i64; 3];
                for &p in &idx.pods_by_node[n] {
                    if idx.pod_kind[p as usize] == PodKind::Terminal {
                        continue;
                    }
                    let r = snap.pods[p as usize].requests;
                    let v = [r.cpu_millis, r.memory_bytes, 1];
                    for k in 0..3 {
                        used[k] = used[k].saturating_add(v[k]);
                        if idx.pod_kind[p as usize] == PodKind::Movable {
                            movable[k] = movable[k].saturating_add(v[k]);
                        }
                    }
                }
                let alloc = [
                    node.allocatable.cpu_millis,
                    node.allocatable.memory_bytes,
                    node.allocatable.pods,
                ];
                let usable = node.is_ready() && !node.unschedulable;
                for k in 0..3 {
                    let fr = alloc[k].saturating_sub(used[k]).max(0);
                    if usable {
                        free[k] = free[k].saturating_add(fr);
                    }
                    if on_workers.contains(&(n as u32)) {
                        weight[k] = weight[k]
                            .saturating_add(movable[k].saturating_add(if usable { fr } else { 0 }));
                    }
                }
            }
            for k in 0..3 {
                if free[k] > 0 && weight[k] > 0 {
                    let need = (weight[k] / free[k] + i64::from(weight[k] % free[k] != 0)) as u64;
                    if need > min_waves {
                        min_waves = need;
                        bound = "capacity";
                    }
                }
            }
        }
    }
    // The shortest a worker wave can be under any ordering.
    let mut min_drain = 0;
    let every_worker_drains = workers.iter().all(|&n| {
        idx.pods_by_node[n as usize]
            .iter()
            .any(|&p| idx.pod_kind[p as usize] == PodKind::Movable)
    });
    if every_worker_drains && !workers.is_empty() {
        let pods = workers
            .iter()
            .flat_map(|&n| idx.pods_by_node[n as usize].iter().copied())
            .filter(|&p| idx.pod_kind[p as usize] == PodKind::Movable);
        let (mut g, mut s) = (u64::MAX, u64::MAX);
        for p in pods {
            g = g.min(grace_of(snap, p, timing));
            s = s.min(startup_of(snap, p));
        }
        if g != u64::MAX {
            min_drain = g.saturating_add(s);
        }
    }
    let per_wave = CORDON_SECONDS
        .saturating_add(timing.worker_action)
        .saturating_add(timing.soak)
        .saturating_add(min_drain);
    let by_waves = u64::from(worker_passes)
        .saturating_mul(min_waves)
        .saturating_mul(per_wave);
    let by_chain = if workers.is_empty() {
        0
    } else {
        per_wave.saturating_add(pdb_chain)
    };
    if by_chain > by_waves {
        bound = "pdb";
    }
    let lower = cp_time.saturating_add(by_waves.max(by_chain)).min(total);

    let mut windows = None;
    if let Some(w) = &mig.spec.maintenance_window {
        let len = w.length_seconds();
        if len > 0 {
            let too_long: Vec<u32> = waves
                .iter()
                .filter(|x| x.estimated_seconds > len)
                .map(|x| x.index)
                .collect();
            if !too_long.is_empty() {
                f.add(
                    Severity::Warning,
                    FindingCode::MaintenanceWindowTooShort,
                    format!(
                        "{} take longer than the maintenance window ({}–{}, {}s)",
                        list_names(
                            &too_long
                                .iter()
                                .map(|i| format!("wave {i}"))
                                .collect::<Vec<_>>(),
                            5
                        ),
                        w.start,
                        w.end,
                        len
                    ),
                    Vec::new(),
                    "widen the window, or lower maxUnavailable so that waves are shorter",
                );
            }
            let (mut count, mut used) = (1u32, 0u64);
            for x in waves {
                if used > 0 && used + x.estimated_seconds > len {
                    count += 1;
                    used = 0;
                }
                used += x.estimated_seconds;
            }
            windows = Some(if waves.is_empty() { 0 } else { count });
        }
    }
    Estimate {
        total_seconds: total,
        lower_bound_seconds: lower,
        min_worker_waves: u32::try_from(min_waves * u64::from(worker_passes.max(1)))
            .unwrap_or(u32::MAX),
        min_worker_waves_bound: bound.to_string(),
        maintenance_windows: windows,
    }
}

fn components(
    idx: &Index<'_>,
    mig: &Migration,
    sel: &Selected,
    api: &[KubeVersion],
    hops: &[UpgradeHop],
) -> Vec<ComponentChange> {
    let snap = idx.snap;
    let spec = &mig.spec;
    let planned: Vec<&Node> = sel
        .all()
        .chain(sel.skipped.iter().copied())
        .map(|n| &snap.nodes[n as usize])
        .collect();
    let mut out = Vec::new();
    match spec.operation.kind() {
        Some(OperationKind::OsMigration) => {
            if let Some(os) = &spec.operation.os_migration {
                out.push(ComponentChange {
                    component: "OS image".into(),
                    current: counts(planned.iter().map(|n| n.os_image.clone())),
                    target: os.target_os_image.clone(),
                });
                if let Some(k) = &os.target_kernel_version {
                    out.push(ComponentChange {
                        component: "Kernel".into(),
                        current: counts(planned.iter().map(|n| n.kernel_version.clone())),
                        target: k.clone(),
                    });
                }
            }
        }
        Some(OperationKind::Upgrade) => {
            let target = hops.last().map_or_else(
                || {
                    spec.operation
                        .upgrade
                        .as_ref()
                        .map_or_else(String::new, |u| u.target_version.to_string())
                },
                |h| h.to.clone(),
            );
            let comp = |name: &str| -> Option<String> {
                let v: Vec<String> = snap
                    .control_plane
                    .components
                    .iter()
                    .filter(|c| c.component == name)
                    .filter_map(|c| c.version.as_ref().map(ToString::to_string))
                    .collect();
                (!v.is_empty()).then(|| counts(v))
            };
            let cluster = api
                .first()
                .map_or_else(|| "unknown".to_string(), ToString::to_string);
            for (label, name) in [
                ("API Server", COMPONENT_APISERVER),
                ("Controller Manager", COMPONENT_CONTROLLER_MANAGER),
                ("Scheduler", COMPONENT_SCHEDULER),
            ] {
                out.push(ComponentChange {
                    component: label.into(),
                    current: comp(name).unwrap_or_else(|| cluster.clone()),
                    target: target.clone(),
                });
            }
            let mut kubelets: Vec<&Node> = snap.nodes.iter().collect();
            kubelets.sort_by(|a, b| natural_cmp(&a.name, &b.name));
            out.push(ComponentChange {
                component: "Kubelet".into(),
                current: counts(kubelets.iter().map(|n| {
                    n.kubelet_version
                        .as_ref()
                        .map_or_else(|| "unknown".into(), ToString::to_string)
                })),
                target,
            });
            let etcd =
                comp(COMPONENT_ETCD).or_else(|| snap.etcd.as_ref().and_then(|e| e.version.clone()));
            if let Some(e) = etcd {
                out.push(ComponentChange {
                    component: "Etcd".into(),
                    current: e,
                    target: "as kubeadm ships it".into(),
                });
            }
        }
        Some(OperationKind::Maintenance) => {
            if let Some(m) = &spec.operation.maintenance {
                out.push(ComponentChange {
                    component: "Node action".into(),
                    current: plural(sel.control_plane.len() + sel.workers.len(), "node"),
                    target: m.action.clone(),
                });
            }
        }
        Some(OperationKind::ControlPlaneRelocation) => {
            if let Some(r) = &spec.operation.control_plane_relocation {
                for m in &r.moves {
                    out.push(ComponentChange {
                        component: "Control-plane host".into(),
                        current: m.from.clone(),
                        target: m
                            .address
                            .as_ref()
                            .map_or_else(|| m.to.clone(), |a| format!("{} ({a})", m.to)),
                    });
                }
            }
        }
        None => {}
    }
    out
}

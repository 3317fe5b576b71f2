//! Preflight findings about pods, workloads and PDBs on the selected nodes.

use std::collections::BTreeMap;

use theseus_model::plan::{Finding, FindingCode, ObjectRef, Severity};
use theseus_model::snapshot::{LABEL_HOSTNAME, WorkloadKind};
use theseus_model::spec::Migration;
use theseus_model::{IntOrPercent, quantity};

use crate::index::{Index, PdbInfo, PodKind};
use crate::placement::{Diagnosis, Placement};
use crate::select::Selected;
use crate::util::{FxHashMap, FxHashSet, NONE, list_names, plural};
use crate::waves::{Block, BudgetRef};

/// Findings being collected.
#[derive(Debug, Default)]
pub struct Findings {
    pub list: Vec<Finding>,
    /// Finding index per PDB (never / below minimum), to link blocked waves.
    pub by_pdb: FxHashMap<u32, usize>,
    /// Finding index per workload for anti-affinity, to link blocked waves.
    pub by_anti_workload: FxHashMap<u32, usize>,
}

impl Findings {
    pub fn add(
        &mut self,
        severity: Severity,
        code: FindingCode,
        message: impl Into<String>,
        objects: Vec<ObjectRef>,
        hint: impl Into<String>,
    ) -> usize {
        let hint: String = hint.into();
        self.list.push(Finding {
            severity,
            code,
            message: message.into(),
            objects,
            hint: (!hint.is_empty()).then_some(hint),
            wave: None,
        });
        self.list.len() - 1
    }

    /// Sets the wave of finding `i` if it has none yet.
    pub fn link_wave(&mut self, i: usize, wave: u32) {
        if let Some(f) = self.list.get_mut(i)
            && f.wave.is_none()
        {
            f.wave = Some(wave);
        }
    }
}

/// One finding per entry when there are few; one finding naming them all when there are many
/// (a 5,000-node cluster should not print 300 findings of one kind).
struct Grouped {
    severity: Severity,
    code: FindingCode,
    /// Per entry: (owner named in the summary, full message, objects).
    entries: Vec<(String, String, Vec<ObjectRef>)>,
}

const GROUP_ABOVE: usize = 5;

impl Grouped {
    fn new(severity: Severity, code: FindingCode) -> Self {
        Grouped {
            severity,
            code,
            entries: Vec::new(),
        }
    }

    /// `summary` is said of all owners when grouped: "{n} workloads {summary}: a, b and 3 more".
    fn emit(self, out: &mut Findings, summary: &str, hint: &str) {
        if self.entries.len() <= GROUP_ABOVE {
            for (_, message, objects) in self.entries {
                out.add(self.severity, self.code, message, objects, hint);
            }
            return;
        }
        let owners: Vec<String> = self.entries.iter().map(|e| e.0.clone()).collect();
        let objects = self.entries.into_iter().flat_map(|e| e.2).collect();
        out.add(
            self.severity,
            self.code,
            format!(
                "{} workloads {summary}: {}",
                owners.len(),
                list_names(&owners, GROUP_ABOVE)
            ),
            objects,
            hint,
        );
    }
}

fn pod_ref(idx: &Index<'_>, p: u32) -> ObjectRef {
    let pod = &idx.snap.pods[p as usize];
    ObjectRef::namespaced("Pod", &pod.namespace, &pod.name)
}

fn workload_ref(idx: &Index<'_>, w: u32) -> ObjectRef {
    let wl = &idx.workloads[w as usize];
    ObjectRef::namespaced(wl.kind.as_str(), wl.namespace, wl.name)
}

fn pdb_ref(info: &PdbInfo<'_>) -> ObjectRef {
    ObjectRef::namespaced("PodDisruptionBudget", &info.pdb.namespace, &info.pdb.name)
}

fn node_name<'s>(idx: &Index<'s>, n: u32) -> &'s str {
    idx.snap
        .nodes
        .get(n as usize)
        .map_or("?", |n| n.name.as_str())
}

/// Findings about the pods on the selected nodes and the PDBs that cover them.
pub fn pod_findings(
    idx: &Index<'_>,
    mig: &Migration,
    sel: &Selected,
    pl: &mut Placement<'_>,
    surge: &[bool],
    out: &mut Findings,
) {
    let snap = idx.snap;
    let drain = &mig.spec.drain;
    let selected: FxHashSet<u32> = sel.all().collect();
    let mut on_selected: Vec<u32> = Vec::new();
    for n in sel.all() {
        if let Some(ps) = idx.pods_by_node.get(n as usize) {
            on_selected.extend(ps.iter().copied());
        }
    }
    on_selected.sort_unstable();

    // Unmanaged pods, one finding each.
    for &p in &on_selected {
        if idx.pod_kind[p as usize] != PodKind::Unmanaged {
            continue;
        }
        let pod = &snap.pods[p as usize];
        let node = pod.node_name.as_deref().unwrap_or("?");
        let objects = vec![pod_ref(idx, p), ObjectRef::node(node)];
        if drain.force {
            out.add(
                Severity::Warning,
                FindingCode::UnmanagedPod,
                format!(
                    "pod {}/{} on {node} has no controller: the forced drain deletes it and nothing recreates it",
                    pod.namespace, pod.name
                ),
                objects,
                "recreate it under a Deployment or StatefulSet before the migration, or exclude its node (spec.nodes.exclude) and keep the node cordoned",
            );
        } else {
            out.add(
                Severity::Error,
                FindingCode::UnmanagedPod,
                format!(
                    "pod {}/{} on {node} has no controller: kubectl drain refuses to evict it without --force, and a forced drain would delete it for good",
                    pod.namespace, pod.name
                ),
                objects,
                "recreate it under a Deployment or StatefulSet, or exclude its node (spec.nodes.exclude) and cordon it; set drain.force: true only if losing the pod is acceptable",
            );
        }
    }

    // emptyDir data, grouped by workload (unmanaged pods on their own).
    let mut empty_dir: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for &p in &on_selected {
        let kind = idx.pod_kind[p as usize];
        if !matches!(kind, PodKind::Movable | PodKind::Unmanaged)
            || snap.pods[p as usize].empty_dir.is_empty()
        {
            continue;
        }
        let w = idx.pod_workload[p as usize];
        let key = if w == NONE { (NONE, p) } else { (w, NONE) };
        empty_dir.entry(key).or_default().push(p);
    }
    let mut empty_dir_group = Grouped::new(
        if drain.delete_empty_dir_data {
            Severity::Warning
        } else {
            Severity::Error
        },
        FindingCode::EmptyDirData,
    );
    for ((w, _), pods) in empty_dir {
        let mut volumes: Vec<&str> = pods
            .iter()
            .flat_map(|&p| snap.pods[p as usize].empty_dir.iter().map(String::as_str))
            .collect();
        volumes.sort_unstable();
        volumes.dedup();
        let owner = if w == NONE {
            let pod = &snap.pods[pods[0] as usize];
            format!("pod {}/{}", pod.namespace, pod.name)
        } else {
            idx.workloads[w as usize].key()
        };
        let mut objects: Vec<ObjectRef> = Vec::new();
        if w != NONE {
            objects.push(workload_ref(idx, w));
        }
        objects.extend(pods.iter().map(|&p| pod_ref(idx, p)));
        let what = format!(
            "{owner}: {} with emptyDir volumes ({}) on selected nodes; their data is lost when they are evicted",
            plural(pods.len(), "pod"),
            volumes.join(", ")
        );
        let message = if drain.delete_empty_dir_data {
            what
        } else {
            format!("{what}, and kubectl drain refuses them without --delete-emptydir-data")
        };
        empty_dir_group.entries.push((owner, message, objects));
    }
    if drain.delete_empty_dir_data {
        empty_dir_group.emit(
            out,
            "have pods with emptyDir volumes on selected nodes; their data is lost when the pods are evicted",
            "keep data that must survive in a PersistentVolume",
        );
    } else {
        empty_dir_group.emit(
            out,
            "have pods with emptyDir volumes on selected nodes, which kubectl drain refuses without --delete-emptydir-data",
            "set drain.deleteEmptyDirData: true if the data is scratch data, or move it to a PersistentVolume",
        );
    }

    // DaemonSets and static pods, aggregated.
    let mut daemonsets: Vec<u32> = Vec::new();
    let mut ds_pods = 0usize;
    let mut statics: Vec<u32> = Vec::new();
    for &p in &on_selected {
        match idx.pod_kind[p as usize] {
            PodKind::DaemonSet => {
                ds_pods += 1;
                let w = idx.pod_workload[p as usize];
                if w != NONE && !daemonsets.contains(&w) {
                    daemonsets.push(w);
                }
            }
            PodKind::Mirror => statics.push(p),
            _ => {}
        }
    }
    if !daemonsets.is_empty() {
        let names: Vec<String> = daemonsets
            .iter()
            .map(|&w| {
                format!(
                    "{}/{}",
                    idx.workloads[w as usize].namespace, idx.workloads[w as usize].name
                )
            })
            .collect();
        let objects = daemonsets.iter().map(|&w| workload_ref(idx, w)).collect();
        if drain.ignore_daemon_sets {
            out.add(
                Severity::Info,
                FindingCode::DaemonSetPods,
                format!(
                    "{} of {} ({}) stay on their nodes during the drain and come back with them",
                    plural(ds_pods, "pod"),
                    plural(daemonsets.len(), "DaemonSet"),
                    list_names(&names, 5)
                ),
                objects,
                "",
            );
        } else {
            out.add(
                Severity::Error,
                FindingCode::DaemonSetPods,
                format!(
                    "{} of {} ({}) are on selected nodes and kubectl drain refuses them without --ignore-daemonsets",
                    plural(ds_pods, "pod"),
                    plural(daemonsets.len(), "DaemonSet"),
                    list_names(&names, 5)
                ),
                objects,
                "set drain.ignoreDaemonSets: true (the default)",
            );
        }
    }
    if !statics.is_empty() {
        let names: Vec<String> = statics
            .iter()
            .map(|&p| snap.pods[p as usize].name.clone())
            .collect();
        out.add(
            Severity::Info,
            FindingCode::StaticPods,
            format!(
                "{} ({}) run from manifests on their nodes: they are not evicted, they go down with their node and come back with it",
                plural(statics.len(), "static pod"),
                list_names(&names, 6)
            ),
            statics.iter().map(|&p| pod_ref(idx, p)).collect(),
            "",
        );
    }

    // Workloads with pods on selected nodes.
    let mut workloads: Vec<u32> = on_selected
        .iter()
        .filter(|&&p| idx.pod_kind[p as usize] == PodKind::Movable)
        .map(|&p| idx.pod_workload[p as usize])
        .filter(|&w| w != NONE)
        .collect();
    workloads.sort_unstable();
    workloads.dedup();
    let mut surged = Vec::new();
    let mut unbudgeted = Vec::new();
    let mut single_group = Grouped::new(Severity::Warning, FindingCode::SingleReplicaWorkload);
    let mut one_node_group = Grouped::new(Severity::Warning, FindingCode::ReplicasOnOneNode);
    for &w in &workloads {
        let wl = &idx.workloads[w as usize];
        let has_pdb = wl
            .pods
            .iter()
            .any(|&p| !idx.pod_pdbs[p as usize].is_empty());
        if wl.replicas == 1 {
            let surges = wl
                .pods
                .iter()
                .any(|&p| surge.get(p as usize).copied().unwrap_or(false));
            if surges {
                surged.push(w);
            } else {
                let why = if wl.kind == WorkloadKind::Deployment {
                    "surge.singleReplicaDeployments is off"
                } else {
                    "only Deployments can be surged"
                };
                single_group.entries.push((
                    wl.key(),
                    format!(
                        "{} has one replica: it is unavailable while its pod moves ({why})",
                        wl.key()
                    ),
                    vec![workload_ref(idx, w)],
                ));
            }
            continue;
        }
        let replicated = wl.replicas >= 2
            && !matches!(
                wl.kind,
                WorkloadKind::DaemonSet | WorkloadKind::Job | WorkloadKind::CronJob
            );
        if replicated && !has_pdb {
            unbudgeted.push(w);
            let ready_nodes: FxHashSet<u32> = wl
                .pods
                .iter()
                .filter(|&&p| snap.pods[p as usize].ready)
                .map(|&p| idx.pod_node[p as usize])
                .collect();
            if ready_nodes.len() == 1
                && let Some(&n) = ready_nodes.iter().next()
                && selected.contains(&n)
            {
                one_node_group.entries.push((wl.key(), format!(
                                "every ready replica of {} is on {}: draining that node stops the workload until the replacements are Ready",
                                wl.key(),
                                node_name(idx, n)
                            ), vec![workload_ref(idx, w), ObjectRef::node(node_name(idx, n))]));
            }
        }
    }
    single_group.emit(
        out,
        "have one replica and are unavailable while their pod moves",
        "run two or more replicas with a PDB, or accept a gap of about the pod's start-up time",
    );
    one_node_group.emit(
        out,
        "have every ready replica on one selected node: draining it stops them until the replacements are Ready",
        "spread the replicas (topology spread or anti-affinity) and add a PDB, which makes the drain evict them one at a time",
    );
    if !surged.is_empty() {
        let names: Vec<String> = surged
            .iter()
            .map(|&w| idx.workloads[w as usize].key())
            .collect();
        out.add(
            Severity::Info,
            FindingCode::SingleReplicaSurge,
            format!(
                "single-replica Deployments get a second pod on another node before their eviction, so they stay available: {}",
                list_names(&names, 5)
            ),
            surged.iter().map(|&w| workload_ref(idx, w)).collect(),
            "",
        );
    }
    if !unbudgeted.is_empty() {
        let names: Vec<String> = unbudgeted
            .iter()
            .map(|&w| idx.workloads[w as usize].key())
            .collect();
        let protect = if mig.spec.strategy.protect_unbudgeted {
            "theseus keeps at least one replica of each running in every wave (strategy.protectUnbudgeted)"
        } else {
            "nothing stops a wave from evicting all their replicas at once (strategy.protectUnbudgeted is off)"
        };
        out.add(
            Severity::Info,
            FindingCode::NoPdb,
            format!(
                "{} without a PodDisruptionBudget ({}): {protect}",
                plural(unbudgeted.len(), "replicated workload"),
                list_names(&names, 5)
            ),
            unbudgeted.iter().map(|&w| workload_ref(idx, w)).collect(),
            "add a PodDisruptionBudget to each workload that serves traffic",
        );
    }

    // Hard anti-affinity on hostname needing a spare node (runbook 003).
    if !mig
        .spec
        .strategy
        .kind
        .eq(&theseus_model::spec::StrategyType::AddBeforeRemove)
    {
        for &w in &workloads {
            let wl = &idx.workloads[w as usize];
            let Some(&first) = wl
                .pods
                .iter()
                .find(|&&p| idx.pod_kind[p as usize] == PodKind::Movable)
            else {
                continue;
            };
            let pod = &snap.pods[first as usize];
            let self_anti_on_host = pod.affinity.as_ref().is_some_and(|a| {
                a.pod_anti_affinity.iter().any(|t| {
                    t.topology_key == LABEL_HOSTNAME
                        && t.label_selector.matches(&pod.labels)
                        && (t.namespaces.is_empty() || t.namespaces.contains(&pod.namespace))
                })
            });
            if !self_anti_on_host {
                continue;
            }
            let eligible: Vec<u32> = pl
                .eligible_nodes(first)
                .into_iter()
                .filter(|&n| pl.usable.get(n as usize).copied().unwrap_or(false))
                .collect();
            let replicas = wl.replicas.max(wl.pods.len() as i64);
            if replicas >= eligible.len() as i64 {
                let i = out.add(
                    Severity::Error,
                    FindingCode::AntiAffinityNeedsSpareNode,
                    format!(
                        "{} has {} replicas with required pod anti-affinity on {LABEL_HOSTNAME} and only {} eligible nodes: a drained replica has no node to go to",
                        wl.key(),
                        replicas,
                        eligible.len()
                    ),
                    vec![workload_ref(idx, w)],
                    "add a spare node (runbook 003), use strategy.type: addBeforeRemove, or make the anti-affinity preferred",
                );
                out.by_anti_workload.insert(w, i);
            }
        }
    }

    // PDBs.
    let mut multi: BTreeMap<Vec<u32>, Vec<u32>> = BTreeMap::new();
    for &p in &on_selected {
        if idx.pod_kind[p as usize] == PodKind::Movable && idx.pod_pdbs[p as usize].len() > 1 {
            multi
                .entry(idx.pod_pdbs[p as usize].clone())
                .or_default()
                .push(p);
        }
    }
    for (pdbs, pods) in multi {
        let pdb_names: Vec<String> = pdbs
            .iter()
            .map(|&b| idx.pdbs[b as usize].pdb.key())
            .collect();
        let pod_names: Vec<String> = pods.iter().map(|&p| snap.pods[p as usize].key()).collect();
        let mut objects: Vec<ObjectRef> = pdbs
            .iter()
            .map(|&b| pdb_ref(&idx.pdbs[b as usize]))
            .collect();
        objects.extend(pods.iter().map(|&p| pod_ref(idx, p)));
        out.add(
            Severity::Error,
            FindingCode::PodInMultiplePdbs,
            format!(
                "{} ({}) are covered by more than one PDB ({}): the eviction API refuses to evict such a pod",
                plural(pods.len(), "pod"),
                list_names(&pod_names, 3),
                pdb_names.join(", ")
            ),
            objects,
            "make the PDB selectors disjoint",
        );
    }
    let mut relevant: Vec<u32> = on_selected
        .iter()
        .filter(|&&p| idx.pod_kind[p as usize] == PodKind::Movable)
        .flat_map(|&p| idx.pod_pdbs[p as usize].iter().copied())
        .collect();
    relevant.sort_unstable();
    relevant.dedup();
    for b in relevant {
        let info = &idx.pdbs[b as usize];
        let max_surge = info
            .pods
            .iter()
            .filter(|&&p| surge.get(p as usize).copied().unwrap_or(false))
            .count() as i64;
        let pods_on_selected = info
            .pods
            .iter()
            .filter(|&&p| selected.contains(&idx.pod_node[p as usize]))
            .count();
        if info.allowed_at_full_health(max_surge) == 0 {
            let reason = match (info.pdb.min_available, info.pdb.max_unavailable) {
                (_, Some(IntOrPercent::Int(0) | IntOrPercent::Percent(0))) => {
                    "maxUnavailable is 0".to_string()
                }
                (_, Some(mu)) => {
                    format!("maxUnavailable {mu} of {} pods rounds to 0", info.expected)
                }
                (Some(IntOrPercent::Int(n)), None) => format!(
                    "minAvailable {n} is at least the {} it covers",
                    plural(info.expected as usize, "pod")
                ),
                (Some(IntOrPercent::Percent(p)), None) => format!("minAvailable is {p}%"),
                (None, None) => "it requires every pod".to_string(),
            };
            let i = out.add(
                Severity::Error,
                FindingCode::PdbNeverAllowsDisruption,
                format!(
                    "PodDisruptionBudget {} can never allow a disruption ({reason}): draining any selected node that runs one of its {} blocks forever",
                    info.pdb.key(),
                    plural(pods_on_selected, "pod"),
                ),
                vec![pdb_ref(info)],
                "lower minAvailable below the replica count (or raise the replicas), or set maxUnavailable to at least 1",
            );
            out.by_pdb.insert(b, i);
        } else if info.allowed == 0 && info.allowed_with(max_surge) == 0 {
            let msg = if info.healthy == 0 {
                format!(
                    "PodDisruptionBudget {} selects {} but none is healthy: no eviction is allowed until they are Ready",
                    info.pdb.key(),
                    plural(info.pods.len(), "pod")
                )
            } else {
                format!(
                    "PodDisruptionBudget {} allows no disruption now: {} of {} pods healthy, {} required; the drain blocks until the workload recovers",
                    info.pdb.key(),
                    info.healthy,
                    info.expected,
                    info.desired
                )
            };
            let i = out.add(
                Severity::Error,
                FindingCode::PdbBelowMinimum,
                msg,
                vec![pdb_ref(info)],
                "bring the workload back to its full replica count (check Pending or crashing pods) before migrating",
            );
            out.by_pdb.insert(b, i);
        }
    }
    for info in &idx.pdbs {
        if info.pods.is_empty() {
            out.add(
                Severity::Warning,
                FindingCode::PdbMatchesNoPods,
                format!(
                    "PodDisruptionBudget {} selects no pod: it protects nothing (is its selector right?)",
                    info.pdb.key()
                ),
                vec![pdb_ref(info)],
                "fix the selector or delete the PDB",
            );
        }
    }

    // Pending pods.
    let pending: Vec<u32> = (0..snap.pods.len() as u32)
        .filter(|&p| {
            let pod = &snap.pods[p as usize];
            pod.node_name.is_none() && pod.phase == theseus_model::snapshot::PodPhase::Pending
        })
        .collect();
    if !pending.is_empty() {
        let names: Vec<String> = pending
            .iter()
            .map(|&p| snap.pods[p as usize].key())
            .collect();
        out.add(
            Severity::Warning,
            FindingCode::PendingPods,
            format!(
                "{} already Pending ({}): the cluster is short of room before any node goes out, and they compete for the room the migration needs",
                if pending.len() == 1 { "1 pod is".to_string() } else { format!("{} pods are", pending.len()) },
                list_names(&names, 5)
            ),
            pending.iter().take(50).map(|&p| pod_ref(idx, p)).collect(),
            "find out why they are Pending (kubectl describe pod) before migrating",
        );
    }
    if drain.disable_eviction {
        out.add(
            Severity::Warning,
            FindingCode::EvictionDisabled,
            "drain.disableEviction deletes pods instead of evicting them: no PodDisruptionBudget is honoured during the drain",
            Vec::new(),
            "leave drain.disableEviction off unless the eviction API is broken",
        );
    }
}

/// The finding for a wave that cannot run as planned.
pub fn blocked_wave(
    idx: &Index<'_>,
    out: &mut Findings,
    wave: u32,
    nodes: &[String],
    displaced: usize,
    block: &Block,
) {
    let node_list = nodes.join(", ");
    let node_objs: Vec<ObjectRef> = nodes.iter().map(|n| ObjectRef::node(n)).collect();
    match block {
        Block::Budget(BudgetRef::Pdb(b))
        | Block::Unevictable {
            budget: BudgetRef::Pdb(b),
            ..
        } => {
            if let Some(&i) = out.by_pdb.get(b) {
                out.link_wave(i, wave);
                if let Some(f) = out.list.get_mut(i) {
                    for o in node_objs {
                        if !f.objects.contains(&o) {
                            f.objects.push(o);
                        }
                    }
                }
                return;
            }
            let Some(info) = idx.pdbs.get(*b as usize) else {
                return;
            };
            let i = out.add(
                Severity::Error,
                FindingCode::PdbBelowMinimum,
                format!(
                    "wave {wave} ({node_list}) cannot drain: PodDisruptionBudget {} allows no disruption ({} of {} pods healthy, {} required)",
                    info.pdb.key(),
                    info.healthy,
                    info.expected,
                    info.desired
                ),
                [vec![pdb_ref(info)], node_objs].concat(),
                "bring the workload back to its full replica count before migrating",
            );
            out.link_wave(i, wave);
        }
        Block::Budget(BudgetRef::Implicit(_)) | Block::Unevictable { .. } => {}
        Block::Placement { pod, diagnosis } => {
            blocked_placement(
                idx, out, wave, &node_list, node_objs, displaced, *pod, diagnosis,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn blocked_placement(
    idx: &Index<'_>,
    out: &mut Findings,
    wave: u32,
    node_list: &str,
    node_objs: Vec<ObjectRef>,
    displaced: usize,
    pod: u32,
    d: &Diagnosis,
) {
    let p = &idx.snap.pods[pod as usize];
    let w = idx.pod_workload[pod as usize];
    let owner = if w == NONE {
        format!("pod {}", p.key())
    } else {
        format!("{} (pod {})", idx.workloads[w as usize].key(), p.name)
    };
    let mut objects = node_objs;
    if w != NONE {
        objects.push(workload_ref(idx, w));
    }
    objects.push(pod_ref(idx, pod));
    let resources_short = d.pods_full + d.cpu_short + d.memory_short;
    if d.eligible == 0 || d.eligible == d.unavailable {
        let i = out.add(
            Severity::Error,
            FindingCode::NoEligibleNode,
            format!(
                "wave {wave} ({node_list}): {owner} has no other node to run on: its nodeSelector, node affinity and tolerations allow {} node(s), none of them available while {node_list} is out",
                d.eligible
            ),
            objects,
            "widen the pod's nodeSelector/affinity or tolerations, or add a node it may run on",
        );
        out.link_wave(i, wave);
    } else if d.anti_affinity + d.affinity > 0 && resources_short == 0 {
        if w != NONE
            && let Some(&i) = out.by_anti_workload.get(&w)
        {
            out.link_wave(i, wave);
            return;
        }
        let i = out.add(
            Severity::Error,
            FindingCode::AntiAffinityNeedsSpareNode,
            format!(
                "wave {wave} ({node_list}): {owner} fits on none of its {} eligible nodes because of required pod (anti-)affinity",
                d.eligible
            ),
            objects,
            "add a spare node (runbook 003), use strategy.type: addBeforeRemove, or make the anti-affinity preferred",
        );
        if w != NONE {
            out.by_anti_workload.insert(w, i);
        }
        out.link_wave(i, wave);
    } else {
        let mut reasons = Vec::new();
        if d.pods_full > 0 {
            reasons.push(format!(
                "{} at the pods-per-node limit ({} pods)",
                plural(d.pods_full, "node"),
                d.max_pods
            ));
        }
        if d.cpu_short > 0 {
            reasons.push(format!("{} short of CPU", plural(d.cpu_short, "node")));
        }
        if d.memory_short > 0 {
            reasons.push(format!(
                "{} short of memory",
                plural(d.memory_short, "node")
            ));
        }
        if d.anti_affinity + d.affinity > 0 {
            reasons.push(format!(
                "{} excluded by pod affinity rules",
                plural(d.anti_affinity + d.affinity, "node")
            ));
        }
        if d.unavailable > 0 {
            reasons.push(format!("{} out or cordoned", plural(d.unavailable, "node")));
        }
        let i = out.add(
            Severity::Error,
            FindingCode::CapacityExceeded,
            format!(
                "wave {wave} ({node_list}): the {} it displaces do not fit on the remaining nodes; {owner} fits nowhere: of {} eligible nodes, {}. The {} remaining nodes have {} free pod slots, {} CPU and {} memory",
                plural(displaced, "pod"),
                d.eligible,
                reasons.join(", "),
                d.nodes_available,
                d.free_pod_slots,
                quantity::format_cpu_millis(d.free_cpu_millis),
                quantity::format_bytes(d.free_memory_bytes)
            ),
            objects,
            "raise the kubelet's maxPods (kubelet_max_pods, runbook 000) or add capacity before migrating, or use strategy.type: addBeforeRemove",
        );
        out.link_wave(i, wave);
    }
}

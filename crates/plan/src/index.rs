//! Indices over a snapshot, built once per plan: nodes by name, pods by node and namespace, an
//! inverted label index for selectors, workloads with their pods, PDBs with their pods.
//!
//! Selector matching goes through the inverted index: a PDB with `matchLabels` only looks at
//! the pods that carry its rarest label pair, so 5,000 PDBs over 150,000 pods cost about the
//! number of pods they select, not 5,000 × 150,000.

use theseus_model::IntOrPercent;
use theseus_model::selector::{LabelSelector, Labels, SelectorOperator};
use theseus_model::snapshot::{ClusterSnapshot, PodDisruptionBudget, Workload, WorkloadKind};

use crate::util::{FxHashMap, FxHashSet, NONE};

/// What a drain does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodKind {
    /// Evicted and recreated elsewhere by its controller.
    Movable,
    /// DaemonSet pod: ignored by the drain, comes back with the node.
    DaemonSet,
    /// Mirror pod of a static pod: goes down and up with the node.
    Mirror,
    /// Finished (Succeeded/Failed): deleted, nothing to place.
    Terminal,
    /// No controller: deleted by a forced drain, blocks otherwise; not recreated.
    Unmanaged,
    /// Excluded by `drain.podSelector`: not evicted, goes down with the node.
    NotDrained,
}

/// A workload (top controller) with the pods that belong to it.
#[derive(Debug)]
pub struct WorkloadInfo<'a> {
    pub kind: WorkloadKind,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Desired replicas (from the workload record, else the number of its pods).
    pub replicas: i64,
    /// Its pods (not terminal).
    pub pods: Vec<u32>,
    /// The record in the snapshot, if any.
    pub record: Option<&'a Workload>,
}

impl WorkloadInfo<'_> {
    pub fn key(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A PDB with the pods it selects and its disruption arithmetic.
#[derive(Debug)]
pub struct PdbInfo<'a> {
    pub pdb: &'a PodDisruptionBudget,
    /// Non-terminal pods selected.
    pub pods: Vec<u32>,
    /// Pods the budget counts (controller scale for percentages and maxUnavailable).
    pub expected: i64,
    /// Ready pods.
    pub healthy: i64,
    /// Healthy pods required.
    pub desired: i64,
    /// Evictions allowed now.
    pub allowed: i64,
}

impl PdbInfo<'_> {
    /// Healthy pods required for `expected` pods (the disruption controller's arithmetic;
    /// percentages round up).
    pub fn desired_for(pdb: &PodDisruptionBudget, expected: i64) -> i64 {
        if let Some(mu) = pdb.max_unavailable {
            expected.saturating_sub(mu.scaled(expected, true)).max(0)
        } else if let Some(ma) = pdb.min_available {
            match ma {
                IntOrPercent::Int(n) => n,
                IntOrPercent::Percent(_) => ma.scaled(expected, true),
            }
        } else {
            0
        }
    }

    /// Evictions allowed when `surge` extra pods of the budget are up (surged replacements of
    /// single-replica Deployments count as expected and healthy).
    pub fn allowed_with(&self, surge: i64) -> i64 {
        if surge == 0 {
            return self.allowed;
        }
        let expected = self.expected + surge;
        (self.healthy + surge)
            .saturating_sub(Self::desired_for(self.pdb, expected))
            .max(0)
    }

    /// Evictions allowed if every expected pod were healthy.
    pub fn allowed_at_full_health(&self, surge: i64) -> i64 {
        let expected = self.expected + surge;
        expected
            .saturating_sub(Self::desired_for(self.pdb, expected))
            .max(0)
    }
}

/// Indices over one snapshot.
pub struct Index<'a> {
    pub snap: &'a ClusterSnapshot,
    pub node_id: FxHashMap<&'a str, u32>,
    /// Control-plane nodes.
    pub is_cp: Vec<bool>,
    /// Node of each pod (`NONE` when unscheduled or on an unknown node).
    pub pod_node: Vec<u32>,
    pub pod_kind: Vec<PodKind>,
    /// Workload of each pod (`NONE` for unmanaged pods).
    pub pod_workload: Vec<u32>,
    pub workloads: Vec<WorkloadInfo<'a>>,
    /// Every pod bound to each node.
    pub pods_by_node: Vec<Vec<u32>>,
    pub pdbs: Vec<PdbInfo<'a>>,
    /// PDBs of each pod.
    pub pod_pdbs: Vec<Vec<u32>>,
    by_ns: FxHashMap<&'a str, Vec<u32>>,
    by_label: FxHashMap<(&'a str, &'a str, &'a str), Vec<u32>>,
    ns_labels: FxHashMap<&'a str, &'a Labels>,
    /// Pods that reference a node the snapshot does not have.
    pub dangling_pods: Vec<u32>,
}

impl<'a> Index<'a> {
    pub fn new(snap: &'a ClusterSnapshot, pod_selector: Option<&LabelSelector>) -> Self {
        let mut node_id = FxHashMap::default();
        for (i, n) in snap.nodes.iter().enumerate() {
            node_id.entry(n.name.as_str()).or_insert(i as u32);
        }
        let cp_names: FxHashSet<String> = snap
            .control_plane
            .control_plane_node_names(&snap.nodes)
            .into_iter()
            .collect();
        let is_cp = snap
            .nodes
            .iter()
            .map(|n| n.is_control_plane() || cp_names.contains(&n.name))
            .collect();

        // Workloads: records first, then controllers seen only on pods.
        let mut workloads: Vec<WorkloadInfo<'a>> = Vec::with_capacity(snap.workloads.len());
        let mut wl_id: FxHashMap<(&'a str, &'a str, &'a str), u32> = FxHashMap::default();
        for w in &snap.workloads {
            let key = (w.kind.as_str(), w.namespace.as_str(), w.name.as_str());
            if wl_id.contains_key(&key) {
                continue;
            }
            wl_id.insert(key, workloads.len() as u32);
            workloads.push(WorkloadInfo {
                kind: w.kind.clone(),
                namespace: &w.namespace,
                name: &w.name,
                replicas: i64::from(w.replicas),
                pods: Vec::new(),
                record: Some(w),
            });
        }

        // Only label keys that some selector looks at are indexed (pods carry many labels no
        // selector uses: pod-template-hash, app.kubernetes.io/*, ...).
        let mut wanted: FxHashSet<&'a str> = FxHashSet::default();
        let mut want = |sel: &'a LabelSelector| {
            wanted.extend(sel.match_labels.keys().map(String::as_str));
            wanted.extend(
                sel.match_expressions
                    .iter()
                    .filter(|r| r.operator == SelectorOperator::In)
                    .map(|r| r.key.as_str()),
            );
        };
        for pdb in &snap.pod_disruption_budgets {
            want(&pdb.selector);
        }
        for p in &snap.pods {
            if let Some(a) = &p.affinity {
                for t in a.pod_affinity.iter().chain(&a.pod_anti_affinity) {
                    want(&t.label_selector);
                }
            }
        }
        let n_pods = snap.pods.len();
        let mut pod_node = vec![NONE; n_pods];
        let mut pod_kind = vec![PodKind::Movable; n_pods];
        let mut pod_workload = vec![NONE; n_pods];
        let mut pods_by_node: Vec<Vec<u32>> = vec![Vec::new(); snap.nodes.len()];
        let mut by_ns: FxHashMap<&'a str, Vec<u32>> = FxHashMap::default();
        let mut by_label: FxHashMap<(&'a str, &'a str, &'a str), Vec<u32>> = FxHashMap::default();
        let mut dangling_pods = Vec::new();
        for (i, p) in snap.pods.iter().enumerate() {
            let pi = i as u32;
            if let Some(name) = &p.node_name {
                match node_id.get(name.as_str()) {
                    Some(&n) => {
                        pod_node[i] = n;
                        pods_by_node[n as usize].push(pi);
                    }
                    None => dangling_pods.push(pi),
                }
            }
            pod_kind[i] = if p.phase.is_terminal() {
                PodKind::Terminal
            } else if p.mirror {
                PodKind::Mirror
            } else if p.is_daemonset() {
                PodKind::DaemonSet
            } else if p.controller.is_none() {
                PodKind::Unmanaged
            } else if pod_selector.is_some_and(|s| !s.matches(&p.labels)) {
                PodKind::NotDrained
            } else {
                PodKind::Movable
            };
            if let Some(c) = &p.controller {
                let key = (c.kind.as_str(), p.namespace.as_str(), c.name.as_str());
                let id = *wl_id.entry(key).or_insert_with(|| {
                    workloads.push(WorkloadInfo {
                        kind: c.kind.clone(),
                        namespace: &p.namespace,
                        name: &c.name,
                        replicas: -1,
                        pods: Vec::new(),
                        record: None,
                    });
                    (workloads.len() - 1) as u32
                });
                pod_workload[i] = id;
                if !p.phase.is_terminal()
                    && let Some(w) = workloads.get_mut(id as usize)
                {
                    w.pods.push(pi);
                }
            }
            by_ns.entry(p.namespace.as_str()).or_default().push(pi);
            for (k, v) in p.labels.iter().filter(|(k, _)| wanted.contains(k.as_str())) {
                by_label
                    .entry((p.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(pi);
            }
        }
        for w in &mut workloads {
            if w.replicas < 0 {
                w.replicas = w.pods.len() as i64;
            }
        }
        let ns_labels = snap
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), &n.labels))
            .collect();

        let mut idx = Index {
            snap,
            node_id,
            is_cp,
            pod_node,
            pod_kind,
            pod_workload,
            workloads,
            pods_by_node,
            pdbs: Vec::new(),
            pod_pdbs: vec![Vec::new(); n_pods],
            by_ns,
            by_label,
            ns_labels,
            dangling_pods,
        };
        idx.index_pdbs();
        idx
    }

    fn index_pdbs(&mut self) {
        let snap = self.snap;
        let mut pdbs = Vec::with_capacity(snap.pod_disruption_budgets.len());
        for (bi, pdb) in snap.pod_disruption_budgets.iter().enumerate() {
            let pods: Vec<u32> = self
                .select(Some(&pdb.namespace), &pdb.selector)
                .into_iter()
                .filter(|&p| self.pod_kind[p as usize] != PodKind::Terminal)
                .collect();
            let healthy = pods
                .iter()
                .filter(|&&p| snap.pods[p as usize].ready)
                .count() as i64;
            let scale_based = pdb.max_unavailable.is_some()
                || matches!(pdb.min_available, Some(IntOrPercent::Percent(_)));
            let expected = if scale_based {
                let mut seen = FxHashSet::default();
                let mut total = 0i64;
                for &p in &pods {
                    let w = self.pod_workload[p as usize];
                    if w == NONE {
                        total += 1;
                    } else if seen.insert(w) {
                        total = total.saturating_add(self.workloads[w as usize].replicas.max(0));
                    }
                }
                total
            } else {
                pods.len() as i64
            };
            let desired = PdbInfo::desired_for(pdb, expected);
            for &p in &pods {
                self.pod_pdbs[p as usize].push(bi as u32);
            }
            pdbs.push(PdbInfo {
                pdb,
                allowed: healthy.saturating_sub(desired).max(0),
                pods,
                expected,
                healthy,
                desired,
            });
        }
        self.pdbs = pdbs;
    }

    /// Pods matching `sel` in namespace `ns` (every namespace when `None`), ascending.
    pub fn select(&self, ns: Option<&str>, sel: &LabelSelector) -> Vec<u32> {
        let snap = self.snap;
        let matches = |p: u32| {
            let pod = &snap.pods[p as usize];
            ns.is_none_or(|n| pod.namespace == n) && sel.matches(&pod.labels)
        };
        let Some(ns) = ns else {
            return (0..snap.pods.len() as u32)
                .filter(|&p| matches(p))
                .collect();
        };
        // The smallest posting list of a matchLabels pair.
        let mut best: Option<&Vec<u32>> = None;
        for (k, v) in &sel.match_labels {
            match self.by_label.get(&(ns, k.as_str(), v.as_str())) {
                None => return Vec::new(),
                Some(list) => {
                    if best.is_none_or(|b| list.len() < b.len()) {
                        best = Some(list);
                    }
                }
            }
        }
        if let Some(list) = best {
            return list.iter().copied().filter(|&p| matches(p)).collect();
        }
        // An `In` requirement: the union of its values' posting lists.
        if let Some(req) = sel
            .match_expressions
            .iter()
            .find(|r| r.operator == SelectorOperator::In)
        {
            let mut out: Vec<u32> = req
                .values
                .iter()
                .filter_map(|v| self.by_label.get(&(ns, req.key.as_str(), v.as_str())))
                .flatten()
                .copied()
                .filter(|&p| matches(p))
                .collect();
            out.sort_unstable();
            out.dedup();
            return out;
        }
        self.by_ns
            .get(ns)
            .map(|list| list.iter().copied().filter(|&p| matches(p)).collect())
            .unwrap_or_default()
    }

    /// Namespaces a `namespaceSelector` selects (only those with pods matter).
    pub fn namespaces_matching(&self, sel: &LabelSelector) -> Vec<&'a str> {
        let empty = Labels::new();
        let mut v: Vec<&'a str> = self
            .by_ns
            .keys()
            .copied()
            .filter(|ns| sel.matches(self.ns_labels.get(ns).copied().unwrap_or(&empty)))
            .collect();
        v.sort_unstable();
        v
    }

    /// The workload of a pod.
    pub fn workload_of(&self, pod: u32) -> Option<&WorkloadInfo<'a>> {
        let w = *self.pod_workload.get(pod as usize)?;
        self.workloads.get(w as usize)
    }
}

#[cfg(test)]
mod tests {
    use theseus_model::selector::LabelSelectorRequirement;
    use theseus_model::snapshot::{ControllerRef, Pod, PodPhase};

    use super::*;

    fn pdb(min: Option<IntOrPercent>, max: Option<IntOrPercent>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            min_available: min,
            max_unavailable: max,
            ..Default::default()
        }
    }

    /// (minAvailable, maxUnavailable, expected pods) → healthy pods required, data-driven.
    #[test]
    fn pdb_arithmetic_follows_the_disruption_controller() {
        use IntOrPercent::{Int, Percent};
        for (min, max, expected, desired) in [
            (Some(Int(2)), None, 3, 2),
            (Some(Int(3)), None, 3, 3),
            (Some(Percent(50)), None, 3, 2),
            (Some(Percent(100)), None, 4, 4),
            (None, Some(Int(1)), 3, 2),
            (None, Some(Int(0)), 3, 3),
            (None, Some(Percent(25)), 3, 2),
            (None, Some(Percent(25)), 12, 9),
            (None, Some(Int(5)), 3, 0),
            (None, None, 3, 0),
        ] {
            assert_eq!(
                PdbInfo::desired_for(&pdb(min, max), expected),
                desired,
                "{min:?} {max:?} {expected}"
            );
        }
    }

    fn snapshot() -> ClusterSnapshot {
        let pod = |ns: &str, name: &str, app: &str, ctrl: Option<&str>, ready: bool| Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: [
                ("app".to_string(), app.to_string()),
                ("pod-template-hash".to_string(), "x".to_string()),
            ]
            .into_iter()
            .collect(),
            controller: ctrl.map(|c| ControllerRef {
                kind: WorkloadKind::Deployment,
                name: c.into(),
            }),
            ready,
            phase: PodPhase::Running,
            ..Default::default()
        };
        ClusterSnapshot {
            pods: vec![
                pod("a", "web-1", "web", Some("web"), true),
                pod("a", "web-2", "web", Some("web"), false),
                pod("a", "db-1", "db", Some("db"), true),
                pod("b", "web-1", "web", Some("web"), true),
                pod("a", "naked", "web", None, true),
            ],
            pod_disruption_budgets: vec![PodDisruptionBudget {
                namespace: "a".into(),
                name: "web".into(),
                selector: LabelSelector::from_labels([("app", "web")]),
                max_unavailable: Some(IntOrPercent::Int(1)),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn selectors_use_the_index_and_stay_exact() {
        let snap = snapshot();
        let idx = Index::new(&snap, None);
        assert_eq!(
            idx.select(Some("a"), &LabelSelector::from_labels([("app", "web")])),
            [0, 1, 4]
        );
        assert_eq!(
            idx.select(Some("b"), &LabelSelector::from_labels([("app", "web")])),
            [3]
        );
        assert!(
            idx.select(Some("a"), &LabelSelector::from_labels([("app", "nope")]))
                .is_empty()
        );
        let in_sel = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: SelectorOperator::In,
                values: vec!["db".into(), "web".into()],
            }],
        };
        assert_eq!(idx.select(Some("a"), &in_sel), [0, 1, 2, 4]);
        // An empty selector selects the whole namespace; no namespace means every namespace.
        assert_eq!(idx.select(Some("b"), &LabelSelector::default()), [3]);
        assert_eq!(
            idx.select(None, &LabelSelector::from_labels([("app", "web")])),
            [0, 1, 3, 4]
        );
    }

    #[test]
    fn pdbs_workloads_and_pod_kinds() {
        let snap = snapshot();
        let idx = Index::new(&snap, None);
        let info = &idx.pdbs[0];
        assert_eq!(info.pods, [0, 1, 4]);
        // maxUnavailable scales on the controllers: web has 2 pods (no record), the naked pod 1.
        assert_eq!(
            (info.expected, info.healthy, info.desired, info.allowed),
            (3, 2, 2, 0)
        );
        assert_eq!(idx.pod_pdbs[4], [0]);
        assert_eq!(idx.pod_kind[4], PodKind::Unmanaged);
        assert_eq!(idx.pod_kind[0], PodKind::Movable);
        assert_eq!(idx.workloads.len(), 3);
        let drained_only_db = LabelSelector::from_labels([("app", "db")]);
        let idx = Index::new(&snap, Some(&drained_only_db));
        assert_eq!(idx.pod_kind[0], PodKind::NotDrained);
        assert_eq!(idx.pod_kind[2], PodKind::Movable);
    }
}

//! Placement: where displaced pods can go, with the scheduler's hard rules.
//!
//! The state is the cluster as the planner predicts it wave after wave: every pod's node, every
//! node's free CPU, memory and pod slots, which nodes are out. Placing a pod checks, like the
//! default scheduler's filters: node usable (Ready, not cordoned, not out), taints tolerated
//! (NoSchedule, NoExecute), `nodeSelector`, required node affinity, free CPU, memory and pod
//! slots, required pod anti-affinity (both the pod's own terms and the terms of pods already in
//! the topology domain that select it) and required pod affinity.
//!
//! Cost: static constraints (tolerations, nodeSelector, node affinity) are grouped into classes
//! whose eligible node lists are computed once, per group of nodes with the same labels (minus
//! hostname) and taints. Pod (anti-)affinity terms are interned; per (term, topology domain) the
//! state keeps how many pods match the term and how many pods hold it as anti-affinity, so a
//! check is a few hash lookups. A pod is placed on the least allocated of the first few fitting
//! nodes after a rotating cursor in its class's list (the scheduler's least-allocated scoring,
//! sampled), so placing n pods costs O(n) checks on a cluster with room. Every change goes
//! through a journal, so a tentative wave can be rolled back exactly.

use theseus_model::selector::{Labels, NodeSelector, Taint, Toleration, tolerates_all};
use theseus_model::snapshot::{LABEL_HOSTNAME, Node, PodAffinityTerm};

use crate::index::{Index, PodKind};
use crate::util::{FxHashMap, NONE};

/// How many fitting nodes are compared before choosing.
const CHOICES: usize = 3;
/// How many fitting nodes are looked at, at most, to find one without a replica of the pod's
/// workload.
const MAX_SPREAD_SCAN: usize = 32;

/// Static scheduling constraints shared by many pods.
#[derive(Clone)]
struct Class<'a> {
    tolerations: &'a [Toleration],
    node_selector: &'a Labels,
    node_affinity: Option<&'a NodeSelector>,
    /// Looks at the node's name or hostname label: evaluated per node, not per node group.
    node_specific: bool,
    /// Eligible nodes (lazily computed).
    eligible: Option<Eligible>,
    cursor: usize,
}

impl Class<'_> {
    fn admits(&self, node: &Node) -> bool {
        tolerates_all(self.tolerations, &node.taints)
            && self
                .node_selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
            && self
                .node_affinity
                .is_none_or(|a| a.matches(&node.labels, &node.name))
    }
}

/// Counts per key (node or zone) for one workload: a short list, or a map once it is long.
#[derive(Debug, Clone)]
enum Counts {
    Small(Vec<(u32, u32)>),
    Large(FxHashMap<u32, u32>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Small(Vec::new())
    }
}

impl Counts {
    fn get(&self, k: u32) -> u32 {
        match self {
            Counts::Small(v) => v.iter().find(|e| e.0 == k).map_or(0, |e| e.1),
            Counts::Large(m) => m.get(&k).copied().unwrap_or(0),
        }
    }

    fn bump(&mut self, k: u32, up: bool) {
        match self {
            Counts::Small(v) => {
                if let Some(i) = v.iter().position(|e| e.0 == k) {
                    if up {
                        v[i].1 += 1;
                    } else if v[i].1 <= 1 {
                        v.swap_remove(i);
                    } else {
                        v[i].1 -= 1;
                    }
                } else if up {
                    v.push((k, 1));
                    if v.len() > 32 {
                        *self = Counts::Large(v.iter().copied().collect());
                    }
                }
            }
            Counts::Large(m) => {
                let c = m.entry(k).or_insert(0);
                if up {
                    *c += 1;
                } else {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }
}

/// Eligible nodes of a class: in order, and as a bit set.
#[derive(Clone)]
struct Eligible {
    list: Vec<u32>,
    bits: Vec<u64>,
}

impl Eligible {
    fn contains(&self, n: u32) -> bool {
        self.bits
            .get(n as usize / 64)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    fn push(&mut self, n: u32) {
        self.list.push(n);
        let word = n as usize / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1u64 << (n % 64);
    }
}

/// An interned pod (anti-)affinity term.
#[derive(Clone)]
struct Term {
    /// Topology key id.
    key: u32,
    /// Some pod holds it as anti-affinity.
    anti: bool,
}

/// One reversible change.
#[derive(Debug, Clone, Copy)]
enum Op {
    Place(u32),
    Unplace(u32, u32),
    SetOut(u32, bool),
    SetUsable(u32, bool),
}

/// Why a pod fits nowhere: counts over the nodes its static constraints allow.
#[derive(Debug, Default, Clone)]
pub struct Diagnosis {
    /// Nodes allowed by taints, nodeSelector and node affinity.
    pub eligible: usize,
    /// Of those, out, cordoned or not Ready.
    pub unavailable: usize,
    /// Out of pod slots.
    pub pods_full: usize,
    /// Short of CPU.
    pub cpu_short: usize,
    /// Short of memory.
    pub memory_short: usize,
    /// Excluded by pod anti-affinity.
    pub anti_affinity: usize,
    /// Excluded by pod affinity.
    pub affinity: usize,
    /// Free pod slots over every usable node that is not out.
    pub free_pod_slots: i64,
    /// Free CPU (millicores) over those nodes.
    pub free_cpu_millis: i64,
    /// Free memory (bytes) over those nodes.
    pub free_memory_bytes: i64,
    /// Usable nodes that are not out.
    pub nodes_available: usize,
    /// Largest `maxPods` among eligible nodes.
    pub max_pods: i64,
}

/// The predicted cluster state (cloned to try a different order from a checkpoint).
#[derive(Clone)]
pub struct Placement<'a> {
    idx: &'a Index<'a>,
    /// Added nodes (add-before-remove), after the snapshot's nodes.
    pub clones: Vec<Node>,
    clone_of: FxHashMap<u32, u32>,
    pub free_cpu: Vec<i64>,
    pub free_mem: Vec<i64>,
    pub free_pods: Vec<i64>,
    alloc_cpu: Vec<i64>,
    alloc_mem: Vec<i64>,
    /// Usable as a destination (Ready, schedulable, present).
    pub usable: Vec<bool>,
    /// Out in the current wave.
    pub out: Vec<bool>,
    node_group: Vec<u32>,
    n_groups: usize,
    /// Current node of each pod (`NONE`: not placed, deleted or pending).
    pub pod_at: Vec<u32>,
    /// Movable pods currently on each node.
    pub node_movable: Vec<Vec<u32>>,
    pos: Vec<u32>,
    pod_class: Vec<u32>,
    classes: Vec<Class<'a>>,
    terms: Vec<Term>,
    pod_anti: Vec<Vec<u32>>,
    pod_aff: Vec<Vec<u32>>,
    pod_match: Vec<Vec<u32>>,
    /// Per topology key: node → domain id.
    domain: Vec<Vec<u32>>,
    domain_values: Vec<FxHashMap<String, u32>>,
    key_ids: FxHashMap<&'a str, u32>,
    matches: FxHashMap<u64, u32>,
    holders: FxHashMap<u64, u32>,
    global: Vec<u32>,
    /// Zone id of each node (`NONE` without zone).
    node_zone: Vec<u32>,
    zone_ids: FxHashMap<String, u32>,
    /// Movable pods of each workload per node and per zone (the scheduler's spreading).
    owner_on_node: Vec<Counts>,
    owner_in_zone: Vec<Counts>,
    /// Nodes whose wave is over (back, or added), preferred as destinations: they are the
    /// least allocated, and nothing evicts from them again.
    done: Vec<u32>,
    done_cursor: usize,
    journal: Vec<Op>,
}

fn dkey(term: u32, dom: u32) -> u64 {
    (u64::from(term) << 32) | u64::from(dom)
}

impl<'a> Placement<'a> {
    /// The state of the snapshot: every bound, unfinished pod on its node.
    pub fn new(idx: &'a Index<'a>) -> Self {
        let snap = idx.snap;
        let n_nodes = snap.nodes.len();
        let n_pods = snap.pods.len();

        // Node groups: same labels (minus hostname) and taints.
        type GroupKey<'k> = (Vec<(&'k str, &'k str)>, &'k [Taint]);
        let mut groups: FxHashMap<GroupKey<'_>, u32> = FxHashMap::default();
        let node_group: Vec<u32> = snap
            .nodes
            .iter()
            .map(|n| {
                let labels: Vec<(&str, &str)> = n
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != LABEL_HOSTNAME)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let len = groups.len() as u32;
                *groups.entry((labels, n.taints.as_slice())).or_insert(len)
            })
            .collect();
        let n_groups = groups.len();

        let mut p = Placement {
            idx,
            clones: Vec::new(),
            clone_of: FxHashMap::default(),
            free_cpu: snap
                .nodes
                .iter()
                .map(|n| n.allocatable.cpu_millis)
                .collect(),
            free_mem: snap
                .nodes
                .iter()
                .map(|n| n.allocatable.memory_bytes)
                .collect(),
            free_pods: snap.nodes.iter().map(|n| n.allocatable.pods).collect(),
            alloc_cpu: snap
                .nodes
                .iter()
                .map(|n| n.allocatable.cpu_millis.max(1))
                .collect(),
            alloc_mem: snap
                .nodes
                .iter()
                .map(|n| n.allocatable.memory_bytes.max(1))
                .collect(),
            usable: snap
                .nodes
                .iter()
                .map(|n| n.is_ready() && !n.unschedulable)
                .collect(),
            out: vec![false; n_nodes],
            node_group,
            n_groups,
            pod_at: vec![NONE; n_pods],
            node_movable: vec![Vec::new(); n_nodes],
            pos: vec![NONE; n_pods],
            pod_class: vec![NONE; n_pods],
            classes: Vec::new(),
            terms: Vec::new(),
            pod_anti: vec![Vec::new(); n_pods],
            pod_aff: vec![Vec::new(); n_pods],
            pod_match: vec![Vec::new(); n_pods],
            domain: Vec::new(),
            domain_values: Vec::new(),
            key_ids: FxHashMap::default(),
            matches: FxHashMap::default(),
            holders: FxHashMap::default(),
            global: Vec::new(),
            node_zone: Vec::new(),
            zone_ids: FxHashMap::default(),
            owner_on_node: (0..idx.workloads.len())
                .map(|_| Counts::default())
                .collect(),
            owner_in_zone: (0..idx.workloads.len())
                .map(|_| Counts::default())
                .collect(),
            done: Vec::new(),
            done_cursor: 0,
            journal: Vec::new(),
        };
        for n in &snap.nodes {
            let z = p.zone_id(n);
            p.node_zone.push(z);
        }
        p.intern_classes_and_terms();
        for (i, &node) in idx.pod_node.iter().enumerate() {
            if node != NONE && idx.pod_kind[i] != PodKind::Terminal {
                p.apply_place(i as u32, node);
            }
        }
        p
    }

    fn intern_classes_and_terms(&mut self) {
        let idx = self.idx;
        let snap = idx.snap;
        type ClassKey<'k> = (&'k [Toleration], &'k Labels, Option<&'k NodeSelector>);
        let mut class_ids: FxHashMap<ClassKey<'a>, u32> = FxHashMap::default();
        type TermKey<'k> = (
            Vec<&'k str>,
            &'k theseus_model::selector::LabelSelector,
            &'k str,
        );
        let mut term_ids: FxHashMap<TermKey<'a>, u32> = FxHashMap::default();
        let mut term_defs: Vec<(Vec<&'a str>, &'a PodAffinityTerm)> = Vec::new();
        for (i, pod) in snap.pods.iter().enumerate() {
            if idx.pod_kind[i] != PodKind::Movable {
                // Only movable pods are ever placed; the others still count in term domains
                // through the terms they match.
                if let Some(aff) = &pod.affinity {
                    for t in &aff.pod_anti_affinity {
                        let id = self.intern_term(&mut term_ids, &mut term_defs, pod, t, true);
                        self.pod_anti[i].push(id);
                    }
                }
                continue;
            }
            let node_affinity = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
            let key = (
                pod.tolerations.as_slice(),
                &pod.node_selector,
                node_affinity,
            );
            let next = self.classes.len() as u32;
            let id = *class_ids.entry(key).or_insert(next);
            if id == next {
                let node_specific = pod.node_selector.contains_key(LABEL_HOSTNAME)
                    || node_affinity.is_some_and(|a| {
                        a.node_selector_terms.iter().any(|t| t.is_node_specific())
                    });
                self.classes.push(Class {
                    tolerations: &pod.tolerations,
                    node_selector: &pod.node_selector,
                    node_affinity,
                    node_specific,
                    eligible: None,
                    cursor: 0,
                });
            }
            self.pod_class[i] = id;
            if let Some(aff) = &pod.affinity {
                for t in &aff.pod_anti_affinity {
                    let id = self.intern_term(&mut term_ids, &mut term_defs, pod, t, true);
                    self.pod_anti[i].push(id);
                }
                for t in &aff.pod_affinity {
                    let id = self.intern_term(&mut term_ids, &mut term_defs, pod, t, false);
                    self.pod_aff[i].push(id);
                }
            }
        }
        // Which pods each term selects.
        for (t, (namespaces, term)) in term_defs.iter().enumerate() {
            for ns in namespaces {
                for p in idx.select(Some(ns), &term.label_selector) {
                    if idx.pod_kind[p as usize] != PodKind::Terminal {
                        self.pod_match[p as usize].push(t as u32);
                    }
                }
            }
        }
        self.global = vec![0; self.terms.len()];
    }

    fn intern_term(
        &mut self,
        ids: &mut FxHashMap<
            (
                Vec<&'a str>,
                &'a theseus_model::selector::LabelSelector,
                &'a str,
            ),
            u32,
        >,
        defs: &mut Vec<(Vec<&'a str>, &'a PodAffinityTerm)>,
        pod: &'a theseus_model::snapshot::Pod,
        term: &'a PodAffinityTerm,
        anti: bool,
    ) -> u32 {
        let mut namespaces: Vec<&'a str> = term.namespaces.iter().map(String::as_str).collect();
        if let Some(sel) = &term.namespace_selector {
            namespaces.extend(self.idx.namespaces_matching(sel));
        } else if namespaces.is_empty() {
            namespaces.push(pod.namespace.as_str());
        }
        namespaces.sort_unstable();
        namespaces.dedup();
        let key_id = self.topology_key(&term.topology_key);
        let next = self.terms.len() as u32;
        let id = *ids
            .entry((
                namespaces.clone(),
                &term.label_selector,
                term.topology_key.as_str(),
            ))
            .or_insert(next);
        if id == next {
            self.terms.push(Term { key: key_id, anti });
            defs.push((namespaces, term));
        } else if anti && let Some(t) = self.terms.get_mut(id as usize) {
            t.anti = true;
        }
        id
    }

    fn zone_id(&mut self, node: &Node) -> u32 {
        let zone = node
            .zone
            .clone()
            .or_else(|| Node::zone_from_labels(&node.labels));
        match zone {
            Some(z) => {
                let len = self.zone_ids.len() as u32;
                *self.zone_ids.entry(z).or_insert(len)
            }
            None => NONE,
        }
    }

    fn spread_counts(&self, p: u32, n: u32) -> (u32, u32) {
        let w = self.idx.pod_workload[p as usize];
        if w == NONE {
            return (0, 0);
        }
        let on_node = self.owner_on_node[w as usize].get(n);
        let z = self.node_zone.get(n as usize).copied().unwrap_or(NONE);
        let in_zone = if z == NONE {
            0
        } else {
            self.owner_in_zone[w as usize].get(z)
        };
        (on_node, in_zone)
    }

    fn count_owner(&mut self, p: u32, n: u32, up: bool) {
        let w = self.idx.pod_workload[p as usize];
        if w == NONE || self.idx.pod_kind[p as usize] != PodKind::Movable {
            return;
        }
        self.owner_on_node[w as usize].bump(n, up);
        let z = self.node_zone.get(n as usize).copied().unwrap_or(NONE);
        if z != NONE {
            self.owner_in_zone[w as usize].bump(z, up);
        }
    }

    /// Marks a node whose wave is over: later placements prefer it.
    pub fn mark_done(&mut self, n: u32) {
        self.done.push(n);
    }

    fn topology_key(&mut self, key: &'a str) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.domain.len() as u32;
        let mut values: FxHashMap<String, u32> = FxHashMap::default();
        let doms = self
            .idx
            .snap
            .nodes
            .iter()
            .map(|n| match n.labels.get(key) {
                Some(v) => {
                    let len = values.len() as u32;
                    *values.entry(v.clone()).or_insert(len)
                }
                None => NONE,
            })
            .collect();
        self.domain.push(doms);
        self.domain_values.push(values);
        self.key_ids.insert(key, id);
        id
    }

    /// Number of nodes, snapshot's and added.
    pub fn n_nodes(&self) -> usize {
        self.free_cpu.len()
    }

    /// The node behind an id.
    pub fn node(&self, n: u32) -> Option<&Node> {
        let n = n as usize;
        let orig = self.idx.snap.nodes.len();
        if n < orig {
            self.idx.snap.nodes.get(n)
        } else {
            self.clones.get(n - orig)
        }
    }

    /// Name of a node id.
    pub fn node_name(&self, n: u32) -> &str {
        self.node(n).map_or("?", |n| n.name.as_str())
    }

    fn eligible(&mut self, class: u32) -> &[u32] {
        let c = class as usize;
        if self.classes[c].eligible.is_none() {
            let mut by_group: Vec<Option<bool>> = vec![None; self.n_groups];
            let mut list = Eligible {
                list: Vec::new(),
                bits: vec![0; self.n_nodes().div_ceil(64)],
            };
            for n in 0..self.n_nodes() as u32 {
                let Some(node) = self.node(n) else { continue };
                let cls = &self.classes[c];
                let ok = if cls.node_specific {
                    cls.admits(node)
                } else {
                    let g = self.node_group[n as usize] as usize;
                    match by_group.get(g).copied().flatten() {
                        Some(v) => v,
                        None => {
                            let v = cls.admits(node);
                            if let Some(slot) = by_group.get_mut(g) {
                                *slot = Some(v);
                            }
                            v
                        }
                    }
                };
                if ok {
                    list.push(n);
                }
            }
            self.classes[c].eligible = Some(list);
        }
        self.classes[c]
            .eligible
            .as_ref()
            .map_or(&[], |e| e.list.as_slice())
    }

    fn dom(&self, term: u32, node: u32) -> u32 {
        let key = self.terms[term as usize].key as usize;
        self.domain
            .get(key)
            .and_then(|d| d.get(node as usize))
            .copied()
            .unwrap_or(NONE)
    }

    fn apply_place(&mut self, p: u32, n: u32) {
        let pi = p as usize;
        let req = self.idx.snap.pods[pi].requests;
        self.pod_at[pi] = n;
        let ni = n as usize;
        self.free_cpu[ni] = self.free_cpu[ni].saturating_sub(req.cpu_millis);
        self.free_mem[ni] = self.free_mem[ni].saturating_sub(req.memory_bytes);
        self.free_pods[ni] -= 1;
        self.count_owner(p, n, true);
        if self.idx.pod_kind[pi] == PodKind::Movable {
            self.pos[pi] = self.node_movable[ni].len() as u32;
            self.node_movable[ni].push(p);
        }
        for i in 0..self.pod_match[pi].len() {
            let t = self.pod_match[pi][i];
            let d = self.dom(t, n);
            self.global[t as usize] += 1;
            if d != NONE {
                *self.matches.entry(dkey(t, d)).or_insert(0) += 1;
            }
        }
        for i in 0..self.pod_anti[pi].len() {
            let t = self.pod_anti[pi][i];
            let d = self.dom(t, n);
            if d != NONE {
                *self.holders.entry(dkey(t, d)).or_insert(0) += 1;
            }
        }
    }

    fn apply_unplace(&mut self, p: u32) -> u32 {
        let pi = p as usize;
        let n = self.pod_at[pi];
        if n == NONE {
            return NONE;
        }
        let ni = n as usize;
        let req = self.idx.snap.pods[pi].requests;
        self.free_cpu[ni] = self.free_cpu[ni].saturating_add(req.cpu_millis);
        self.free_mem[ni] = self.free_mem[ni].saturating_add(req.memory_bytes);
        self.free_pods[ni] += 1;
        self.pod_at[pi] = NONE;
        self.count_owner(p, n, false);
        if self.idx.pod_kind[pi] == PodKind::Movable {
            let at = self.pos[pi] as usize;
            let list = &mut self.node_movable[ni];
            if at < list.len() && list[at] == p {
                list.swap_remove(at);
                if let Some(&moved) = list.get(at) {
                    self.pos[moved as usize] = at as u32;
                }
            }
            self.pos[pi] = NONE;
        }
        for i in 0..self.pod_match[pi].len() {
            let t = self.pod_match[pi][i];
            let d = self.dom(t, n);
            self.global[t as usize] = self.global[t as usize].saturating_sub(1);
            if d != NONE
                && let Some(c) = self.matches.get_mut(&dkey(t, d))
            {
                *c = c.saturating_sub(1);
            }
        }
        for i in 0..self.pod_anti[pi].len() {
            let t = self.pod_anti[pi][i];
            let d = self.dom(t, n);
            if d != NONE
                && let Some(c) = self.holders.get_mut(&dkey(t, d))
            {
                *c = c.saturating_sub(1);
            }
        }
        n
    }

    /// Places `p` on `n` (journaled).
    pub fn place(&mut self, p: u32, n: u32) {
        self.apply_place(p, n);
        self.journal.push(Op::Place(p));
    }

    /// Removes `p` from its node (journaled).
    pub fn unplace(&mut self, p: u32) {
        let n = self.apply_unplace(p);
        if n != NONE {
            self.journal.push(Op::Unplace(p, n));
        }
    }

    /// Marks a node out of (or back into) the cluster for placement (journaled).
    pub fn set_out(&mut self, n: u32, out: bool) {
        let prev = self.out[n as usize];
        self.out[n as usize] = out;
        self.journal.push(Op::SetOut(n, prev));
    }

    /// Marks a node usable or not (journaled).
    pub fn set_usable(&mut self, n: u32, usable: bool) {
        let prev = self.usable[n as usize];
        self.usable[n as usize] = usable;
        self.journal.push(Op::SetUsable(n, prev));
    }

    /// Current journal position.
    pub fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every change after `mark`.
    pub fn rollback(&mut self, mark: usize) {
        while self.journal.len() > mark {
            let Some(op) = self.journal.pop() else { break };
            match op {
                Op::Place(p) => {
                    self.apply_unplace(p);
                }
                Op::Unplace(p, n) => self.apply_place(p, n),
                Op::SetOut(n, prev) => self.out[n as usize] = prev,
                Op::SetUsable(n, prev) => self.usable[n as usize] = prev,
            }
        }
    }

    /// Forgets the journal: the changes stay.
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    /// Whether `p` can run on `n` now, static constraints (taints, nodeSelector, node
    /// affinity) included.
    pub fn can_run(&mut self, p: u32, n: u32) -> bool {
        let class = self.pod_class[p as usize];
        if class == NONE {
            return false;
        }
        self.eligible(class);
        let eligible = self.classes[class as usize]
            .eligible
            .as_ref()
            .is_some_and(|e| e.contains(n));
        eligible && self.fits(p, n)
    }

    /// Whether `p` can run on `n` now, given that its static constraints allow `n`.
    fn fits(&self, p: u32, n: u32) -> bool {
        let ni = n as usize;
        if !self.usable[ni] || self.out[ni] {
            return false;
        }
        let req = self.idx.snap.pods[p as usize].requests;
        if self.free_pods[ni] < 1
            || self.free_cpu[ni] < req.cpu_millis
            || self.free_mem[ni] < req.memory_bytes
        {
            return false;
        }
        self.terms_allow(p, n)
    }

    fn terms_allow(&self, p: u32, n: u32) -> bool {
        let pi = p as usize;
        for &t in &self.pod_anti[pi] {
            let d = self.dom(t, n);
            if d != NONE && self.matches.get(&dkey(t, d)).copied().unwrap_or(0) > 0 {
                return false;
            }
        }
        for &t in &self.pod_match[pi] {
            if !self.terms[t as usize].anti {
                continue;
            }
            let d = self.dom(t, n);
            if d != NONE && self.holders.get(&dkey(t, d)).copied().unwrap_or(0) > 0 {
                return false;
            }
        }
        for &t in &self.pod_aff[pi] {
            let d = self.dom(t, n);
            let here = if d == NONE {
                0
            } else {
                self.matches.get(&dkey(t, d)).copied().unwrap_or(0)
            };
            if here == 0 {
                // The scheduler lets the first pod of a self-affine group go anywhere.
                let first_of_group =
                    self.global[t as usize] == 0 && self.pod_match[pi].contains(&t);
                if d == NONE || !first_of_group {
                    return false;
                }
            }
        }
        true
    }

    /// A node for `p`: the least allocated of the first few fitting nodes after the class's
    /// cursor. `None` when no node fits.
    pub fn find(&mut self, p: u32) -> Option<u32> {
        let class = self.pod_class[p as usize];
        if class == NONE {
            return None;
        }
        let len = self.eligible(class).len();
        if len == 0 {
            return None;
        }
        if let Some(n) = self.find_done(p, class) {
            return Some(n);
        }
        let start = self.classes[class as usize].cursor % len;
        // Best by (replicas of the workload on the node, in its zone, then least allocated).
        let mut best: Option<((u32, u32, f64), u32)> = None;
        let mut found = 0;
        let mut last = start;
        for i in 0..len {
            let at = (start + i) % len;
            let n = match self.classes[class as usize].eligible.as_ref() {
                Some(e) => e.list[at],
                None => return None,
            };
            last = at;
            if !self.fits(p, n) {
                continue;
            }
            let ni = n as usize;
            let (on_node, in_zone) = self.spread_counts(p, n);
            let free = self.free_cpu[ni] as f64 / self.alloc_cpu[ni] as f64
                + self.free_mem[ni] as f64 / self.alloc_mem[ni] as f64;
            let better = match &best {
                None => true,
                Some(((bn, bz, bf), _)) => (on_node, in_zone)
                    .cmp(&(*bn, *bz))
                    .then_with(|| bf.total_cmp(&free))
                    .is_lt(),
            };
            if better {
                best = Some(((on_node, in_zone, free), n));
            }
            found += 1;
            let spread = best.as_ref().is_some_and(|((bn, _, _), _)| *bn == 0);
            if (found >= CHOICES && spread) || found >= MAX_SPREAD_SCAN {
                break;
            }
        }
        self.classes[class as usize].cursor = (last + 1) % len;
        best.map(|(_, n)| n)
    }

    /// A node whose wave is over, without a replica of the pod's workload, if one fits among
    /// the next few.
    fn find_done(&mut self, p: u32, class: u32) -> Option<u32> {
        const DONE_SCAN: usize = 64;
        const DONE_CHOICES: usize = 2;
        let len = self.done.len();
        if len == 0 {
            return None;
        }
        let start = self.done_cursor % len;
        let mut best: Option<(f64, u32)> = None;
        let mut found = 0;
        let mut scanned = 0;
        for i in 0..len.min(DONE_SCAN) {
            let n = self.done[(start + i) % len];
            scanned = i + 1;
            let eligible = self.classes[class as usize]
                .eligible
                .as_ref()
                .is_some_and(|e| e.contains(n));
            if !eligible || !self.fits(p, n) || self.spread_counts(p, n).0 > 0 {
                continue;
            }
            let ni = n as usize;
            let free = self.free_cpu[ni] as f64 / self.alloc_cpu[ni] as f64
                + self.free_mem[ni] as f64 / self.alloc_mem[ni] as f64;
            if best.is_none_or(|(f, _)| free > f) {
                best = Some((free, n));
            }
            found += 1;
            if found >= DONE_CHOICES {
                break;
            }
        }
        self.done_cursor = (start + scanned) % len;
        best.map(|(_, n)| n)
    }

    /// Why `p` fits nowhere.
    pub fn diagnose(&mut self, p: u32) -> Diagnosis {
        let mut d = Diagnosis::default();
        let class = self.pod_class[p as usize];
        if class == NONE {
            return d;
        }
        let list = self.eligible(class).to_vec();
        let req = self.idx.snap.pods[p as usize].requests;
        d.eligible = list.len();
        for n in 0..self.n_nodes() {
            if self.usable[n] && !self.out[n] {
                d.nodes_available += 1;
                d.free_pod_slots = d.free_pod_slots.saturating_add(self.free_pods[n].max(0));
                d.free_cpu_millis = d.free_cpu_millis.saturating_add(self.free_cpu[n].max(0));
                d.free_memory_bytes = d.free_memory_bytes.saturating_add(self.free_mem[n].max(0));
            }
        }
        for n in list {
            let ni = n as usize;
            d.max_pods = d
                .max_pods
                .max(self.node(n).map_or(0, |node| node.allocatable.pods));
            if !self.usable[ni] || self.out[ni] {
                d.unavailable += 1;
            } else if self.free_pods[ni] < 1 {
                d.pods_full += 1;
            } else if self.free_cpu[ni] < req.cpu_millis {
                d.cpu_short += 1;
            } else if self.free_mem[ni] < req.memory_bytes {
                d.memory_short += 1;
            } else if !self.terms_allow(p, n) {
                if self.pod_aff[p as usize].is_empty() {
                    d.anti_affinity += 1;
                } else {
                    d.affinity += 1;
                }
            }
        }
        d
    }

    /// Nodes the static constraints (taints, nodeSelector, node affinity) of `p` allow.
    pub fn eligible_nodes(&mut self, p: u32) -> Vec<u32> {
        let class = self.pod_class[p as usize];
        if class == NONE {
            return Vec::new();
        }
        self.eligible(class).to_vec()
    }

    /// Whether the pod has required pod (anti-)affinity terms.
    pub fn has_pod_terms(&self, p: u32) -> bool {
        !self.pod_anti[p as usize].is_empty() || !self.pod_aff[p as usize].is_empty()
    }

    /// Adds (or re-activates) a new node like `n` for add-before-remove: same labels but its own
    /// hostname, same allocatable, running `n`'s DaemonSet pods. Journaled.
    pub fn activate_clone(&mut self, n: u32) -> u32 {
        if let Some(&c) = self.clone_of.get(&n) {
            self.set_usable(c, true);
            return c;
        }
        let Some(orig) = self.node(n).cloned() else {
            return NONE;
        };
        let mut node = orig.clone();
        node.name = format!("{}-new", orig.name);
        node.labels
            .insert(LABEL_HOSTNAME.to_string(), node.name.clone());
        node.unschedulable = false;
        node.conditions.clear();
        let id = self.n_nodes() as u32;
        let (mut cpu, mut mem, mut pods) = (
            orig.allocatable.cpu_millis,
            orig.allocatable.memory_bytes,
            orig.allocatable.pods,
        );
        if let Some(ps) = self.idx.pods_by_node.get(n as usize) {
            for &p in ps {
                if self.idx.pod_kind[p as usize] == PodKind::DaemonSet {
                    let r = self.idx.snap.pods[p as usize].requests;
                    cpu = cpu.saturating_sub(r.cpu_millis);
                    mem = mem.saturating_sub(r.memory_bytes);
                    pods -= 1;
                }
            }
        }
        self.free_cpu.push(cpu);
        self.free_mem.push(mem);
        self.free_pods.push(pods);
        self.alloc_cpu.push(orig.allocatable.cpu_millis.max(1));
        self.alloc_mem.push(orig.allocatable.memory_bytes.max(1));
        self.usable.push(false);
        self.out.push(false);
        self.node_group
            .push(self.node_group.get(n as usize).copied().unwrap_or(0));
        self.node_movable.push(Vec::new());
        let z = self.zone_id(&node);
        self.node_zone.push(z);
        for k in 0..self.domain.len() {
            let key = self
                .key_ids
                .iter()
                .find(|(_, v)| **v as usize == k)
                .map(|(name, _)| *name)
                .unwrap_or("");
            let dom = match node.labels.get(key) {
                Some(v) => {
                    let values = &mut self.domain_values[k];
                    let len = values.len() as u32;
                    *values.entry(v.clone()).or_insert(len)
                }
                None => NONE,
            };
            self.domain[k].push(dom);
        }
        for c in 0..self.classes.len() {
            let admits = self.classes[c].admits(&node);
            if admits && let Some(e) = self.classes[c].eligible.as_mut() {
                e.push(id);
            }
        }
        self.clones.push(node);
        self.clone_of.insert(n, id);
        self.set_usable(id, true);
        id
    }
}

#[cfg(test)]
mod tests {
    use theseus_model::selector::{LabelSelector, TaintEffect};
    use theseus_model::snapshot::{
        Affinity, Allocatable, ClusterSnapshot, ControllerRef, LABEL_ZONE, Pod, PodPhase,
        Resources, WorkloadKind,
    };

    use super::*;

    fn node(name: &str, zone: &str, cpu: i64, pods: i64) -> Node {
        Node {
            name: name.into(),
            labels: [
                (LABEL_HOSTNAME.to_string(), name.to_string()),
                (LABEL_ZONE.to_string(), zone.to_string()),
            ]
            .into_iter()
            .collect(),
            allocatable: Allocatable {
                cpu_millis: cpu,
                memory_bytes: 1 << 34,
                pods,
            },
            ..Default::default()
        }
    }

    fn pod(name: &str, app: &str, node: &str, cpu: i64) -> Pod {
        Pod {
            namespace: "ns".into(),
            name: name.into(),
            node_name: Some(node.into()),
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
            controller: Some(ControllerRef {
                kind: WorkloadKind::Deployment,
                name: app.into(),
            }),
            requests: Resources {
                cpu_millis: cpu,
                memory_bytes: 1 << 20,
            },
            phase: PodPhase::Running,
            ready: true,
            ..Default::default()
        }
    }

    fn anti(mut p: Pod, key: &str) -> Pod {
        let app = p.labels["app"].clone();
        p.affinity = Some(Affinity {
            pod_anti_affinity: vec![PodAffinityTerm {
                label_selector: LabelSelector::from_labels([("app", app.as_str())]),
                topology_key: key.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn resources_pod_slots_and_taints() {
        let mut tainted = node("t", "a", 4000, 10);
        tainted.taints.push(Taint {
            key: "dedicated".into(),
            value: None,
            effect: TaintEffect::NoSchedule,
        });
        let snap = ClusterSnapshot {
            nodes: vec![
                node("n1", "a", 4000, 10),
                node("full", "a", 4000, 1),
                node("small", "a", 500, 10),
                tainted,
            ],
            pods: vec![pod("p", "web", "n1", 1000), pod("q", "other", "full", 10)],
            ..Default::default()
        };
        let idx = Index::new(&snap, None);
        let mut pl = Placement::new(&idx);
        assert_eq!(pl.free_cpu[0], 3000);
        pl.unplace(0);
        assert!(pl.can_run(0, 0));
        assert!(!pl.can_run(0, 1), "no pod slot left");
        assert!(!pl.can_run(0, 2), "not enough CPU");
        assert!(!pl.can_run(0, 3), "taint not tolerated");
        pl.set_out(0, true);
        assert_eq!(pl.find(0), None);
        let d = pl.diagnose(0);
        assert_eq!(
            (d.eligible, d.unavailable, d.pods_full, d.cpu_short),
            (3, 1, 1, 1)
        );
        // Everything rolls back.
        pl.rollback(0);
        assert_eq!(pl.pod_at[0], 0);
        assert!(!pl.out[0]);
    }

    #[test]
    fn anti_affinity_both_ways_and_by_zone() {
        let snap = ClusterSnapshot {
            nodes: vec![
                node("a1", "a", 4000, 10),
                node("a2", "a", 4000, 10),
                node("b1", "b", 4000, 10),
            ],
            pods: vec![
                anti(pod("web-1", "web", "a1", 100), LABEL_HOSTNAME),
                anti(pod("web-2", "web", "a2", 100), LABEL_HOSTNAME),
                anti(pod("db-1", "db", "a1", 100), LABEL_ZONE),
                pod("db-2", "db", "b1", 100),
            ],
            ..Default::default()
        };
        let idx = Index::new(&snap, None);
        let mut pl = Placement::new(&idx);
        pl.unplace(0);
        // web-1 may not join web-2 on a2 (its own term), may go to b1.
        assert!(!pl.can_run(0, 1));
        assert!(pl.can_run(0, 2));
        // db-2 (no term of its own) may not go to zone a, where db-1 holds zone anti-affinity.
        pl.unplace(3);
        assert!(!pl.can_run(3, 1));
        assert!(pl.can_run(3, 2));
        assert_eq!(pl.find(3), Some(2));
    }
}

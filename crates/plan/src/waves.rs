//! Waves: which nodes go out together.
//!
//! Control-plane nodes go one per wave, in the order given (non-primary first, primary last).
//! Worker waves are built greedily: a wave starts with the first remaining node that can go out
//! alone, then takes every further node (in zone-interleaved order, or within one zone for
//! zone-by-zone) for which the wave as a whole still
//!
//! 1. keeps every PDB within `max_rounds` drain rounds: the ready pods the wave evicts that a
//!    PDB covers are at most `max_rounds ×` the disruptions it allows (counting surged
//!    replacements of single-replica Deployments as extra healthy pods); the engine's drains
//!    evict them one budget at a time, the API server refusing (429) the rest until the
//!    previous round's replacements are Ready, so a PDB is never exceeded; workloads without
//!    PDB keep a ready replica (`protectUnbudgeted`: the same rounds, enforced by the engine's
//!    guard instead of the API server);
//! 2. can place every displaced pod on the nodes that remain (see [`crate::placement`]), counting
//!    the nodes already out (not Ready, cordoned) and, for add-before-remove, the new nodes;
//! 3. stays within the cap (`maxUnavailable`).
//!
//! A node that cannot go out even alone is retried once at the end of its phase; if it still
//! cannot, it gets its own wave marked `blocked`, and the reason becomes a finding. A single-node
//! wave may evict any number of pods of a PDB that allows at least one (one budget at a time,
//! slower, never unsafe); a multi-node wave at most `max_rounds` budgets' worth.
//!
//! Why rounds instead of one budget per wave: a PDB's allowance comes back as soon as the
//! replacements are Ready (seconds), while a node action takes minutes. With budgets per wave,
//! a PDB of 10 pods on 10 nodes that allows 1 forces 10 waves of node actions; with rounds, one
//! wave of node actions whose drains take a few extra start-up times.
//!
//! Cost per wave: one budget check per candidate (O(pods on the node)) and one placement per
//! accepted node (O(pods on the node) placements); after a few consecutive placement failures
//! the wave closes. Over the whole plan that is O(waves × nodes × pods per node) cheap checks
//! plus O(pods) placements, never O(nodes × pods) per wave.

use theseus_model::plan::WaveKind;
use theseus_model::snapshot::WorkloadKind;

use crate::index::{Index, PodKind};
use crate::placement::{Diagnosis, Placement};
use crate::util::{FxHashMap, FxHashSet, NONE};

/// Consecutive placement failures after which a wave stops growing.
const MAX_PLACEMENT_FAILURES: usize = 8;
/// Orders tried for the last two waves (see [`WaveBuilder::worker_waves`]).
const TAIL_ATTEMPTS: usize = 4;

/// Why a node cannot go out (alone, or with the wave so far).
#[derive(Debug, Clone)]
pub enum Block {
    /// A budget would be exceeded (a PDB index, or an implicit budget of a workload).
    Budget(BudgetRef),
    /// An unready pod cannot be evicted: its PDB is below its minimum.
    Unevictable { pod: u32, budget: BudgetRef },
    /// A displaced pod fits nowhere.
    Placement { pod: u32, diagnosis: Diagnosis },
}

/// A budget: a PDB or the implicit one-replica budget of an unbudgeted workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRef {
    /// Index into `Index::pdbs`.
    Pdb(u32),
    /// Index into `Index::workloads`.
    Implicit(u32),
}

#[derive(Clone)]
struct BudgetDef {
    which: BudgetRef,
    allowed: i64,
    /// Some pod it covers is surged: its allowance grows with the wave, so it is checked once
    /// the whole node is counted.
    has_surge: bool,
    /// An unready pod it covers may be evicted.
    unready_ok: bool,
}

/// Per-pod state the budget check reads for every candidate of every wave, packed together.
#[derive(Debug, Clone, Copy)]
struct PodState {
    /// Node the pod was evicted from in this wave (`NONE`: not moved).
    moved_from: u32,
    /// Its budgets: `budget_list[start..start + len]`.
    start: u32,
    len: u32,
    ready: bool,
    surge: bool,
}

/// Inputs of the wave builder that come from the spec.
#[derive(Clone)]
pub struct WaveOptions {
    pub add_before_remove: bool,
    pub surge_single_replica: bool,
    pub protect_unbudgeted: bool,
    pub max_wave_size: usize,
    /// Drain rounds a multi-node wave may take per PDB: a wave may evict up to `allowed ×
    /// max_rounds` pods of a PDB, which the engine's drains then evict one budget at a time
    /// (each round waits for the previous round's replacements to be Ready: the API server
    /// refuses the rest with 429 meanwhile, and the engine's guard does the same for the
    /// implicit budgets of `protectUnbudgeted`). 1: never more than the budget allows at once.
    pub max_rounds: u32,
}

/// A wave as built.
#[derive(Debug, Clone)]
pub struct BuiltWave {
    pub kind: WaveKind,
    pub target_version: Option<String>,
    pub nodes: Vec<u32>,
    /// (pod, from, to); `to` is `NONE` for pods left pending.
    pub moves: Vec<(u32, u32, u32)>,
    /// Unmanaged pods deleted (pod, node).
    pub deleted: Vec<(u32, u32)>,
    /// Nodes added first (add-before-remove).
    pub added: Vec<u32>,
    pub surge_pods: u32,
    /// Drain rounds: how many budget-sized batches a single-node wave evicts in.
    pub rounds: u32,
    pub block: Option<Block>,
}

/// Builds waves over an evolving placement.
#[derive(Clone)]
pub struct WaveBuilder<'a> {
    idx: &'a Index<'a>,
    pub pl: Placement<'a>,
    opts: WaveOptions,
    defs: Vec<BudgetDef>,
    budget_list: Vec<u32>,
    pods: Vec<PodState>,
    evicted: Vec<i64>,
    surged: Vec<i64>,
    touched: Vec<u32>,
    /// Pods surged before their eviction (single-replica Deployments).
    pub pod_surge: Vec<bool>,
    // The wave being built.
    wave_nodes: Vec<u32>,
    moved_order: Vec<u32>,
    deleted: Vec<(u32, u32)>,
    added: Vec<u32>,
    pending: Vec<(u32, u32)>,
}

impl<'a> WaveBuilder<'a> {
    pub fn new(idx: &'a Index<'a>, opts: WaveOptions) -> Self {
        let snap = idx.snap;
        let n_pods = snap.pods.len();
        let pod_ready: Vec<bool> = snap.pods.iter().map(|p| p.ready).collect();
        let pod_surge: Vec<bool> = (0..n_pods)
            .map(|p| {
                opts.surge_single_replica
                    && idx.pod_kind[p] == PodKind::Movable
                    && idx
                        .workload_of(p as u32)
                        .is_some_and(|w| w.kind == WorkloadKind::Deployment && w.replicas == 1)
            })
            .collect();
        let mut defs = Vec::new();
        let mut pod_budgets: Vec<Vec<u32>> = vec![Vec::new(); n_pods];
        for (i, info) in idx.pdbs.iter().enumerate() {
            let b = defs.len() as u32;
            defs.push(BudgetDef {
                which: BudgetRef::Pdb(i as u32),
                allowed: info.allowed,
                has_surge: false,
                unready_ok: true,
            });
            for &p in &info.pods {
                pod_budgets[p as usize].push(b);
            }
        }
        if opts.protect_unbudgeted {
            for (wi, w) in idx.workloads.iter().enumerate() {
                let replicated = w.replicas >= 2
                    && !matches!(
                        w.kind,
                        WorkloadKind::DaemonSet | WorkloadKind::Job | WorkloadKind::CronJob
                    );
                if !replicated || w.pods.iter().any(|&p| !idx.pod_pdbs[p as usize].is_empty()) {
                    continue;
                }
                let healthy = w.pods.iter().filter(|&&p| pod_ready[p as usize]).count() as i64;
                let b = defs.len() as u32;
                defs.push(BudgetDef {
                    which: BudgetRef::Implicit(wi as u32),
                    allowed: (healthy - 1).max(0),
                    has_surge: false,
                    unready_ok: true,
                });
                for &p in &w.pods {
                    pod_budgets[p as usize].push(b);
                }
            }
        }
        for def in &mut defs {
            if let BudgetRef::Pdb(i) = def.which
                && let Some(info) = idx.pdbs.get(i as usize)
            {
                def.unready_ok = info.pdb.always_allow_unhealthy() || info.healthy >= info.desired;
                def.has_surge = info.pods.iter().any(|&p| pod_surge[p as usize]);
            }
        }
        let mut budget_list = Vec::new();
        let mut pods = Vec::with_capacity(n_pods);
        for (p, budgets) in pod_budgets.iter().enumerate() {
            pods.push(PodState {
                moved_from: NONE,
                start: budget_list.len() as u32,
                len: budgets.len() as u32,
                ready: pod_ready[p],
                surge: pod_surge[p],
            });
            budget_list.extend_from_slice(budgets);
        }
        drop(pod_budgets);
        let n_defs = defs.len();
        WaveBuilder {
            idx,
            pl: Placement::new(idx),
            opts,
            defs,
            budget_list,
            pods,
            evicted: vec![0; n_defs],
            surged: vec![0; n_defs],
            touched: Vec::new(),
            pod_surge,
            wave_nodes: Vec::new(),
            moved_order: Vec::new(),
            deleted: Vec::new(),
            added: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn allowed(&self, b: u32) -> i64 {
        let def = &self.defs[b as usize];
        let surge = self.surged[b as usize];
        match def.which {
            BudgetRef::Pdb(i) => self
                .idx
                .pdbs
                .get(i as usize)
                .map_or(def.allowed, |p| p.allowed_with(surge)),
            BudgetRef::Implicit(_) => def.allowed + surge,
        }
    }

    /// Whether the wave so far evicts more than a multi-node wave may (see
    /// [`WaveOptions::max_rounds`]).
    fn over_budget(&self) -> bool {
        self.touched.iter().any(|&b| self.violated(b, false))
    }

    fn violated(&self, b: u32, lone: bool) -> bool {
        let which = self.defs[b as usize].which;
        let evicted = self.evicted[b as usize];
        let allowed = self.allowed(b);
        match (lone, which) {
            (true, BudgetRef::Implicit(_)) => false,
            (true, BudgetRef::Pdb(_)) => evicted > 0 && allowed == 0,
            (false, _) => evicted > allowed.saturating_mul(i64::from(self.opts.max_rounds.max(1))),
        }
    }

    /// Adds the evictions of `n`'s pods (those not yet moved in this wave) to the budgets and
    /// checks them, stopping at the first budget exceeded; undoes the additions on failure.
    /// No allocation: this runs for every candidate of every wave. Within a wave the counts
    /// only grow, so a budget exceeded stays exceeded (except for surged budgets, which are
    /// checked once the whole node is counted).
    fn check_budgets(&mut self, n: u32, lone: bool) -> Result<(), Block> {
        let Some(pods) = self.pl.node_movable.get(n as usize) else {
            return Ok(());
        };
        let mut block = None;
        // (index of the pod in `pods`, budgets of it applied) where the check stopped.
        let mut stop = (pods.len(), 0usize);
        'apply: for (i, &p) in pods.iter().enumerate() {
            let st = self.pods[p as usize];
            if st.moved_from != NONE {
                continue;
            }
            let (r, s) = (i64::from(st.ready), i64::from(st.surge));
            for k in 0..st.len as usize {
                let b = self.budget_list[st.start as usize + k];
                let bi = b as usize;
                if self.evicted[bi] == 0 && self.surged[bi] == 0 {
                    self.touched.push(b);
                }
                self.evicted[bi] += r;
                self.surged[bi] += s;
                let def = &self.defs[bi];
                if !st.ready && !def.unready_ok {
                    block = Some(Block::Unevictable {
                        pod: p,
                        budget: def.which,
                    });
                } else if !def.has_surge && self.violated(b, lone) {
                    block = Some(Block::Budget(def.which));
                }
                if block.is_some() {
                    stop = (i, k + 1);
                    break 'apply;
                }
            }
        }
        if block.is_none() {
            'check: for &p in pods {
                let st = self.pods[p as usize];
                if st.moved_from != NONE {
                    continue;
                }
                for k in 0..st.len as usize {
                    let b = self.budget_list[st.start as usize + k];
                    if self.defs[b as usize].has_surge && self.violated(b, lone) {
                        block = Some(Block::Budget(self.defs[b as usize].which));
                        break 'check;
                    }
                }
            }
        }
        let Some(block) = block else { return Ok(()) };
        self.undo_budgets(n, stop);
        Err(block)
    }

    /// Takes the evictions of `n`'s not-yet-moved pods off the budgets, up to `stop` (index of
    /// the pod, number of its budgets applied); `(len, 0)` undoes them all.
    fn undo_budgets(&mut self, n: u32, stop: (usize, usize)) {
        let Some(pods) = self.pl.node_movable.get(n as usize) else {
            return;
        };
        for (i, &p) in pods.iter().enumerate().take(stop.0 + 1) {
            let st = self.pods[p as usize];
            if st.moved_from != NONE {
                continue;
            }
            let (r, s) = (i64::from(st.ready), i64::from(st.surge));
            let upto = if i == stop.0 { stop.1 } else { st.len as usize };
            for k in 0..upto {
                let b = self.budget_list[st.start as usize + k] as usize;
                self.evicted[b] -= r;
                self.surged[b] -= s;
            }
        }
    }

    fn sort_hardest_first(&self, pods: &mut [u32]) {
        let snap = self.idx.snap;
        pods.sort_by_key(|&p| {
            let r = snap.pods[p as usize].requests;
            (
                std::cmp::Reverse(self.pl.has_pod_terms(p)),
                std::cmp::Reverse(r.cpu_millis),
                std::cmp::Reverse(r.memory_bytes),
                p,
            )
        });
    }

    /// Takes `n` out and moves its pods; unplaceable pods are left pending when `force`,
    /// otherwise the first one aborts (the caller rolls back).
    fn evacuate(&mut self, n: u32, force: bool, diagnose: bool) -> Result<(), Block> {
        self.pl.set_out(n, true);
        if self.opts.add_before_remove {
            let c = self.pl.activate_clone(n);
            if c != NONE {
                self.added.push(c);
            }
        }
        let mut displaced = self
            .pl
            .node_movable
            .get(n as usize)
            .cloned()
            .unwrap_or_default();
        for &p in &displaced {
            self.pl.unplace(p);
        }
        if let Some(ps) = self.idx.pods_by_node.get(n as usize) {
            for &p in ps {
                if self.idx.pod_kind[p as usize] == PodKind::Unmanaged
                    && self.pl.pod_at[p as usize] == n
                {
                    self.pl.unplace(p);
                    self.deleted.push((p, n));
                }
            }
        }
        self.sort_hardest_first(&mut displaced);
        for p in displaced {
            match self.pl.find(p) {
                Some(dst) => self.pl.place(p, dst),
                None if force => self.pending.push((p, n)),
                None => {
                    // Only a lone node's failure becomes a finding; skip the O(nodes) diagnosis
                    // for candidates that merely do not fit into a growing wave.
                    let diagnosis = if diagnose {
                        self.pl.diagnose(p)
                    } else {
                        Diagnosis::default()
                    };
                    return Err(Block::Placement { pod: p, diagnosis });
                }
            }
        }
        Ok(())
    }

    /// Tries to add `n` to the wave being built.
    pub fn try_add(&mut self, n: u32) -> Result<(), Block> {
        let lone = self.wave_nodes.is_empty();
        self.check_budgets(n, lone)?;
        let new_pods: Vec<u32> = self
            .pl
            .node_movable
            .get(n as usize)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&p| self.pods[p as usize].moved_from == NONE)
                    .collect()
            })
            .unwrap_or_default();
        let mark = self.pl.mark();
        let (deleted_len, added_len) = (self.deleted.len(), self.added.len());
        if let Err(block) = self.evacuate(n, false, lone) {
            self.pl.rollback(mark);
            self.deleted.truncate(deleted_len);
            self.added.truncate(added_len);
            let all = self.pl.node_movable.get(n as usize).map_or(0, Vec::len);
            self.undo_budgets(n, (all, 0));
            return Err(block);
        }
        self.wave_nodes.push(n);
        for p in new_pods {
            self.pods[p as usize].moved_from = n;
            self.moved_order.push(p);
        }
        Ok(())
    }

    /// Takes `n` out alone whatever it costs (a blocked wave): pods that fit nowhere stay pending.
    pub fn force(&mut self, n: u32) {
        let new_pods: Vec<u32> = self
            .pl
            .node_movable
            .get(n as usize)
            .cloned()
            .unwrap_or_default();
        // Cannot fail when forced.
        let _ = self.evacuate(n, true, false);
        self.wave_nodes.push(n);
        for p in new_pods {
            if self.pods[p as usize].moved_from == NONE {
                self.pods[p as usize].moved_from = n;
                self.moved_order.push(p);
            }
        }
    }

    /// Closes the wave being built: its nodes come back (or are gone, add-before-remove), the
    /// moved pods are Ready where they landed.
    pub fn finish(
        &mut self,
        kind: WaveKind,
        target_version: Option<String>,
        block: Option<Block>,
    ) -> BuiltWave {
        let pending: FxHashMap<u32, u32> = self.pending.iter().copied().collect();
        let moves: Vec<(u32, u32, u32)> = self
            .moved_order
            .iter()
            .map(|&p| {
                let from = self.pods[p as usize].moved_from;
                let to = if pending.contains_key(&p) {
                    NONE
                } else {
                    self.pl.pod_at[p as usize]
                };
                (p, from, to)
            })
            .collect();
        let mut rounds = 1i64;
        for &b in &self.touched {
            let bi = b as usize;
            if self.evicted[bi] > 0 {
                let allowed = self.allowed(b).max(1);
                rounds = rounds.max((self.evicted[bi] + allowed - 1) / allowed);
            }
        }
        let surge_pods = moves
            .iter()
            .filter(|m| self.pod_surge[m.0 as usize])
            .count() as u32;
        self.pl.commit();
        let snap = self.idx.snap;
        for &n in &self.wave_nodes {
            if self.opts.add_before_remove {
                self.pl.set_usable(n, false);
            } else {
                self.pl.set_out(n, false);
                let back = snap
                    .nodes
                    .get(n as usize)
                    .is_none_or(|node| !node.unschedulable);
                self.pl.set_usable(n, back);
                if back {
                    self.pl.mark_done(n);
                }
            }
        }
        for &c in &self.added {
            self.pl.mark_done(c);
        }
        self.pl.commit();
        for &(p, _, to) in &moves {
            if to != NONE {
                self.pods[p as usize].ready = true;
            }
        }
        for &b in &self.touched {
            self.evicted[b as usize] = 0;
            self.surged[b as usize] = 0;
        }
        self.touched.clear();
        for &p in &self.moved_order {
            self.pods[p as usize].moved_from = NONE;
        }
        self.moved_order.clear();
        self.pending.clear();
        BuiltWave {
            kind,
            target_version,
            nodes: std::mem::take(&mut self.wave_nodes),
            moves,
            deleted: std::mem::take(&mut self.deleted),
            added: std::mem::take(&mut self.added),
            surge_pods,
            rounds: u32::try_from(rounds).unwrap_or(u32::MAX),
            block,
        }
    }

    /// One wave per node, in order (control plane).
    pub fn single_node_waves(
        &mut self,
        nodes: &[u32],
        kind: WaveKind,
        target: Option<String>,
    ) -> Vec<BuiltWave> {
        let mut out = Vec::with_capacity(nodes.len());
        for &n in nodes {
            match self.try_add(n) {
                Ok(()) => out.push(self.finish(kind, target.clone(), None)),
                Err(block) => {
                    self.force(n);
                    out.push(self.finish(kind, target.clone(), Some(block)));
                }
            }
        }
        out
    }

    /// Worker waves over `order`, as large as is safe and at most the cap.
    ///
    /// The last waves have no choice of nodes: a conflict among the leftovers (a budget, a pod
    /// that fits nowhere) costs a whole extra wave of node actions for a node or two. So when
    /// the remaining nodes would fit into two waves, the builder checkpoints; if the tail then
    /// takes more waves than the cap requires, it restarts from the checkpoint with the
    /// leftover nodes first (they seed the next-to-last wave), up to [`TAIL_ATTEMPTS`] times,
    /// and keeps the attempt with the fewest waves.
    pub fn worker_waves(&mut self, order: &[u32], target: Option<String>) -> Vec<BuiltWave> {
        let cap = self.opts.max_wave_size.max(1);
        let mut remaining: Vec<u32> = order.to_vec();
        let mut blocked: Vec<u32> = Vec::new();
        let mut waves = Vec::new();
        while !remaining.is_empty() {
            if remaining.len() > cap && remaining.len() <= 2 * cap {
                let (tail, tail_blocked) = self.tail(remaining, &target);
                waves.extend(tail);
                blocked.extend(tail_blocked);
                break;
            }
            match self.next_wave(&mut remaining, &mut blocked, cap, &target) {
                Some(w) => waves.push(w),
                None => break,
            }
        }
        waves.extend(self.blocked_waves(blocked, &target));
        waves
    }

    /// The last waves from a checkpoint (see [`WaveBuilder::worker_waves`]).
    fn tail(&mut self, remaining: Vec<u32>, target: &Option<String>) -> (Vec<BuiltWave>, Vec<u32>) {
        let cap = self.opts.max_wave_size.max(1);
        let need = remaining.len().div_ceil(cap);
        let checkpoint = self.clone();
        let mut order = remaining;
        let mut best: Option<(usize, Vec<BuiltWave>, Vec<u32>, WaveBuilder<'a>)> = None;
        for attempt in 0..TAIL_ATTEMPTS {
            if attempt > 0 {
                *self = checkpoint.clone();
            }
            let mut rest = order.clone();
            let mut blocked = Vec::new();
            let mut waves = Vec::new();
            while !rest.is_empty() {
                match self.next_wave(&mut rest, &mut blocked, cap, target) {
                    Some(w) => waves.push(w),
                    None => break,
                }
            }
            let count = waves.len() + blocked.len();
            let leftovers: Vec<u32> = waves
                .iter()
                .skip(need)
                .flat_map(|w| w.nodes.iter().copied())
                .chain(blocked.iter().copied())
                .collect();
            if best.as_ref().is_none_or(|b| count < b.0) {
                best = Some((count, waves, blocked, self.clone()));
            }
            if count <= need || leftovers.is_empty() {
                break;
            }
            // The leftovers first, then the rest in the previous order.
            let first: FxHashSet<u32> = leftovers.iter().copied().collect();
            order = leftovers
                .into_iter()
                .chain(order.into_iter().filter(|n| !first.contains(n)))
                .collect();
        }
        let Some((_, waves, blocked, state)) = best else {
            return (Vec::new(), Vec::new());
        };
        *self = state;
        (waves, blocked)
    }

    /// Builds the next wave from `remaining` (its seed is the first node that can go out
    /// alone; the ones before it go to `blocked`). `None` when no node can go out alone.
    fn next_wave(
        &mut self,
        remaining: &mut Vec<u32>,
        blocked: &mut Vec<u32>,
        cap: usize,
        target: &Option<String>,
    ) -> Option<BuiltWave> {
        let mut seeded = false;
        while !remaining.is_empty() {
            let n = remaining.remove(0);
            if self.try_add(n).is_ok() {
                seeded = true;
                break;
            }
            blocked.push(n);
        }
        if !seeded {
            return None;
        }
        // A seed that alone exceeds a budget drains one budget at a time; nothing may join it.
        let grow = !self.over_budget();
        let mut kept = Vec::with_capacity(remaining.len());
        let mut failures = 0;
        let mut iter = std::mem::take(remaining).into_iter();
        for n in iter.by_ref() {
            if !grow || self.wave_nodes.len() >= cap || failures >= MAX_PLACEMENT_FAILURES {
                kept.push(n);
                break;
            }
            match self.try_add(n) {
                Ok(()) => failures = 0,
                Err(Block::Placement { .. }) => {
                    failures += 1;
                    kept.push(n);
                }
                Err(_) => kept.push(n),
            }
        }
        kept.extend(iter);
        *remaining = kept;
        Some(self.finish(WaveKind::Workers, target.clone(), None))
    }

    /// Nodes that could not go out even alone: retried alone, else forced into a blocked wave.
    fn blocked_waves(&mut self, blocked: Vec<u32>, target: &Option<String>) -> Vec<BuiltWave> {
        let mut waves = Vec::new();
        for n in blocked {
            match self.try_add(n) {
                Ok(()) => waves.push(self.finish(WaveKind::Workers, target.clone(), None)),
                Err(block) => {
                    self.force(n);
                    waves.push(self.finish(WaveKind::Workers, target.clone(), Some(block)));
                }
            }
        }
        waves
    }
}

//! Which nodes a migration touches, and in which order the control-plane nodes go.

use theseus_model::snapshot::PrimarySource;
use theseus_model::spec::{Migration, OperationKind};

use crate::index::Index;
use crate::util::{FxHashSet, natural_cmp};

/// The selection.
#[derive(Debug, Default)]
pub struct Selected {
    /// Control-plane nodes in migration order: non-primary first (inventory order, else by
    /// name), the primary last.
    pub control_plane: Vec<u32>,
    /// Worker nodes by name.
    pub workers: Vec<u32>,
    /// Selected but already at the target.
    pub skipped: Vec<u32>,
    /// The primary control-plane node of the cluster and how it was found.
    pub primary: Option<(String, PrimarySource)>,
    /// Names in `spec.nodes.names` (or relocation moves) the snapshot lacks.
    pub unknown_names: Vec<String>,
    /// Every control-plane node of the cluster, in migration order.
    pub all_control_plane: Vec<u32>,
}

impl Selected {
    /// Every selected node that is planned.
    pub fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.workers
            .iter()
            .chain(self.control_plane.iter())
            .copied()
    }

    /// Whether node `n` is planned.
    pub fn contains(&self, n: u32) -> bool {
        self.workers.contains(&n) || self.control_plane.contains(&n)
    }
}

fn role_matches(idx: &Index<'_>, n: usize, role: &str) -> bool {
    let node = &idx.snap.nodes[n];
    match role {
        "control-plane" | "master" | "controlplane" => idx.is_cp[n],
        "worker" | "node" => !idx.is_cp[n],
        other => node.roles.iter().any(|r| r == other),
    }
}

/// Applies `spec.nodes` (or the relocation's moves) to the snapshot.
pub fn select(idx: &Index<'_>, mig: &Migration) -> Selected {
    let snap = idx.snap;
    let spec = &mig.spec;
    let sel = &spec.nodes;
    let mut out = Selected {
        primary: snap.control_plane.implied_primary(&snap.nodes),
        ..Default::default()
    };
    let relocation = spec.operation.control_plane_relocation.as_ref();
    let wanted: Option<FxHashSet<&str>> = match relocation {
        Some(r) => Some(r.moves.iter().map(|m| m.from.as_str()).collect()),
        None => sel
            .names
            .as_ref()
            .map(|names| names.iter().map(String::as_str).collect()),
    };
    if let Some(w) = &wanted {
        let mut unknown: Vec<String> = w
            .iter()
            .filter(|n| !idx.node_id.contains_key(**n))
            .map(|n| n.to_string())
            .collect();
        unknown.sort_by(|a, b| natural_cmp(a, b));
        out.unknown_names = unknown;
    }
    let excluded: FxHashSet<&str> = sel.exclude.iter().map(String::as_str).collect();
    let op = spec.operation.kind();
    let mut chosen = Vec::new();
    for (i, node) in snap.nodes.iter().enumerate() {
        if excluded.contains(node.name.as_str()) {
            continue;
        }
        if let Some(w) = &wanted
            && !w.contains(node.name.as_str())
        {
            continue;
        }
        if relocation.is_none() {
            if let Some(roles) = &sel.roles
                && !roles.iter().any(|r| role_matches(idx, i, r))
            {
                continue;
            }
            if let Some(s) = &sel.selector
                && !s.matches(&node.labels)
            {
                continue;
            }
        }
        let at_target = match (op, spec.operation.os_migration.as_ref()) {
            (Some(OperationKind::OsMigration), Some(os)) => {
                node.os_image == os.target_os_image
                    && os
                        .target_kernel_version
                        .as_ref()
                        .is_none_or(|k| *k == node.kernel_version)
            }
            _ => false,
        };
        if at_target {
            out.skipped.push(i as u32);
        } else {
            chosen.push(i as u32);
        }
    }
    // Control-plane order: inventory order when there is one, else by name; primary last.
    let inventory: Vec<&str> = snap
        .control_plane
        .inventory
        .as_ref()
        .map(|inv| inv.kube_control_plane.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let primary = out.primary.as_ref().map(|(p, _)| p.clone());
    let cp_order = |nodes: &mut Vec<u32>| {
        nodes.sort_by(|&a, &b| {
            let (na, nb) = (&snap.nodes[a as usize].name, &snap.nodes[b as usize].name);
            let pa = primary.as_deref() == Some(na.as_str());
            let pb = primary.as_deref() == Some(nb.as_str());
            let ia = inventory
                .iter()
                .position(|x| *x == na)
                .unwrap_or(usize::MAX);
            let ib = inventory
                .iter()
                .position(|x| *x == nb)
                .unwrap_or(usize::MAX);
            pa.cmp(&pb)
                .then(ia.cmp(&ib))
                .then_with(|| natural_cmp(na, nb))
        });
    };
    let mut cp: Vec<u32> = chosen
        .iter()
        .copied()
        .filter(|&n| idx.is_cp[n as usize])
        .collect();
    cp_order(&mut cp);
    let mut workers: Vec<u32> = chosen
        .into_iter()
        .filter(|&n| !idx.is_cp[n as usize])
        .collect();
    workers
        .sort_by(|&a, &b| natural_cmp(&snap.nodes[a as usize].name, &snap.nodes[b as usize].name));
    let mut all_cp: Vec<u32> = (0..snap.nodes.len() as u32)
        .filter(|&n| idx.is_cp[n as usize])
        .collect();
    cp_order(&mut all_cp);
    out.control_plane = cp;
    out.workers = workers;
    out.all_control_plane = all_cp;
    out
}

//! Duration estimates: per wave and for the whole migration, with a lower bound.
//!
//! A wave takes: cordon (5 s), the surge of single-replica Deployments (their start-up time),
//! the longest grace period of the evicted pods plus the longest start-up time of their
//! replacements (the engine waits for replacements Ready before acting), for each further drain
//! round one more start-up time and [`ROUND_OVERHEAD_SECONDS`] (a PDB's allowance comes back
//! when the previous round's replacements are Ready, and the drain notices within about a
//! second), the node action (provider's `expectedActionDuration`, else a default per operation)
//! and the gates' soak time. Nodes of a wave work in parallel, waves run one after another.

use theseus_model::snapshot::ClusterSnapshot;
use theseus_model::spec::{Migration, OperationKind};

use crate::util::NONE;
use crate::waves::BuiltWave;

/// Grace period of a pod that does not set one (Kubernetes' default).
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// Start-up time of a pod whose start-up was not observed.
pub const DEFAULT_STARTUP_SECONDS: u64 = 10;
/// Cordon and bookkeeping per wave.
pub const CORDON_SECONDS: u64 = 5;
/// Per extra drain round beyond the replacements' start-up: the disruption controller updating
/// the PDB's status and the drain noticing it.
pub const ROUND_OVERHEAD_SECONDS: u64 = 2;
/// Share (percent) of a wave's fixed time (cordon, node action, soak) that extra drain rounds
/// may add: the price of one larger wave instead of more waves.
pub const MAX_ROUNDS_SHARE_PERCENT: u64 = 20;
/// Upper limit of drain rounds per wave, whatever the timing.
pub const MAX_DRAIN_ROUNDS: u32 = 32;

/// Timing inputs from the spec.
#[derive(Debug, Clone)]
pub struct Timing {
    pub worker_action: u64,
    pub control_plane_action: u64,
    pub soak: u64,
    pub grace_override: Option<u64>,
    pub drain_timeout: u64,
}

impl Timing {
    /// From the spec, with defaults per operation: osMigration 20m, upgrade 5m (control plane
    /// 10m), maintenance 5m, controlPlaneRelocation 30m.
    pub fn from_spec(mig: &Migration) -> Self {
        let (worker, cp) = match mig.spec.operation.kind() {
            Some(OperationKind::OsMigration) => (1200, 1200),
            Some(OperationKind::Upgrade) => (300, 600),
            Some(OperationKind::ControlPlaneRelocation) => (1800, 1800),
            Some(OperationKind::Maintenance) | None => (300, 300),
        };
        let given = mig
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.expected_action_duration)
            .map(|d| d.seconds());
        Timing {
            worker_action: given.unwrap_or(worker),
            control_plane_action: given.unwrap_or(cp),
            soak: mig.spec.gates.soak.seconds(),
            grace_override: u64::try_from(mig.spec.drain.grace_period_seconds).ok(),
            drain_timeout: mig.spec.drain.timeout.seconds(),
        }
    }
}

/// Estimated time of one wave.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaveTime {
    pub total: u64,
    pub drain: u64,
}

/// Grace period a drain gives `pod`.
pub fn grace_of(snap: &ClusterSnapshot, pod: u32, t: &Timing) -> u64 {
    t.grace_override.unwrap_or_else(|| {
        snap.pods
            .get(pod as usize)
            .and_then(|p| p.termination_grace_period_seconds)
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(DEFAULT_GRACE_SECONDS)
    })
}

/// Start-up time of `pod`'s replacement.
pub fn startup_of(snap: &ClusterSnapshot, pod: u32) -> u64 {
    snap.pods
        .get(pod as usize)
        .and_then(|p| p.startup_seconds)
        .map_or(DEFAULT_STARTUP_SECONDS, u64::from)
}

/// Estimate of one wave.
pub fn wave_time(
    snap: &ClusterSnapshot,
    wave: &BuiltWave,
    surge: &[bool],
    action: u64,
    t: &Timing,
) -> WaveTime {
    let mut grace = 0;
    let mut startup = 0;
    let mut surge_startup = 0;
    let mut any = false;
    for &(p, _, to) in &wave.moves {
        any = true;
        grace = grace.max(grace_of(snap, p, t));
        if to != NONE {
            let s = startup_of(snap, p);
            startup = startup.max(s);
            if surge.get(p as usize).copied().unwrap_or(false) {
                surge_startup = surge_startup.max(s);
            }
        }
    }
    if !wave.deleted.is_empty() {
        any = true;
        for &(p, _) in &wave.deleted {
            grace = grace.max(grace_of(snap, p, t));
        }
    }
    let drain = if any {
        let extra = u64::from(wave.rounds.max(1) - 1)
            .saturating_mul(startup.saturating_add(ROUND_OVERHEAD_SECONDS));
        grace
            .saturating_add(startup)
            .saturating_add(extra)
            .saturating_add(surge_startup)
    } else {
        0
    };
    WaveTime {
        total: CORDON_SECONDS
            .saturating_add(drain)
            .saturating_add(action)
            .saturating_add(t.soak),
        drain,
    }
}

/// Drain rounds a multi-node worker wave may take per PDB (see
/// [`crate::waves::WaveOptions::max_rounds`]): as many as fit, each one the longest start-up
/// time of a budgeted pod on the workers plus [`ROUND_OVERHEAD_SECONDS`], into
/// [`MAX_ROUNDS_SHARE_PERCENT`] of a wave's fixed time, and into half the drain timeout.
pub fn max_drain_rounds(
    snap: &ClusterSnapshot,
    idx: &crate::index::Index<'_>,
    workers: &[u32],
    t: &Timing,
) -> u32 {
    let mut startup = 0;
    for &n in workers {
        for &p in idx
            .pods_by_node
            .get(n as usize)
            .map_or(&[][..], Vec::as_slice)
        {
            if idx.pod_kind[p as usize] == crate::index::PodKind::Movable
                && !idx.pod_pdbs[p as usize].is_empty()
            {
                startup = startup.max(startup_of(snap, p));
            }
        }
    }
    let round = startup.saturating_add(ROUND_OVERHEAD_SECONDS).max(1);
    let fixed = CORDON_SECONDS
        .saturating_add(t.worker_action)
        .saturating_add(t.soak);
    let by_share = 1 + fixed.saturating_mul(MAX_ROUNDS_SHARE_PERCENT) / 100 / round;
    let by_timeout = (t.drain_timeout / 2 / round).max(1);
    u32::try_from(by_share.min(by_timeout))
        .unwrap_or(MAX_DRAIN_ROUNDS)
        .clamp(1, MAX_DRAIN_ROUNDS)
}

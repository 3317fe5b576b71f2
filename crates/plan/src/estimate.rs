//! Duration estimates: per wave and for the whole migration, with a lower bound.
//!
//! A wave takes: cordon (5 s), the surge of single-replica Deployments (their start-up time),
//! then per drain round the longest grace period of the evicted pods plus the longest start-up
//! time of their replacements (the engine waits for replacements Ready before acting), the node
//! action (provider's `expectedActionDuration`, else a default per operation) and the gates'
//! soak time. Nodes of a wave work in parallel, waves run one after another.

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
        u64::from(wave.rounds.max(1))
            .saturating_mul(grace.saturating_add(startup))
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

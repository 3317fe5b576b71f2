//! The run: preflight, the cluster lock, waves in order with their nodes in parallel, gates
//! between waves, pause/abort requests, the SLO guard, and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use theseus_cluster::{LeaseOutcome, NodeState, Ops};
use theseus_journal::{Entry, Journal, Mark, Request, RunRecord, RunState};
use theseus_model::plan::{Plan, Severity, WaveKind};
use theseus_model::spec::{Migration, OperationKind};
use theseus_providers::{Action, Provider};
use tokio::time::Instant;

use crate::availability::Availability;
use crate::clock::Clock;
use crate::error::EngineError;
use crate::events::{Event, EventSink, Stamped};
use crate::report::{NodeLeft, ProbeResult, Report};
use crate::step::{Step, StepOutcome};

/// Knobs of a run that are not part of the migration spec.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How often waits look at the cluster.
    pub poll: Duration,
    /// The lock: a Lease `lease_namespace/lease_name`, renewed every third of its duration.
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_seconds: i32,
    /// The SLO guard: pause when, over `slo_window`, failed probe requests exceed
    /// `slo_max_failure_rate` (0.01 = 1 %) of a probe's requests. None: no guard.
    pub slo_max_failure_rate: Option<f64>,
    pub slo_window: Duration,
    /// Gates between waves wait at most this long before the run pauses.
    pub gate_timeout: Duration,
    /// After a surge replica is Ready, how long to wait before the old pod goes: Service
    /// endpoints take a moment to reach every kube-proxy, and until then clients still route
    /// to the old pod only.
    pub endpoint_settle: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            poll: Duration::from_secs(1),
            lease_namespace: "kube-system".into(),
            lease_name: "theseus".into(),
            lease_seconds: 60,
            slo_max_failure_rate: Some(0.01),
            slo_window: Duration::from_secs(60),
            gate_timeout: Duration::from_secs(600),
            endpoint_settle: Duration::from_secs(5),
        }
    }
}

/// Everything a run needs.
pub struct EngineParams {
    pub migration: Migration,
    pub plan: Plan,
    /// Identifies the run (journal, Lease holder, `theseus.io/cordoned-by`).
    pub run_id: String,
    pub ops: Ops,
    pub provider: Arc<dyn Provider>,
    pub journal: Arc<Journal>,
    /// Probes (and the simulator's recorder); None: no availability measurement.
    pub availability: Option<Arc<dyn Availability>>,
    pub events: EventSink,
    pub options: EngineOptions,
}

/// State shared by the run and its node steps.
pub(crate) struct Ctx {
    pub migration: Migration,
    pub plan: Plan,
    pub run_id: String,
    pub ops: Ops,
    pub provider: Arc<dyn Provider>,
    pub journal: Arc<Journal>,
    pub events: EventSink,
    pub options: EngineOptions,
    pub clock: Clock,
    /// `theseus abort`: steps stop before acting on a machine.
    pub abort: AtomicBool,
    /// A node of the running wave failed: the others stop before acting on a machine.
    pub halt: AtomicBool,
    pub evictions: AtomicU64,
    pub refused: AtomicU64,
    pub surged: AtomicU64,
    pub actions: AtomicU64,
    /// `protectUnbudgeted` across every drain of the run.
    pub unbudgeted: crate::guard::UnbudgetedGuard,
}

impl Ctx {
    pub fn emit(&self, event: Event) {
        (self.events)(&Stamped {
            at: self.clock.elapsed(),
            event,
        });
    }

    /// The node action of a wave.
    pub fn action_for(&self, wave: u32) -> Action {
        let op = &self.migration.spec.operation;
        if let Some(m) = &op.os_migration {
            let kubelet = op.upgrade.as_ref().map(|u| u.target_version.to_string());
            return Action::OsMigration {
                os_image: m.target_os_image.clone(),
                kernel_version: m.target_kernel_version.clone(),
                kubelet_version: kubelet,
            };
        }
        if let Some(u) = &op.upgrade {
            let target = self
                .plan
                .waves
                .iter()
                .find(|w| w.index == wave)
                .and_then(|w| w.target_version.clone())
                .unwrap_or_else(|| u.target_version.to_string());
            return Action::Upgrade {
                kubelet_version: target,
            };
        }
        Action::Reboot
    }

    /// Whether a node is at the action's target.
    pub(crate) fn at_target(&self, n: &NodeState, action: &Action, before: &impl BootOf) -> bool {
        match action {
            Action::OsMigration {
                os_image,
                kubelet_version,
                ..
            }
            | Action::Provision {
                os_image,
                kubelet_version,
                ..
            } => {
                n.os_image == *os_image
                    && kubelet_version
                        .as_ref()
                        .is_none_or(|k| same_version(&n.kubelet_version, k))
            }
            Action::Upgrade { kubelet_version } => {
                same_version(&n.kubelet_version, kubelet_version)
            }
            Action::Reboot | Action::Decommission => n.boot_id != before.boot_id(),
        }
    }

    pub(crate) fn target_text(&self, action: &Action) -> String {
        match action {
            Action::OsMigration { os_image, .. } | Action::Provision { os_image, .. } => {
                format!("OS {os_image:?}")
            }
            Action::Upgrade { kubelet_version } => format!("kubelet {kubelet_version}"),
            Action::Reboot | Action::Decommission => "a new boot".into(),
        }
    }

    /// The name of the node that replaces `node` in add-before-remove: stable for the run, so
    /// that a resumed run finds the one it provisioned.
    pub(crate) fn replacement_name(&self, node: &str) -> String {
        let tag: String = self
            .run_id
            .chars()
            .rev()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
            .to_ascii_lowercase();
        format!("{node}-r{tag}")
    }
}

/// The boot ID a node had before its action (for reboots).
pub(crate) trait BootOf {
    fn boot_id(&self) -> &str;
}

fn same_version(have: &str, want: &str) -> bool {
    have.trim_start_matches('v') == want.trim_start_matches('v')
}

/// The journal's record of a new run: the migration and its plan, so that `resume` carries out
/// exactly what was approved.
pub fn run_record(
    run_id: &str,
    migration: &Migration,
    plan: &Plan,
    cluster: &str,
) -> Result<RunRecord, EngineError> {
    let to_json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| EngineError::Refused(format!("cannot record the {what}: {e}")))
    };
    Ok(RunRecord {
        run_id: run_id.to_string(),
        migration_name: migration.metadata.name.clone(),
        // JSON is YAML: `Migration::from_yaml` reads it back.
        migration_yaml: to_json("migration", serde_json::to_string_pretty(migration))?,
        plan_json: to_json("plan", serde_json::to_string(plan))?,
        cluster: cluster.to_string(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state: RunState::Running,
    })
}

/// The run id, migration and plan a journal holds.
pub fn load_run(journal: &Journal) -> Result<(String, Migration, Plan), EngineError> {
    let r = journal.run()?;
    let migration = Migration::from_yaml(&r.migration_yaml).map_err(|e| {
        EngineError::Refused(format!(
            "the journal {} holds a migration this version cannot read: {e}",
            journal.path().display()
        ))
    })?;
    let plan: Plan = serde_json::from_str(&r.plan_json).map_err(|e| {
        EngineError::Refused(format!(
            "the journal {} holds a plan this version cannot read: {e}",
            journal.path().display()
        ))
    })?;
    Ok((r.run_id, migration, plan))
}

/// A run of a migration plan. See the crate documentation.
pub struct Engine {
    ctx: Arc<Ctx>,
    availability: Option<Arc<dyn Availability>>,
}

impl Engine {
    pub fn new(p: EngineParams) -> Engine {
        Engine {
            ctx: Arc::new(Ctx {
                migration: p.migration,
                plan: p.plan,
                run_id: p.run_id,
                ops: p.ops,
                provider: p.provider,
                journal: p.journal,
                events: p.events,
                options: p.options,
                clock: Clock::start(),
                abort: AtomicBool::new(false),
                halt: AtomicBool::new(false),
                evictions: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                surged: AtomicU64::new(0),
                actions: AtomicU64::new(0),
                unbudgeted: crate::guard::UnbudgetedGuard::default(),
            }),
            availability: p.availability,
        }
    }

    /// Node actions carried out by this engine (not counting reconciled ones).
    pub fn actions(&self) -> u64 {
        self.ctx.actions.load(Ordering::SeqCst)
    }

    /// Checks that the plan can run: no error finding, an operation the engine carries out.
    pub fn preflight(migration: &Migration, plan: &Plan) -> Result<(), EngineError> {
        if plan.is_blocked() {
            let errors: Vec<String> = plan
                .findings_of(Severity::Error)
                .map(|f| format!("{:?}: {}", f.code, f.message))
                .collect();
            return Err(EngineError::Refused(format!(
                "the plan has errors: {}; run `theseus plan` for details",
                errors.join("; ")
            )));
        }
        let kind = migration.spec.operation.kinds();
        if kind.contains(&OperationKind::ControlPlaneRelocation) {
            return Err(EngineError::Refused(
                "controlPlaneRelocation is not carried out by `apply` yet (use `theseus etcd replace` for the etcd members)".into(),
            ));
        }
        if let Some(m) = &migration.spec.operation.maintenance
            && m.action != "reboot"
        {
            return Err(EngineError::Refused(format!(
                "maintenance action {:?} is not known to the engine; the supported action is `reboot`",
                m.action
            )));
        }
        if kind.contains(&OperationKind::OsMigration)
            && plan.waves.iter().any(|w| w.kind == WaveKind::ControlPlane)
        {
            return Err(EngineError::Refused(
                "an OS migration of control-plane nodes needs their etcd members replaced, which `apply` does not do yet; select the workers (spec.nodes.roles: [worker]) and move etcd members with `theseus etcd replace`".into(),
            ));
        }
        Ok(())
    }

    /// Runs the plan (or resumes it: nodes the journal shows done are skipped, a node caught
    /// mid-step is reconciled with the cluster) until it completes, pauses or is aborted.
    pub async fn run(&self) -> Result<Report, EngineError> {
        let ctx = &self.ctx;
        Self::preflight(&ctx.migration, &ctx.plan)?;
        // The lock.
        let o = &ctx.options;
        match ctx
            .ops
            .acquire_lease(
                &o.lease_namespace,
                &o.lease_name,
                &ctx.run_id,
                o.lease_seconds,
                ctx.clock.now(),
            )
            .await?
        {
            LeaseOutcome::Acquired => {}
            LeaseOutcome::HeldBy {
                holder,
                expires_in_seconds,
                ..
            } => {
                return Err(EngineError::Locked {
                    namespace: o.lease_namespace.clone(),
                    name: o.lease_name.clone(),
                    holder,
                    expires_in_seconds,
                });
            }
        }
        let baseline = self.baseline().await;
        let background = Background::start(ctx.clone(), self.availability.clone());
        let result = self.waves().await;
        background.stop();
        let _ = ctx
            .ops
            .release_lease(&o.lease_namespace, &o.lease_name, &ctx.run_id)
            .await;
        let (state, reason) = result?;
        ctx.journal.set_state(state)?;
        if matches!(state, RunState::Completed | RunState::Aborted) {
            ctx.journal.clear_request()?;
        }
        let mut report = self.report(state, reason).await?;
        if let Some(a) = &self.availability {
            let now = a.totals().await.unwrap_or_default();
            report.probes = delta(&baseline, &now);
            report.probe_failures = report.probes.iter().map(|p| p.failures).sum();
            if let Ok(Some(v)) = a.violations().await {
                report.pdb_violations =
                    Some(v.iter().filter(|x| x["kind"] == "PdbBelowMinimum").count() as u64);
                report.lost_pods = Some(
                    v.iter()
                        .filter(|x| x["kind"] == "ControllerBelowReplicas")
                        .count() as u64,
                );
                report.violations = v;
            }
        }
        ctx.emit(Event::RunFinished {
            state: report.state.clone(),
        });
        Ok(report)
    }

    fn done_nodes(&self) -> Result<BTreeSet<String>, EngineError> {
        Ok(self
            .ctx
            .journal
            .node_states()?
            .into_iter()
            .filter(|(_, e)| e.phase == "done" && e.mark == Mark::Done)
            .map(|(n, _)| n)
            .collect())
    }

    async fn waves(&self) -> Result<(RunState, Option<String>), EngineError> {
        let ctx = &self.ctx;
        let done = self.done_nodes()?;
        let entries = ctx.journal.entries()?;
        let resumed = !entries.is_empty();
        let nodes: usize = ctx.plan.waves.iter().map(|w| w.nodes.len()).sum();
        ctx.journal.set_state(RunState::Running)?;
        // A resume clears the pause that stopped the previous process.
        if resumed && matches!(ctx.journal.request()?, Some((Request::Pause, _))) {
            ctx.journal.clear_request()?;
        }
        ctx.emit(Event::RunStarted {
            run_id: ctx.run_id.clone(),
            migration: ctx.migration.metadata.name.clone(),
            waves: ctx.plan.waves.len(),
            nodes,
            resumed,
            already_done: done.len(),
        });
        // Manual approval: a resume approves the wave the run paused for.
        let mut approved: BTreeSet<u32> = BTreeSet::new();
        let mut pending = None;
        for e in entries
            .iter()
            .filter(|e| e.node.is_none() && e.phase == "approval")
        {
            match e.mark {
                Mark::Done => {
                    approved.extend(e.wave);
                    pending = None;
                }
                Mark::Intent => pending = e.wave,
                _ => {}
            }
        }
        if let Some(w) = pending {
            ctx.journal.append(&Entry {
                seq: 0,
                at: ctx.clock.rfc3339(),
                node: None,
                wave: Some(w),
                phase: "approval".into(),
                mark: Mark::Done,
                detail: json!({"by": "resume"}),
            })?;
            approved.insert(w);
        }
        let mut history: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            if let Some(n) = &e.node {
                history.entry(n.clone()).or_default().push(e);
            }
        }
        let mut first = true;
        for wave in &ctx.plan.waves {
            let todo: Vec<&String> = wave.nodes.iter().filter(|n| !done.contains(*n)).collect();
            if todo.is_empty() {
                continue;
            }
            if let Some(stop) = self.check_requests()? {
                return Ok(stop);
            }
            if self.needs_approval(wave) && !approved.contains(&wave.index) {
                ctx.journal.append(&Entry {
                    seq: 0,
                    at: ctx.clock.rfc3339(),
                    node: None,
                    wave: Some(wave.index),
                    phase: "approval".into(),
                    mark: Mark::Intent,
                    detail: json!({}),
                })?;
                let reason = format!(
                    "manual approval required before wave {} ({}): review with `theseus status`, then approve with `theseus resume`",
                    wave.index,
                    wave.nodes.join(", ")
                );
                ctx.emit(Event::Paused {
                    reason: reason.clone(),
                });
                return Ok((RunState::Paused, Some(reason)));
            }
            if !first {
                if let Err(why) = self.gates(wave.index).await {
                    let reason = format!("gate before wave {}: {why}", wave.index);
                    ctx.emit(Event::Paused {
                        reason: reason.clone(),
                    });
                    return Ok((RunState::Paused, Some(reason)));
                }
                if let Some(stop) = self.check_requests()? {
                    return Ok(stop);
                }
            }
            first = false;
            let started = Instant::now();
            ctx.emit(Event::WaveStarted {
                wave: wave.index,
                nodes: todo.iter().map(|s| s.to_string()).collect(),
            });
            ctx.journal.append(&Entry {
                seq: 0,
                at: ctx.clock.rfc3339(),
                node: None,
                wave: Some(wave.index),
                phase: "wave".into(),
                mark: Mark::Intent,
                detail: json!({"nodes": todo}),
            })?;
            let gate = crate::step::CordonGate::new(todo.len());
            let steps = todo.iter().map(|n| {
                let h = history.remove(*n).unwrap_or_default();
                let ctx = ctx.clone();
                let node = n.to_string();
                let wave = wave.index;
                let gate = gate.clone();
                async move {
                    let outcome = Step::new(&ctx, &node, wave, h).with_gate(gate).run().await;
                    if matches!(outcome, StepOutcome::Failed(_)) {
                        ctx.halt.store(true, Ordering::SeqCst);
                    }
                    outcome
                }
            });
            let outcomes = join_all(steps).await;
            let failed: Vec<String> = outcomes
                .iter()
                .filter_map(|o| match o {
                    StepOutcome::Failed(e) => Some(e.to_string()),
                    _ => None,
                })
                .collect();
            if !failed.is_empty() {
                let reason = failed.join("; ");
                ctx.journal.set_request(Request::Pause, &reason)?;
                ctx.emit(Event::Paused {
                    reason: reason.clone(),
                });
                return Ok((RunState::Paused, Some(reason)));
            }
            if ctx.abort.load(Ordering::SeqCst) {
                let reason = self.request_reason();
                ctx.emit(Event::Aborted {
                    reason: reason.clone(),
                });
                return Ok((RunState::Aborted, Some(reason)));
            }
            ctx.journal.append(&Entry {
                seq: 0,
                at: ctx.clock.rfc3339(),
                node: None,
                wave: Some(wave.index),
                phase: "wave".into(),
                mark: Mark::Done,
                detail: json!({}),
            })?;
            ctx.emit(Event::WaveDone {
                wave: wave.index,
                seconds: started.elapsed().as_secs_f64(),
            });
            // Soak: let the cluster and the probes show what the wave did before the next.
            let soak = ctx.migration.spec.gates.soak.0;
            if soak > 0 {
                tokio::time::sleep(Duration::from_secs(soak)).await;
            }
        }
        Ok((RunState::Completed, None))
    }

    /// Whether `gates.manualApproval` asks for an approval before `wave`.
    fn needs_approval(&self, wave: &theseus_model::plan::Wave) -> bool {
        use theseus_model::spec::ManualApproval;
        match self.ctx.migration.spec.gates.manual_approval {
            ManualApproval::Never => false,
            ManualApproval::FirstWave => {
                self.ctx.plan.waves.first().map(|w| w.index) == Some(wave.index)
            }
            ManualApproval::EveryWave => true,
            ManualApproval::ControlPlane => wave.kind == WaveKind::ControlPlane,
        }
    }

    fn request_reason(&self) -> String {
        self.ctx
            .journal
            .request()
            .ok()
            .flatten()
            .map(|(_, r)| r)
            .unwrap_or_else(|| "requested".into())
    }

    /// A pending pause or abort request, as the state to stop in.
    fn check_requests(&self) -> Result<Option<(RunState, Option<String>)>, EngineError> {
        let ctx = &self.ctx;
        Ok(match ctx.journal.request()? {
            Some((Request::Pause, reason)) => {
                ctx.emit(Event::Paused {
                    reason: reason.clone(),
                });
                Some((RunState::Paused, Some(reason)))
            }
            Some((Request::Abort, reason)) => {
                ctx.abort.store(true, Ordering::SeqCst);
                ctx.emit(Event::Aborted {
                    reason: reason.clone(),
                });
                Some((RunState::Aborted, Some(reason)))
            }
            None => None,
        })
    }

    /// The gates before a wave: every node Ready, no pod Pending, probes without new failures.
    async fn gates(&self, wave: u32) -> Result<(), String> {
        let ctx = &self.ctx;
        let g = &ctx.migration.spec.gates;
        let deadline = Instant::now() + ctx.options.gate_timeout;
        let mut probe_mark = match (&self.availability, g.probes) {
            (Some(a), true) => Some(failures(&a.totals().await.unwrap_or_default())),
            _ => None,
        };
        let mut shown = String::new();
        loop {
            let mut waiting = Vec::new();
            if g.node_ready {
                let nodes = ctx.ops.nodes().await.map_err(|e| e.to_string())?;
                let not_ready: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.ready != Some(true))
                    .map(|n| n.name.clone())
                    .collect();
                if !not_ready.is_empty() {
                    waiting.push(format!("nodes not Ready: {}", not_ready.join(", ")));
                }
            }
            if g.no_pending_pods {
                let pending = ctx.ops.pending_pods().await.map_err(|e| e.to_string())?;
                if !pending.is_empty() {
                    let names: Vec<String> = pending
                        .iter()
                        .take(5)
                        .map(|p| format!("{}/{}", p.namespace, p.name))
                        .collect();
                    waiting.push(format!(
                        "{} pods Pending ({}{})",
                        pending.len(),
                        names.join(", "),
                        if pending.len() > 5 { ", …" } else { "" }
                    ));
                }
            }
            if let (Some(a), Some(before)) = (&self.availability, probe_mark) {
                let now = failures(&a.totals().await.unwrap_or_default());
                if now > before {
                    waiting.push(format!(
                        "{} probe requests failed since the last check",
                        now - before
                    ));
                    probe_mark = Some(now);
                }
            }
            if waiting.is_empty() {
                ctx.emit(Event::Gate {
                    wave,
                    gate: "health".into(),
                    status: "passed".into(),
                    detail: String::new(),
                });
                return Ok(());
            }
            let detail = waiting.join("; ");
            if Instant::now() >= deadline {
                return Err(format!(
                    "still {detail} after {} s",
                    ctx.options.gate_timeout.as_secs()
                ));
            }
            if detail != shown {
                ctx.emit(Event::Gate {
                    wave,
                    gate: "health".into(),
                    status: "waiting".into(),
                    detail: detail.clone(),
                });
                shown = detail;
            }
            tokio::time::sleep(Duration::from_secs(5).max(ctx.options.poll)).await;
        }
    }

    async fn report(&self, state: RunState, reason: Option<String>) -> Result<Report, EngineError> {
        let ctx = &self.ctx;
        let states = ctx.journal.node_states()?;
        let mut left = Vec::new();
        let mut migrated = 0;
        let mut waves_completed = 0;
        for w in &ctx.plan.waves {
            let mut all = true;
            for n in &w.nodes {
                match states.get(n) {
                    Some(e) if e.phase == "done" && e.mark == Mark::Done => migrated += 1,
                    other => {
                        all = false;
                        let (status, why) = match other {
                            Some(e) if e.mark == Mark::Failed => (
                                "failed",
                                e.detail["error"].as_str().unwrap_or("").to_string(),
                            ),
                            Some(e) if e.phase == "stopped" => (
                                "stopped",
                                e.detail["reason"].as_str().unwrap_or("").to_string(),
                            ),
                            Some(e) => ("interrupted", format!("last phase {}", e.phase)),
                            None => ("not started", reason.clone().unwrap_or_default()),
                        };
                        let cordoned = match ctx.ops.node(n).await {
                            Ok(Some(s)) => s.unschedulable,
                            _ => false,
                        };
                        left.push(NodeLeft {
                            node: n.clone(),
                            status: status.into(),
                            reason: why,
                            cordoned,
                        });
                    }
                }
            }
            if all {
                waves_completed += 1;
            }
        }
        Ok(Report {
            run_id: ctx.run_id.clone(),
            migration: ctx.migration.metadata.name.clone(),
            state: match state {
                RunState::Completed => "completed",
                RunState::Paused => "paused",
                RunState::Aborted => "aborted",
                RunState::Failed => "failed",
                RunState::Running => "running",
            }
            .into(),
            reason,
            nodes_total: ctx.plan.waves.iter().map(|w| w.nodes.len()).sum(),
            nodes_migrated: migrated,
            waves_total: ctx.plan.waves.len(),
            waves_completed,
            nodes_left: left,
            evictions: ctx.evictions.load(Ordering::SeqCst),
            evictions_refused: ctx.refused.load(Ordering::SeqCst),
            surged: ctx.surged.load(Ordering::SeqCst),
            elapsed_seconds: ctx.clock.elapsed(),
            estimated_seconds: ctx.plan.estimate.total_seconds,
            lower_bound_seconds: ctx.plan.estimate.lower_bound_seconds,
            ..Report::default()
        })
    }
}

fn failures(p: &[ProbeResult]) -> u64 {
    p.iter().map(|p| p.failures).sum()
}

/// Per-probe figures since `base`.
fn delta(base: &[ProbeResult], now: &[ProbeResult]) -> Vec<ProbeResult> {
    now.iter()
        .map(|p| {
            let b = base.iter().find(|b| b.name == p.name);
            ProbeResult {
                name: p.name.clone(),
                requests: p.requests - b.map_or(0, |b| b.requests.min(p.requests)),
                failures: p.failures - b.map_or(0, |b| b.failures.min(p.failures)),
                longest_gap_seconds: p.longest_gap_seconds,
            }
        })
        .collect()
}

/// The tasks that run beside the waves: lease renewal, the request watcher (abort), the SLO
/// guard.
struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn start(ctx: Arc<Ctx>, availability: Option<Arc<dyn Availability>>) -> Background {
        let mut tasks = Vec::new();
        // Lease renewal.
        {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                let o = &ctx.options;
                let every = Duration::from_secs((o.lease_seconds.max(3) / 3) as u64);
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = ctx
                        .ops
                        .renew_lease(
                            &o.lease_namespace,
                            &o.lease_name,
                            &ctx.run_id,
                            ctx.clock.now(),
                        )
                        .await
                    {
                        tracing::warn!("lease renewal failed: {e}");
                        if matches!(e, theseus_cluster::OpsError::LeaseLost { .. }) {
                            let _ = ctx.journal.set_request(
                                Request::Abort,
                                &format!("the run lost its lock: {e}"),
                            );
                            ctx.abort.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
        // Abort requests reach running steps.
        {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok(Some((Request::Abort, _))) = ctx.journal.request() {
                        ctx.abort.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(ctx.options.poll.max(Duration::from_secs(1))).await;
                }
            }));
        }
        // The SLO guard.
        if let (Some(a), Some(max_rate)) = (availability, ctx.options.slo_max_failure_rate) {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move {
                let step = Duration::from_secs(5);
                let keep = (ctx.options.slo_window.as_secs() / 5).max(1) as usize;
                let mut window: std::collections::VecDeque<Vec<ProbeResult>> =
                    std::collections::VecDeque::new();
                loop {
                    if let Ok(now) = a.totals().await {
                        if let Some(old) = window.front() {
                            for p in delta(old, &now) {
                                if p.requests >= 10
                                    && (p.failures as f64) > max_rate * p.requests as f64
                                {
                                    let detail = format!(
                                        "{} of {} requests failed over the last {} s (limit {:.1} %)",
                                        p.failures,
                                        p.requests,
                                        ctx.options.slo_window.as_secs(),
                                        max_rate * 100.0
                                    );
                                    ctx.emit(Event::SloBreached {
                                        probe: p.name.clone(),
                                        detail: detail.clone(),
                                    });
                                    let _ = ctx.journal.set_request(
                                        Request::Pause,
                                        &format!("SLO guard: probe {}: {detail}", p.name),
                                    );
                                    window.clear();
                                    break;
                                }
                            }
                        }
                        window.push_back(now);
                        while window.len() > keep {
                            window.pop_front();
                        }
                    }
                    tokio::time::sleep(step).await;
                }
            }));
        }
        Background { tasks }
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A run dropped mid-flight (its task aborted, as a crash would) takes its helpers with it.
impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Engine {
    /// Takes the availability baseline (call before `run` to report only this run's figures).
    pub async fn baseline(&self) -> Vec<ProbeResult> {
        match &self.availability {
            Some(a) => a.totals().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

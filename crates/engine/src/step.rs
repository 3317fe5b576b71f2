//! One node's step: cordon → drain ([`Drainer`]: surge single-replica Deployments, evict the
//! rest, a 429 is a named PodDisruptionBudget blocking it) → replacements Ready elsewhere → node action through
//! the provider → node back (Ready, target OS or kubelet, same name and IP) → uncordon; or, for
//! add-before-remove: provision a new node → it joins → cordon and drain the old one →
//! decommission it → its Node object is gone.
//!
//! Write-ahead: every phase is journaled as an intent before it acts and as done after. Resume
//! re-runs the idempotent phases (cordon, drain, waits) and asks the provider and the cluster how
//! far a node action got before it runs one again, so that no action runs twice once it
//! completed and none is skipped.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use theseus_cluster::NodeState;
use theseus_journal::{Entry, Mark};
use theseus_model::spec::StrategyType;
use theseus_providers::{Action, ActionProgress, NodeTarget};
use tokio::time::Instant;

/// The pause between looks at a node during the quiet part of its machine action (see
/// `Step::action_poll`).
pub const QUIET_POLL: Duration = Duration::from_secs(5);

use crate::drain::{DrainEvent, Drainer};
use crate::error::StepError;
use crate::events::Event;
use crate::run::Ctx;

/// How a node's step ended.
#[derive(Clone, Debug)]
pub(crate) enum StepOutcome {
    Done,
    /// Stopped before the machine was acted on; uncordoned.
    Stopped(String),
    Failed(StepError),
}

/// What the journal says about a node.
struct History {
    entries: Vec<Entry>,
}

impl History {
    fn has(&self, phase: &str, mark: Mark) -> bool {
        self.entries
            .iter()
            .any(|e| e.phase == phase && e.mark == mark)
    }

    fn last(&self, phase: &str, mark: Mark) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.phase == phase && e.mark == mark)
    }
}

/// Facts about the node before its machine was acted on, kept in the action's intent so that a
/// resumed run knows what "back" means.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Before {
    target: NodeTarget,
    boot_id: String,
    uid: String,
    was_unschedulable: bool,
}

impl crate::run::BootOf for Before {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }
}

pub(crate) struct Step<'a> {
    pub ctx: &'a Arc<Ctx>,
    pub node: String,
    pub wave: u32,
    history: History,
    started: Instant,
    /// The wave's cordon gate (see [`CordonGate`]).
    gate: Option<Arc<CordonGate>>,
    arrived: std::sync::atomic::AtomicBool,
}

/// The nodes of a wave go out together: a drain starts once every step of its wave has
/// cordoned its node (or ended), so that no evicted pod lands on another node of the wave only
/// to be evicted again minutes later (the plan places displaced pods outside the wave; a
/// second eviction is a second disruption). Waiting is bounded by [`CORDON_GATE_LIMIT`]: a
/// step stuck before its cordon (a slow preNode hook) delays the others at most that long.
pub(crate) struct CordonGate {
    left: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

/// The longest a drain waits for the other nodes of its wave to be cordoned.
pub const CORDON_GATE_LIMIT: Duration = Duration::from_secs(60);

impl CordonGate {
    pub fn new(steps: usize) -> Arc<CordonGate> {
        Arc::new(CordonGate {
            left: std::sync::atomic::AtomicUsize::new(steps),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn arrive(&self) {
        let prev = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1));
        if prev == Ok(1) {
            self.notify.notify_waiters();
        }
    }

    async fn wait(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.left.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl<'a> Step<'a> {
    pub fn new(ctx: &'a Arc<Ctx>, node: &str, wave: u32, entries: Vec<Entry>) -> Self {
        Step {
            ctx,
            node: node.to_string(),
            wave,
            history: History { entries },
            started: Instant::now(),
            gate: None,
            arrived: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Joins the wave's cordon gate.
    pub fn with_gate(mut self, gate: Arc<CordonGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// This step's node is cordoned, or the step ended: once per step.
    fn arrive(&self) {
        if let Some(g) = &self.gate
            && !self.arrived.swap(true, Ordering::SeqCst)
        {
            g.arrive();
        }
    }

    fn mark(&self, phase: &str, mark: Mark, detail: Value) -> Result<(), StepError> {
        self.mark_node(&self.node, phase, mark, detail)
    }

    fn mark_node(
        &self,
        node: &str,
        phase: &str,
        mark: Mark,
        detail: Value,
    ) -> Result<(), StepError> {
        let e = Entry {
            seq: 0,
            at: self.ctx.clock.rfc3339(),
            node: Some(node.to_string()),
            wave: Some(self.wave),
            phase: phase.to_string(),
            mark,
            detail,
        };
        self.ctx
            .journal
            .append(&e)
            .map(|_| ())
            .map_err(|e| StepError::Journal {
                node: self.node.clone(),
                message: e.to_string(),
            })
    }

    fn phase(&self, phase: &str, detail: impl Into<String>) {
        self.ctx.emit(Event::Phase {
            node: self.node.clone(),
            wave: self.wave,
            phase: phase.to_string(),
            detail: detail.into(),
        });
    }

    fn api(&self, e: impl std::fmt::Display) -> StepError {
        StepError::api(&self.node, e)
    }

    /// Runs the step to its end.
    pub async fn run(self) -> StepOutcome {
        let r = match self.ctx.migration.spec.strategy.kind {
            StrategyType::RemoveBeforeAdd => self.remove_before_add().await,
            StrategyType::AddBeforeRemove => self.add_before_remove().await,
        };
        self.arrive();
        let outcome = match r {
            Ok(o) => o,
            Err(e) => StepOutcome::Failed(e),
        };
        match &outcome {
            StepOutcome::Done => {
                let _ = self.mark("done", Mark::Done, json!({}));
                self.ctx.emit(Event::NodeDone {
                    node: self.node.clone(),
                    wave: self.wave,
                    seconds: self.started.elapsed().as_secs_f64(),
                });
            }
            StepOutcome::Stopped(reason) => {
                let _ = self.mark("stopped", Mark::Info, json!({"reason": reason}));
                self.ctx.emit(Event::NodeStopped {
                    node: self.node.clone(),
                    wave: self.wave,
                    reason: reason.clone(),
                });
            }
            StepOutcome::Failed(e) => {
                let _ = self.mark("failed", Mark::Failed, json!({"error": e.to_string()}));
                self.ctx.emit(Event::NodeFailed {
                    node: self.node.clone(),
                    wave: self.wave,
                    error: e.to_string(),
                });
            }
        }
        outcome
    }

    /// Whether the run must not start acting on more machines (abort, or a node of this wave
    /// failed).
    fn halted(&self) -> Option<String> {
        if self.ctx.abort.load(Ordering::SeqCst) {
            return Some("the run was aborted".into());
        }
        if self.ctx.halt.load(Ordering::SeqCst) {
            return Some("another node of the wave failed; the run pauses".into());
        }
        None
    }

    // ------------------------------------------------------------------------------------
    // remove-before-add

    async fn remove_before_add(&self) -> Result<StepOutcome, StepError> {
        let action = self.ctx.action_for(self.wave);
        let before = if self.history.has("action", Mark::Done) {
            self.before_from_journal()?
        } else if self.history.has("action", Mark::Intent) {
            let before = self.before_from_journal()?;
            match self.reconcile_action(&before, &action).await? {
                true => {
                    self.mark("action", Mark::Done, json!({"reconciled": true}))?;
                }
                false => {
                    if let Some(reason) = self.halted() {
                        return self.stop(&before, reason).await;
                    }
                    self.act(&before, &action).await?;
                }
            }
            before
        } else {
            self.hook("preNode", None).await?;
            let before = self.cordon().await?;
            if let Some(reason) = self.halted() {
                return self.stop(&before, reason).await;
            }
            if let Err(e) = self.drain_and_wait().await {
                self.release(&before).await;
                return Err(e);
            }
            if let Some(reason) = self.halted() {
                return self.stop(&before, reason).await;
            }
            self.act(&before, &action).await?;
            before
        };
        self.wait_back(&before, &action).await?;
        if !before.was_unschedulable {
            self.mark("uncordon", Mark::Intent, json!({}))?;
            self.phase("uncordon", "");
            self.ctx
                .ops
                .uncordon(&self.node)
                .await
                .map_err(|e| self.api(e))?;
            self.mark("uncordon", Mark::Done, json!({}))?;
        }
        self.hook("postNode", before.target.internal_ip.as_deref())
            .await?;
        Ok(StepOutcome::Done)
    }

    /// Runs `spec.hooks` of one kind (journaled like any phase).
    async fn hook(&self, which: &str, ip: Option<&str>) -> Result<(), StepError> {
        let h = &self.ctx.migration.spec.hooks;
        let commands = if which == "preNode" {
            &h.pre_node
        } else {
            &h.post_node
        };
        if commands.is_empty() {
            return Ok(());
        }
        self.mark(which, Mark::Intent, json!({"commands": commands}))?;
        self.phase(which, format!("{} command(s)", commands.len()));
        crate::hooks::run(
            commands,
            which,
            &self.node,
            ip,
            &self.ctx.run_id,
            Duration::from_secs(h.timeout.0),
        )
        .await?;
        self.mark(which, Mark::Done, json!({}))
    }

    fn before_from_journal(&self) -> Result<Before, StepError> {
        let e = self
            .history
            .last("action", Mark::Intent)
            .or_else(|| self.history.last("decommission", Mark::Intent))
            .ok_or_else(|| StepError::Journal {
                node: self.node.clone(),
                message: "the journal has a result for the node action but no intent".into(),
            })?;
        serde_json::from_value(e.detail["before"].clone()).map_err(|err| StepError::Journal {
            node: self.node.clone(),
            message: format!("the action's intent cannot be read: {err}"),
        })
    }

    /// Cordons the node (recording whether it was cordoned before the run: such a node stays
    /// cordoned at the end).
    async fn cordon(&self) -> Result<Before, StepError> {
        let n = self
            .ctx
            .ops
            .node(&self.node)
            .await
            .map_err(|e| self.api(e))?
            .ok_or_else(|| StepError::Api {
                node: self.node.clone(),
                message: format!(
                    "node {} does not exist (any more); re-plan with `theseus plan`",
                    self.node
                ),
            })?;
        // A node cordoned by this run before a crash was schedulable before the run.
        let ours = n.cordoned_by.as_deref() == Some(self.ctx.run_id.as_str());
        let before = Before {
            target: target_of(&n),
            boot_id: n.boot_id.clone(),
            uid: n.uid.clone(),
            was_unschedulable: n.unschedulable && !ours,
        };
        self.mark("cordon", Mark::Intent, json!({"before": before}))?;
        self.phase("cordon", "");
        self.ctx
            .ops
            .cordon(&self.node, &self.ctx.run_id)
            .await
            .map_err(|e| self.api(e))?;
        self.mark("cordon", Mark::Done, json!({}))?;
        Ok(before)
    }

    /// Uncordons a node the run cordoned and did not act on.
    async fn release(&self, before: &Before) {
        if !before.was_unschedulable {
            if let Err(e) = self.ctx.ops.uncordon(&self.node).await {
                tracing::warn!(node = %self.node, "uncordon failed: {e}");
            } else {
                let _ = self.mark("uncordon", Mark::Done, json!({"released": true}));
            }
        }
    }

    async fn stop(&self, before: &Before, reason: String) -> Result<StepOutcome, StepError> {
        self.release(before).await;
        Ok(StepOutcome::Stopped(reason))
    }

    async fn act(&self, before: &Before, action: &Action) -> Result<(), StepError> {
        self.act_on(&self.node, "action", before, action).await
    }

    async fn act_on(
        &self,
        node: &str,
        phase: &str,
        before: &Before,
        action: &Action,
    ) -> Result<(), StepError> {
        self.mark_node(
            node,
            phase,
            Mark::Intent,
            json!({"before": before, "action": action, "provider": self.ctx.provider.name()}),
        )?;
        self.phase(
            phase,
            format!("{} via {}", action.name(), self.ctx.provider.name()),
        );
        let timeout = self.ctx.migration.spec.timeouts.node_action.0;
        let r = tokio::time::timeout(
            Duration::from_secs(timeout),
            self.ctx.provider.run(&before.target, action),
        )
        .await;
        let outcome = match r {
            Err(_) => {
                return Err(StepError::Timeout {
                    node: node.to_string(),
                    seconds: timeout,
                    what: format!(
                        "the {} provider's {}",
                        self.ctx.provider.name(),
                        action.name()
                    ),
                });
            }
            Ok(Err(e)) => {
                let _ = self.mark_node(node, phase, Mark::Failed, json!({"error": e.to_string()}));
                return Err(StepError::Provider {
                    node: node.to_string(),
                    message: e.to_string(),
                });
            }
            Ok(Ok(o)) => o,
        };
        self.ctx.actions.fetch_add(1, Ordering::SeqCst);
        self.mark_node(node, phase, Mark::Done, json!({"outcome": outcome}))?;
        self.phase(phase, outcome.summary);
        Ok(())
    }

    /// After a crash between an action's intent and its result: did the action happen? True:
    /// done or under way (do not run it again); false: it did not start (run it).
    async fn reconcile_action(&self, before: &Before, action: &Action) -> Result<bool, StepError> {
        let p = self
            .ctx
            .provider
            .progress(&before.target, action)
            .await
            .map_err(|e| StepError::Provider {
                node: self.node.clone(),
                message: e.to_string(),
            })?;
        let r = match p {
            ActionProgress::Finished | ActionProgress::Running => true,
            ActionProgress::NotStarted => false,
            ActionProgress::Unknown => {
                // Only the Node can tell: the same boot, Ready, not at the target → it did not
                // start; anything else (gone, rebooted, NotReady, at the target) → it did.
                match self
                    .ctx
                    .ops
                    .node(&self.node)
                    .await
                    .map_err(|e| self.api(e))?
                {
                    Some(n) => {
                        n.ready != Some(true)
                            || n.boot_id != before.boot_id
                            || n.uid != before.uid
                            || self.ctx.at_target(&n, action, before)
                    }
                    None => true,
                }
            }
        };
        self.mark(
            "reconcile",
            Mark::Info,
            json!({"progress": p, "actionHappened": r}),
        )?;
        Ok(r)
    }

    /// The pause between two looks at a node whose machine action started at `started`.
    /// Most of an action's expected duration (`provider.expectedActionDuration`) passes with a
    /// look every [`QUIET_POLL`]; from 3/4 of it on (or, when no duration is given, for the
    /// first [`QUIET_POLL`] × 6), every `poll`. A 200-node wave then costs the API server a
    /// few hundred GETs a minute instead of 200 a second, for at most a few seconds of
    /// latency on a node that comes back early.
    fn action_poll(&self, started: Instant) -> Duration {
        let poll = self.ctx.options.poll;
        let elapsed = started.elapsed();
        let expected = self
            .ctx
            .migration
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.expected_action_duration)
            .map(|d| Duration::from_secs(d.seconds()));
        let quiet = match expected {
            Some(e) => elapsed < e.mul_f64(0.75),
            None => elapsed >= QUIET_POLL * 6,
        };
        if quiet { QUIET_POLL.max(poll) } else { poll }
    }

    /// Waits until the node is back: present, Ready, the target, the same IP.
    async fn wait_back(&self, before: &Before, action: &Action) -> Result<(), StepError> {
        self.mark("ready", Mark::Intent, json!({}))?;
        self.phase("ready", "waiting for the node to come back Ready");
        let t = &self.ctx.migration.spec.timeouts;
        let limit = t.node_action.0 + t.node_ready.0;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(limit);
        let mut last;
        loop {
            if let Some(n) = self
                .ctx
                .ops
                .node(&self.node)
                .await
                .map_err(|e| self.api(e))?
            {
                let ip_ok = before.target.internal_ip.is_none()
                    || n.internal_ip == before.target.internal_ip;
                if n.ready == Some(true) && !ip_ok {
                    return Err(StepError::Api {
                        node: self.node.clone(),
                        message: format!(
                            "the node came back with InternalIP {} instead of {}; remove-before-add keeps name and IP: check the machine's network configuration",
                            n.internal_ip.as_deref().unwrap_or("(none)"),
                            before.target.internal_ip.as_deref().unwrap_or("(none)")
                        ),
                    });
                }
                if n.ready == Some(true) && self.ctx.at_target(&n, action, before) {
                    self.mark(
                        "ready",
                        Mark::Done,
                        json!({"osImage": n.os_image, "kubeletVersion": n.kubelet_version}),
                    )?;
                    return Ok(());
                }
                last = format!(
                    "last seen Ready={}, OS {:?}, kubelet {}",
                    match n.ready {
                        Some(true) => "True",
                        Some(false) => "False",
                        None => "Unknown",
                    },
                    n.os_image,
                    n.kubelet_version
                );
            } else {
                last = "the Node object is absent (machine reinstalling or not joined yet)".into();
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    node: self.node.clone(),
                    seconds: limit,
                    what: format!(
                        "the node to come back Ready with {} ({last})",
                        self.ctx.target_text(action)
                    ),
                });
            }
            tokio::time::sleep(self.action_poll(started)).await;
        }
    }

    // ------------------------------------------------------------------------------------
    // add-before-remove

    async fn add_before_remove(&self) -> Result<StepOutcome, StepError> {
        let action = self.ctx.action_for(self.wave);
        let new_node = self.ctx.replacement_name(&self.node);
        let provision = match &action {
            Action::OsMigration {
                os_image,
                kernel_version,
                kubelet_version,
            } => Action::Provision {
                new_node: new_node.clone(),
                os_image: os_image.clone(),
                kernel_version: kernel_version.clone(),
                kubelet_version: kubelet_version.clone(),
            },
            other => {
                return Err(StepError::Provider {
                    node: self.node.clone(),
                    message: format!(
                        "addBeforeRemove needs an osMigration (a new machine); {} runs removeBeforeAdd",
                        other.name()
                    ),
                });
            }
        };
        let new_target = NodeTarget {
            name: new_node.clone(),
            internal_ip: None,
            roles: Vec::new(),
        };
        // 1. provision the new node (once), 2. wait for it to join.
        let before = if let Some(e) = self.history.last("provision", Mark::Intent) {
            let before: Before =
                serde_json::from_value(e.detail["before"].clone()).map_err(|err| {
                    StepError::Journal {
                        node: self.node.clone(),
                        message: format!("the provision intent cannot be read: {err}"),
                    }
                })?;
            if !self.history.has("provision", Mark::Done) {
                let p = self
                    .ctx
                    .provider
                    .progress(&before.target, &provision)
                    .await
                    .map_err(|e| StepError::Provider {
                        node: self.node.clone(),
                        message: e.to_string(),
                    })?;
                if p == ActionProgress::NotStarted {
                    self.act_on(&self.node, "provision", &before, &provision)
                        .await?;
                } else {
                    self.mark("provision", Mark::Done, json!({"reconciled": true}))?;
                }
            }
            before
        } else {
            let n = self
                .ctx
                .ops
                .node(&self.node)
                .await
                .map_err(|e| self.api(e))?
                .ok_or_else(|| StepError::Api {
                    node: self.node.clone(),
                    message: format!("node {} does not exist (any more)", self.node),
                })?;
            let before = Before {
                target: target_of(&n),
                boot_id: n.boot_id.clone(),
                uid: n.uid.clone(),
                was_unschedulable: n.unschedulable,
            };
            if let Some(reason) = self.halted() {
                return Ok(StepOutcome::Stopped(reason));
            }
            self.hook("preNode", before.target.internal_ip.as_deref())
                .await?;
            self.act_on(&self.node, "provision", &before, &provision)
                .await?;
            before
        };
        if !self.history.has("decommission", Mark::Intent) {
            self.wait_joined(&new_target, &action).await?;
            // 3. cordon and drain the old node.
            self.mark("cordon", Mark::Intent, json!({}))?;
            self.phase("cordon", "");
            self.ctx
                .ops
                .cordon(&self.node, &self.ctx.run_id)
                .await
                .map_err(|e| self.api(e))?;
            self.mark("cordon", Mark::Done, json!({}))?;
            if let Some(reason) = self.halted() {
                return self.stop(&before, reason).await;
            }
            if let Err(e) = self.drain_and_wait().await {
                self.release(&before).await;
                return Err(e);
            }
            if let Some(reason) = self.halted() {
                return self.stop(&before, reason).await;
            }
            self.act_on(&self.node, "decommission", &before, &Action::Decommission)
                .await?;
        } else if !self.history.has("decommission", Mark::Done) {
            let p = self
                .ctx
                .provider
                .progress(&before.target, &Action::Decommission)
                .await
                .map_err(|e| StepError::Provider {
                    node: self.node.clone(),
                    message: e.to_string(),
                })?;
            if p == ActionProgress::NotStarted {
                self.act_on(&self.node, "decommission", &before, &Action::Decommission)
                    .await?;
            }
        }
        // 4. the old Node object is gone.
        self.wait_removed().await?;
        self.hook("postNode", before.target.internal_ip.as_deref())
            .await?;
        Ok(StepOutcome::Done)
    }

    async fn wait_joined(&self, target: &NodeTarget, action: &Action) -> Result<(), StepError> {
        self.phase(
            "joined",
            format!("waiting for {} to join Ready", target.name),
        );
        let t = &self.ctx.migration.spec.timeouts;
        let limit = t.node_action.0 + t.node_ready.0;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(limit);
        let before = Before::default();
        loop {
            if let Some(n) = self
                .ctx
                .ops
                .node(&target.name)
                .await
                .map_err(|e| self.api(e))?
                && n.ready == Some(true)
                && self.ctx.at_target(&n, action, &before)
            {
                self.mark("joined", Mark::Done, json!({"node": target.name}))?;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    node: self.node.clone(),
                    seconds: limit,
                    what: format!(
                        "the new node {} to join Ready with {}",
                        target.name,
                        self.ctx.target_text(action)
                    ),
                });
            }
            tokio::time::sleep(self.action_poll(started)).await;
        }
    }

    async fn wait_removed(&self) -> Result<(), StepError> {
        self.phase("removed", "waiting for the old Node object to be deleted");
        let limit = self.ctx.migration.spec.timeouts.node_ready.0;
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            if self
                .ctx
                .ops
                .node(&self.node)
                .await
                .map_err(|e| self.api(e))?
                .is_none()
            {
                self.mark("removed", Mark::Done, json!({}))?;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    node: self.node.clone(),
                    seconds: limit,
                    what: "the old Node object to be deleted".into(),
                });
            }
            tokio::time::sleep(self.ctx.options.poll).await;
        }
    }

    // ------------------------------------------------------------------------------------
    // drain

    /// Drains the node with kubectl drain's semantics (see [`Drainer`]) and waits for the
    /// evicted pods' replacements to be Ready elsewhere.
    async fn drain_and_wait(&self) -> Result<(), StepError> {
        self.arrive();
        if let Some(g) = &self.gate {
            g.wait(CORDON_GATE_LIMIT).await;
        }
        self.mark("drain", Mark::Intent, json!({}))?;
        // The blocking budgets last shown per pod: a refusal is journaled and shown when they
        // change, counted every time.
        let shown: Mutex<BTreeMap<String, Vec<String>>> = Mutex::default();
        let on_event = |e: DrainEvent| self.on_drain_event(e, &shown);
        let drainer = self.drainer(&on_event);
        let owners = drainer.drain(&self.node).await?.owners;
        self.mark(
            "drain",
            Mark::Done,
            json!({"owners": owners.iter().map(|(k, ns, n)| format!("{k} {ns}/{n}")).collect::<Vec<_>>()}),
        )?;
        if self.ctx.migration.spec.gates.pods_ready && !owners.is_empty() {
            self.mark("replacements", Mark::Intent, json!({}))?;
            self.phase(
                "replacements",
                format!("waiting for {} workloads to be Ready again", owners.len()),
            );
            drainer.wait_replacements(&self.node, &owners).await?;
            self.mark("replacements", Mark::Done, json!({}))?;
        }
        Ok(())
    }

    fn drainer<'d>(&'d self, on_event: &'d (dyn Fn(DrainEvent) + Send + Sync)) -> Drainer<'d> {
        let spec = &self.ctx.migration.spec;
        Drainer {
            ops: &self.ctx.ops,
            policy: &spec.drain,
            surge_single_replica: spec.surge.single_replica_deployments,
            run_id: &self.ctx.run_id,
            poll: self.ctx.options.poll,
            pods_ready_timeout: Duration::from_secs(spec.timeouts.pods_ready.0),
            endpoint_settle: self.ctx.options.endpoint_settle,
            on_event,
            guard: spec
                .strategy
                .protect_unbudgeted
                .then_some(&self.ctx.unbudgeted),
        }
    }

    /// A drain's progress: counters, phases, and blocked evictions in the journal.
    fn on_drain_event(&self, e: DrainEvent, shown: &Mutex<BTreeMap<String, Vec<String>>>) {
        match e {
            DrainEvent::Started { to_move, skipped } => {
                self.phase(
                    "drain",
                    format!("{to_move} pods to move, {skipped} skipped"),
                );
            }
            DrainEvent::Surge {
                namespace,
                deployment,
            } => {
                self.ctx.surged.fetch_add(1, Ordering::SeqCst);
                self.phase(
                    "surge",
                    format!("{namespace}/{deployment}: starting a replacement first"),
                );
            }
            DrainEvent::Evicted { .. } => {
                self.ctx.evictions.fetch_add(1, Ordering::SeqCst);
            }
            DrainEvent::Blocked { pod, pdbs, message } => {
                self.ctx.refused.fetch_add(1, Ordering::SeqCst);
                {
                    let mut shown = shown.lock().unwrap_or_else(|p| p.into_inner());
                    if shown.get(&pod) == Some(&pdbs) {
                        return;
                    }
                    shown.insert(pod.clone(), pdbs.clone());
                }
                let reason = if pdbs.is_empty() {
                    message.clone()
                } else {
                    format!("blocked by PDB {} (disruptionsAllowed 0)", pdbs.join(", "))
                };
                let _ = self.mark(
                    "blocked",
                    Mark::Info,
                    json!({"pod": pod, "pdbs": pdbs, "message": message}),
                );
                self.ctx.emit(Event::Blocked {
                    node: self.node.clone(),
                    wave: self.wave,
                    pod,
                    pdbs,
                    reason,
                });
            }
        }
    }
}

fn target_of(n: &NodeState) -> NodeTarget {
    NodeTarget {
        name: n.name.clone(),
        internal_ip: n.internal_ip.clone(),
        roles: n.roles.clone(),
    }
}

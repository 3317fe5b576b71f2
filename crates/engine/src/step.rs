//! One node's step: cordon → drain (surge single-replica Deployments, evict the rest, a 429 is a
//! named PodDisruptionBudget blocking it) → replacements Ready elsewhere → node action through
//! the provider → node back (Ready, target OS or kubelet, same name and IP) → uncordon; or, for
//! add-before-remove: provision a new node → it joins → cordon and drain the old one →
//! decommission it → its Node object is gone.
//!
//! Write-ahead: every phase is journaled as an intent before it acts and as done after. Resume
//! re-runs the idempotent phases (cordon, drain, waits) and asks the provider and the cluster how
//! far a node action got before it runs one again, so that no action runs twice once it
//! completed and none is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use theseus_cluster::{DrainOptions, Eviction, NodeState, PodState, select_for_drain};
use theseus_journal::{Entry, Mark};
use theseus_model::spec::StrategyType;
use theseus_providers::{Action, ActionProgress, NodeTarget};
use tokio::time::Instant;

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

/// kubectl drain's pause after a refused eviction.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

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
}

impl<'a> Step<'a> {
    pub fn new(ctx: &'a Arc<Ctx>, node: &str, wave: u32, entries: Vec<Entry>) -> Self {
        Step {
            ctx,
            node: node.to_string(),
            wave,
            history: History { entries },
            started: Instant::now(),
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
        Ok(StepOutcome::Done)
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

    /// Waits until the node is back: present, Ready, the target, the same IP.
    async fn wait_back(&self, before: &Before, action: &Action) -> Result<(), StepError> {
        self.mark("ready", Mark::Intent, json!({}))?;
        self.phase("ready", "waiting for the node to come back Ready");
        let t = &self.ctx.migration.spec.timeouts;
        let limit = t.node_action.0 + t.node_ready.0;
        let deadline = Instant::now() + Duration::from_secs(limit);
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
            tokio::time::sleep(self.ctx.options.poll).await;
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
        Ok(StepOutcome::Done)
    }

    async fn wait_joined(&self, target: &NodeTarget, action: &Action) -> Result<(), StepError> {
        self.phase(
            "joined",
            format!("waiting for {} to join Ready", target.name),
        );
        let t = &self.ctx.migration.spec.timeouts;
        let limit = t.node_action.0 + t.node_ready.0;
        let deadline = Instant::now() + Duration::from_secs(limit);
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
            tokio::time::sleep(self.ctx.options.poll).await;
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

    /// Drains the node with kubectl drain's semantics and waits for the evicted pods'
    /// replacements to be Ready elsewhere.
    async fn drain_and_wait(&self) -> Result<(), StepError> {
        self.mark("drain", Mark::Intent, json!({}))?;
        let owners = self.drain().await?;
        self.mark(
            "drain",
            Mark::Done,
            json!({"owners": owners.iter().map(|(k, ns, n)| format!("{k} {ns}/{n}")).collect::<Vec<_>>()}),
        )?;
        if self.ctx.migration.spec.gates.pods_ready && !owners.is_empty() {
            self.wait_replacements(&owners).await?;
        }
        Ok(())
    }

    async fn drain(&self) -> Result<BTreeSet<(String, String, String)>, StepError> {
        let policy = &self.ctx.migration.spec.drain;
        let opts = DrainOptions {
            ignore_daemon_sets: policy.ignore_daemon_sets,
            delete_empty_dir_data: policy.delete_empty_dir_data,
            force: policy.force,
            pod_selector: policy.pod_selector.as_deref().map(parse_selector),
        };
        let pods = self
            .ctx
            .ops
            .pods_on_node(&self.node)
            .await
            .map_err(|e| self.api(e))?;
        let sel = select_for_drain(&pods, &opts);
        if !sel.refused.is_empty() {
            return Err(StepError::DrainRefused {
                node: self.node.clone(),
                reasons: sel
                    .refused
                    .iter()
                    .map(|(p, why)| format!("{}/{}: {why}", p.namespace, p.name))
                    .collect(),
            });
        }
        let grace = (policy.grace_period_seconds >= 0).then_some(policy.grace_period_seconds);
        let drain_limit = policy.timeout.0;
        let deadline = Instant::now() + Duration::from_secs(drain_limit);
        self.phase(
            "drain",
            format!(
                "{} pods to move, {} skipped",
                sel.evict.len() + sel.delete_terminal.len(),
                sel.skipped.len()
            ),
        );
        // Who owns what we move: their replacements are waited for.
        let mut owners = BTreeSet::new();
        let mut surges: BTreeMap<String, (String, PodState)> = BTreeMap::new();
        let mut evict = Vec::new();
        for p in &sel.evict {
            let Some(c) = &p.controller else {
                evict.push(p.clone());
                continue;
            };
            if c.kind == "ReplicaSet" {
                let dep = self
                    .ctx
                    .ops
                    .deployment_of_replicaset(&p.namespace, &c.name)
                    .await
                    .map_err(|e| self.api(e))?;
                if let Some(dep) = dep {
                    let single = self.ctx.migration.spec.surge.single_replica_deployments
                        && self
                            .ctx
                            .ops
                            .workload("Deployment", &p.namespace, &dep)
                            .await
                            .map_err(|e| self.api(e))?
                            .is_some_and(|w| w.desired == 1);
                    if single && !surges.contains_key(&format!("{}/{dep}", p.namespace)) {
                        owners.insert(("Deployment".into(), p.namespace.clone(), dep.clone()));
                        surges.insert(format!("{}/{dep}", p.namespace), (dep, p.clone()));
                        continue;
                    }
                }
            }
            owners.insert((c.kind.clone(), p.namespace.clone(), c.name.clone()));
            evict.push(p.clone());
        }
        let surge_futs = surges
            .values()
            .map(|(dep, pod)| self.surge(dep, pod, deadline));
        let evict_futs = evict.iter().map(|p| self.evict(p, grace, deadline));
        let delete_futs = sel.delete_terminal.iter().map(|p| async move {
            self.ctx
                .ops
                .delete_pod(&p.namespace, &p.name, grace)
                .await
                .map(|_| ())
                .map_err(|e| self.api(e))
        });
        let (surged, evicted, deleted) = futures::join!(
            join_all(surge_futs),
            join_all(evict_futs),
            join_all(delete_futs)
        );
        let mut blocked_pods = Vec::new();
        let mut blocked_pdbs = BTreeSet::new();
        for r in surged.into_iter().chain(deleted) {
            r?;
        }
        for r in evicted {
            match r {
                Ok(()) => {}
                Err(Blocked { pod, pdbs }) if !pod.is_empty() => {
                    blocked_pods.push(pod);
                    blocked_pdbs.extend(pdbs);
                }
                Err(Blocked { pdbs, .. }) => {
                    return Err(StepError::Api {
                        node: self.node.clone(),
                        message: pdbs.join("; "),
                    });
                }
            }
        }
        if !blocked_pods.is_empty() {
            return Err(StepError::DrainTimeout {
                node: self.node.clone(),
                seconds: drain_limit,
                pods: blocked_pods,
                pdbs: blocked_pdbs.into_iter().collect(),
            });
        }
        // Wait for every moved pod to be gone (graceful termination), as kubectl drain does.
        let moved: Vec<&PodState> = sel
            .evict
            .iter()
            .chain(sel.delete_terminal.iter())
            .chain(
                sel.skipped
                    .iter()
                    .filter(|(p, _)| p.deleting)
                    .map(|(p, _)| p),
            )
            .collect();
        for p in moved {
            loop {
                let exists = self
                    .ctx
                    .ops
                    .pod_exists(&p.namespace, &p.name, &p.uid)
                    .await
                    .map_err(|e| self.api(e))?;
                if !exists {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Timeout {
                        node: self.node.clone(),
                        seconds: drain_limit,
                        what: format!("pod {}/{} to terminate", p.namespace, p.name),
                    });
                }
                tokio::time::sleep(self.ctx.options.poll).await;
            }
        }
        Ok(owners)
    }

    /// Moves the pod of a single-replica Deployment with no gap: one more replica first (it
    /// starts elsewhere, the node is cordoned), then, once it is Ready, back to one replica with
    /// the old pod marked to be the one removed.
    async fn surge(
        &self,
        deployment: &str,
        pod: &PodState,
        deadline: Instant,
    ) -> Result<(), StepError> {
        let ns = &pod.namespace;
        self.phase(
            "surge",
            format!("{ns}/{deployment}: starting a replacement first"),
        );
        let original = self
            .ctx
            .ops
            .surge_start(ns, deployment, &self.ctx.run_id, &self.node)
            .await
            .map_err(|e| self.api(e))?;
        self.ctx.surged.fetch_add(1, Ordering::SeqCst);
        let limit = self.ctx.migration.spec.timeouts.pods_ready.0;
        let ready_deadline = (Instant::now() + Duration::from_secs(limit)).min(deadline);
        loop {
            let w = self
                .ctx
                .ops
                .workload("Deployment", ns, deployment)
                .await
                .map_err(|e| self.api(e))?;
            match w {
                None => return Ok(()),
                Some(w) if w.ready > original => break,
                Some(_) => {}
            }
            if Instant::now() >= ready_deadline {
                let _ = self.ctx.ops.surge_end(ns, deployment, None).await;
                return Err(StepError::Timeout {
                    node: self.node.clone(),
                    seconds: limit,
                    what: format!(
                        "the surge replica of Deployment {ns}/{deployment} to be Ready (the Deployment was scaled back)"
                    ),
                });
            }
            tokio::time::sleep(self.ctx.options.poll).await;
        }
        self.ctx
            .ops
            .surge_end(ns, deployment, Some(&pod.name))
            .await
            .map_err(|e| self.api(e))?;
        Ok(())
    }

    /// Evicts one pod, retrying refusals (429) until the deadline.
    async fn evict(
        &self,
        p: &PodState,
        grace: Option<i64>,
        deadline: Instant,
    ) -> Result<(), Blocked> {
        let name = format!("{}/{}", p.namespace, p.name);
        let fail = |m: String| Blocked {
            pod: String::new(),
            pdbs: vec![m],
        };
        if self.ctx.migration.spec.drain.disable_eviction {
            return self
                .ctx
                .ops
                .delete_pod(&p.namespace, &p.name, grace)
                .await
                .map(|_| ())
                .map_err(|e| fail(format!("{}: delete {name}: {e}", self.node)));
        }
        let mut shown: Option<Vec<String>> = None;
        loop {
            match self.ctx.ops.evict(&p.namespace, &p.name, grace).await {
                Ok(Eviction::Evicted) => {
                    self.ctx.evictions.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Ok(Eviction::Gone) => return Ok(()),
                Ok(Eviction::Blocked { pdbs, message }) => {
                    self.ctx.refused.fetch_add(1, Ordering::SeqCst);
                    if shown.as_ref() != Some(&pdbs) {
                        let reason = if pdbs.is_empty() {
                            message.clone()
                        } else {
                            format!("blocked by PDB {} (disruptionsAllowed 0)", pdbs.join(", "))
                        };
                        let _ = self.mark(
                            "blocked",
                            Mark::Info,
                            json!({"pod": name, "pdbs": pdbs, "message": message}),
                        );
                        self.ctx.emit(Event::Blocked {
                            node: self.node.clone(),
                            wave: self.wave,
                            pod: name.clone(),
                            pdbs: pdbs.clone(),
                            reason,
                        });
                        shown = Some(pdbs.clone());
                    }
                    if Instant::now() >= deadline {
                        return Err(Blocked { pod: name, pdbs });
                    }
                    tokio::time::sleep(EVICTION_RETRY).await;
                }
                Err(e) => return Err(fail(format!("{}: evict {name}: {e}", self.node))),
            }
        }
    }

    async fn wait_replacements(
        &self,
        owners: &BTreeSet<(String, String, String)>,
    ) -> Result<(), StepError> {
        self.mark("replacements", Mark::Intent, json!({}))?;
        self.phase(
            "replacements",
            format!("waiting for {} workloads to be Ready again", owners.len()),
        );
        let limit = self.ctx.migration.spec.timeouts.pods_ready.0;
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            let mut short = Vec::new();
            for (kind, ns, name) in owners {
                if let Some(w) = self
                    .ctx
                    .ops
                    .workload(kind, ns, name)
                    .await
                    .map_err(|e| self.api(e))?
                    && w.ready < w.desired
                {
                    short.push(format!(
                        "{kind} {ns}/{name} {}/{} Ready",
                        w.ready, w.desired
                    ));
                }
            }
            if short.is_empty() {
                self.mark("replacements", Mark::Done, json!({}))?;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepError::Timeout {
                    node: self.node.clone(),
                    seconds: limit,
                    what: format!("replacements to be Ready: {}", short.join(", ")),
                });
            }
            tokio::time::sleep(self.ctx.options.poll).await;
        }
    }
}

/// An eviction that ended without success: blocked by PDBs at the deadline (`pod` set), or
/// another error (`pod` empty, the message in `pdbs`).
struct Blocked {
    pod: String,
    pdbs: Vec<String>,
}

fn target_of(n: &NodeState) -> NodeTarget {
    NodeTarget {
        name: n.name.clone(),
        internal_ip: n.internal_ip.clone(),
        roles: n.roles.clone(),
    }
}

/// `k=v,k2=v2` (drain's `--pod-selector`, equality only).
fn parse_selector(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((
                k.trim().trim_end_matches('=').to_string(),
                v.trim().trim_start_matches('=').to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_equality_pairs() {
        let m = parse_selector("app=web, tier==front");
        assert_eq!(m.get("app").map(String::as_str), Some("web"));
        assert_eq!(m.get("tier").map(String::as_str), Some("front"));
        assert_eq!(m.len(), 2);
    }
}

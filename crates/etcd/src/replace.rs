//! Safe replacement of one member, and of all members one at a time ([`migrate`]).
//!
//! The procedure (runbook 001, with every check between steps):
//! 1. health and quorum math: N voters tolerate ⌊(N−1)/2⌋ failures; refuse 2-member clusters and
//!    any other member down. If the old member itself is dead, it is removed first and its
//!    replacement added after.
//! 2. `member add --learner`; 3. the start hook; 4. wait until the learner has caught up;
//! 5. promote (retried while etcd says it is not in sync); 6. if the old member leads, move
//!    leadership to the new member and verify; 7. remove the old member through another member;
//! 8. verify (voter count, member lists agree, one leader, a linearizable read); 9. the
//!    stop-and-wipe hook.
//!
//! A failure before the promotion removes the learner again (rollback). Every step is found again
//! on a rerun: a learner or voter with the new peer URL, an old member already gone. So running
//! the same command after a failure finishes the job.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::{
    Member, MemberClient, MemberId, is_member_not_found, is_not_in_sync, is_transient,
};
use crate::cluster::{Etcd, Probe};
use crate::config::{EtcdUrl, same_url};
use crate::error::{Error, Result, Step};
use crate::health::{Allow, ClusterStatus, quorum};
use crate::hooks::{MemberHooks, StartSpec, StopReason, StopSpec};

/// The member that replaces an old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

/// Timeouts and pacing of a replacement. Every wait has a timeout and names what it waited for.
#[derive(Debug, Clone)]
pub struct ReplaceOptions {
    /// For the learner to start and catch up with the leader (a large database is sent as a
    /// snapshot first).
    pub catch_up_timeout: Duration,
    /// For the promotion, retried while etcd says the learner is not in sync.
    pub promote_timeout: Duration,
    /// For an election, a leadership move, a removal, member lists to converge.
    pub settle_timeout: Duration,
    /// A voter that does not answer for this long counts as down.
    pub down_grace: Duration,
    /// How often to poll.
    pub poll_interval: Duration,
}

impl Default for ReplaceOptions {
    fn default() -> Self {
        ReplaceOptions {
            catch_up_timeout: Duration::from_secs(300),
            promote_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(60),
            down_grace: Duration::from_secs(3),
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// A progress event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The old member being replaced.
    pub member: String,
    pub step: Step,
    pub message: String,
}

/// Receives progress events.
pub type Progress<'a> = &'a (dyn Fn(&Event) + Send + Sync);

/// What a replacement did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaceReport {
    /// The old member as it was before (absent if it had already been removed).
    pub old: Option<Member>,
    /// The new member as it is now.
    pub new: Member,
    /// The old member was dead, so it was removed before its replacement was added.
    pub removed_first: bool,
    /// Leadership was moved away from the old member.
    pub moved_leader: bool,
    /// What an earlier run had already done, if this run resumed it.
    pub resumed: Option<String>,
    /// Notes for the user (e.g. from the stop hook).
    pub notes: Vec<String>,
    /// Voters after the replacement.
    pub voters: usize,
    pub elapsed_ms: u64,
}

/// Replaces member `old_name` by `new`. See the module documentation for the procedure.
pub async fn replace_member(
    etcd: &Etcd,
    old_name: &str,
    new: &NewMember,
    hooks: &dyn MemberHooks,
    opts: &ReplaceOptions,
    progress: Progress<'_>,
) -> Result<ReplaceReport> {
    validate_new(old_name, new)?;
    let r = Replacer {
        etcd,
        old_name,
        new,
        hooks,
        opts,
        progress,
        started: Instant::now(),
        leader_at_start: Mutex::new(None),
        transient: Mutex::new(false),
    };
    Box::pin(r.run()).await
}

/// Checks a new member's name and URLs.
pub fn validate_new(old_name: &str, new: &NewMember) -> Result<()> {
    if old_name.is_empty() {
        return Err(Error::InvalidInput(
            "--member must name the member to replace".into(),
        ));
    }
    if new.name.is_empty() || new.name.contains([',', '=', ' ', '/']) {
        return Err(Error::InvalidInput(format!(
            "new member name {:?} is not usable: it must be non-empty, without ',', '=', '/' or spaces",
            new.name
        )));
    }
    let p = EtcdUrl::parse("--new-peer-url", &new.peer_url)?;
    let c = EtcdUrl::parse("--new-client-url", &new.client_url)?;
    if p.authority() == c.authority() {
        return Err(Error::InvalidInput(format!(
            "--new-peer-url and --new-client-url are the same address {}: etcd needs two ports",
            p.authority()
        )));
    }
    Ok(())
}

struct Replacer<'a> {
    etcd: &'a Etcd,
    old_name: &'a str,
    new: &'a NewMember,
    hooks: &'a dyn MemberHooks,
    opts: &'a ReplaceOptions,
    progress: Progress<'a>,
    started: Instant,
    /// The leader when the replacement started, to name it in errors.
    leader_at_start: Mutex<Option<MemberId>>,
    /// The last refusal was about a cluster that may still be settling.
    transient: Mutex<bool>,
}

/// Where a run starts, from what the cluster shows.
enum Resume {
    /// Nothing done yet.
    Fresh,
    /// The learner exists (maybe not started).
    Learner(Member),
    /// The new member is already a voter.
    Voter(Member),
}

async fn tcp_in_use(url: &EtcdUrl) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(800),
            tokio::net::TcpStream::connect(url.authority())
        )
        .await,
        Ok(Ok(_))
    )
}

impl Replacer<'_> {
    fn event(&self, step: Step, message: impl Into<String>) {
        let e = Event {
            member: self.old_name.to_string(),
            step,
            message: message.into(),
        };
        tracing::info!(member = %e.member, step = %e.step, "{}", e.message);
        (self.progress)(&e);
    }

    fn failed(
        &self,
        step: Step,
        cause: Error,
        rollback: impl Into<String>,
        next: impl Into<String>,
    ) -> Error {
        Error::ReplaceFailed {
            member: self.old_name.to_string(),
            step,
            cause: Box::new(cause),
            rollback: rollback.into(),
            next: next.into(),
        }
    }

    fn rerun(&self) -> String {
        format!(
            "run the same command again: theseus finds what was done and continues (replace {} by {})",
            self.old_name, self.new.name
        )
    }

    /// Observes until every voter answers, or `down_grace` has passed (then the last
    /// observation, with whoever is really down).
    async fn observe_settled(&self, allow: Allow) -> Result<ClusterStatus> {
        let start = Instant::now();
        // Consecutive failed observations per voter: one slow answer is not "down".
        let mut fails: BTreeMap<MemberId, u32> = BTreeMap::new();
        loop {
            let st = self.etcd.observe_allowing(allow).await?;
            for v in st.voters() {
                let f = fails.entry(v.member.id).or_default();
                *f = if v.is_up() { 0 } else { *f + 1 };
            }
            let all_up = st.voters().all(|m| m.is_up());
            let surely_down = st
                .voters()
                .filter(|m| !m.is_up())
                .all(|m| fails.get(&m.member.id).is_some_and(|f| *f >= 2));
            let waited = start.elapsed();
            if st.leader.is_some() && (all_up || (waited >= self.opts.down_grace && surely_down)) {
                return Ok(st);
            }
            if waited >= self.opts.settle_timeout {
                // No leader: the caller's checks say so.
                return Ok(st);
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    async fn run(&self) -> Result<ReplaceReport> {
        loop {
            let r = Box::pin(self.run_once()).await;
            let transient = std::mem::take(&mut *lock(&self.transient));
            if r.is_err() && transient && self.started.elapsed() < self.opts.settle_timeout {
                // Nothing was changed; the cluster was settling (e.g. after the previous
                // member of a migration): look again.
                tokio::time::sleep(self.opts.poll_interval).await;
                continue;
            }
            return r;
        }
    }

    async fn run_once(&self) -> Result<ReplaceReport> {
        let st = self.observe_settled(Allow::default()).await?;
        *lock(&self.leader_at_start) = st.leader;
        let new_peer = &self.new.peer_url;
        let old = st.by_name(self.old_name).map(|m| m.member.clone());
        let by_peer = st
            .members
            .iter()
            .find(|m| m.member.peer_urls.iter().any(|u| same_url(u, new_peer)))
            .map(|m| m.member.clone());

        // The new member's identity: its peer URL must be free or be ours from an earlier run.
        if let Some(m) = &by_peer {
            let ours = m.name.is_empty() || m.name == self.new.name;
            if !ours || Some(m.id) == old.as_ref().map(|o| o.id) {
                return Err(Error::UrlInUse {
                    kind: "peer",
                    url: new_peer.clone(),
                    by: format!("member {} ({})", m.label(), m.id),
                });
            }
        }
        if let Some(m) = st.by_name(&self.new.name)
            && by_peer.as_ref().map(|b| b.id) != Some(m.member.id)
        {
            return Err(Error::InvalidInput(format!(
                "a member named {:?} already exists ({}, peer {}): choose another --new-name",
                self.new.name,
                m.member.id,
                m.member.peer_urls.join(",")
            )));
        }
        if let Some(m) = st.members.iter().find(|m| {
            Some(m.member.id) != by_peer.as_ref().map(|b| b.id)
                && m.member
                    .client_urls
                    .iter()
                    .any(|u| same_url(u, &self.new.client_url))
        }) {
            return Err(Error::UrlInUse {
                kind: "client",
                url: self.new.client_url.clone(),
                by: format!("member {} ({})", m.member.label(), m.member.id),
            });
        }

        let Some(old) = old else {
            if let Some(m) = by_peer.as_ref().filter(|m| !m.is_learner) {
                // Done by an earlier run: the old member is gone and the new one votes.
                self.event(
                    Step::Check,
                    format!(
                        "{} is no longer a member and {} is a voter: already replaced",
                        self.old_name, self.new.name
                    ),
                );
                let st = Box::pin(self.verify(None, m.id, st.voters().count())).await?;
                return Ok(ReplaceReport {
                    old: None,
                    new: m.clone(),
                    removed_first: false,
                    moved_leader: false,
                    resumed: Some("already replaced".into()),
                    notes: vec![format!(
                        "{} was already removed; if its etcd still runs, stop it and wipe its data dir",
                        self.old_name
                    )],
                    voters: st.voters().count(),
                    elapsed_ms: self.elapsed_ms(),
                });
            }
            return Err(Error::UnknownMember {
                name: self.old_name.to_string(),
                known: st.names(),
            });
        };

        if old.is_learner {
            return Err(Error::Refused(format!(
                "{} ({}) is a learner, not a voter: there is nothing to replace; promote it or remove it (`etcdctl member remove {}`)",
                old.label(),
                old.id,
                old.id
            )));
        }
        let resume = match &by_peer {
            None => Resume::Fresh,
            Some(m) if m.is_learner => Resume::Learner(m.clone()),
            Some(m) => Resume::Voter(m.clone()),
        };

        if let Some(other) = st
            .members
            .iter()
            .find(|m| m.member.is_learner && Some(m.member.id) != by_peer.as_ref().map(|b| b.id))
        {
            return Err(Error::Refused(format!(
                "learner {} ({}, peer {}) is left over from something else; etcd 3.4 allows one learner at a time. Promote it or remove it (`etcdctl member remove {}`), then run again",
                other.member.label(),
                other.member.id,
                other.member.peer_urls.join(","),
                other.member.id
            )));
        }
        if matches!(resume, Resume::Fresh) {
            for (kind, url) in [("peer", new_peer), ("client", &self.new.client_url)] {
                let u = EtcdUrl::parse(kind, url)?;
                if tcp_in_use(&u).await {
                    return Err(Error::UrlInUse {
                        kind,
                        url: url.clone(),
                        by: format!(
                            "a process that is not a member of this cluster (something accepts connections on {})",
                            u.authority()
                        ),
                    });
                }
            }
        }

        // Quorum math on the voters as they were before this replacement.
        let new_voter = match &resume {
            Resume::Voter(m) => Some(m.id),
            _ => None,
        };
        let voters: Vec<_> = st
            .voters()
            .filter(|m| Some(m.member.id) != new_voter)
            .collect();
        let n = voters.len();
        if n == 2 {
            return Err(Error::Refused(format!(
                "{} is a 2-member cluster: it tolerates no failure, and replacing a member needs both to stay up. Add a third member first (etcd clusters should have an odd number of members)",
                st.names()
            )));
        }
        let down: Vec<&Member> = st
            .voters()
            .filter(|m| !m.is_up())
            .map(|m| &m.member)
            .collect();
        let others_down: Vec<String> = down
            .iter()
            .filter(|m| m.id != old.id)
            .map(|m| format!("{} ({})", m.label(), m.id))
            .collect();
        if !others_down.is_empty() {
            return Err(Error::Refused(format!(
                "member(s) {} do not answer. {n} voters tolerate {} failure(s); replacing {} now could lose quorum. Bring them back (or replace the dead one first: theseus removes a dead member before adding its replacement), then run again",
                others_down.join(", "),
                crate::health::fault_tolerance(n),
                self.old_name
            )));
        }
        let old_dead = down.iter().any(|m| m.id == old.id);
        if old_dead && n == 1 {
            return Err(Error::Refused(format!(
                "{} is the only member and it is down: there is no quorum to replace it with. Restore the cluster from a snapshot (`theseus etcd snapshot restore`)",
                self.old_name
            )));
        }
        let allow = Allow {
            learner: by_peer.as_ref().filter(|m| m.is_learner).map(|m| m.id),
            down: old_dead.then_some(old.id),
        };
        let check = crate::health::verdict(&st.members, &st.alarms, allow);
        if !check.healthy {
            // Every voter answers and no alarm: a leader election or membership still
            // converging, worth another look.
            *lock(&self.transient) = st.alarms.is_empty()
                && st
                    .voters()
                    .all(|m| m.is_up() || Some(m.member.id) == allow.down);
            return Err(Error::Refused(format!(
                "the cluster is not healthy, so nothing was changed: {}",
                check.problems.join("; ")
            )));
        }
        self.event(
            Step::Check,
            format!(
                "{n} voters, {} up, quorum {}, tolerates {}; old member {} ({}){}{}",
                check.voters_up,
                quorum(n),
                crate::health::fault_tolerance(n),
                old.name,
                old.id,
                if st.leader == Some(old.id) {
                    " is the leader"
                } else {
                    ""
                },
                if old_dead {
                    " is down: it will be removed first"
                } else {
                    ""
                }
            ),
        );
        let resumed = match &resume {
            Resume::Fresh => None,
            Resume::Learner(m) => Some(format!(
                "learner {} ({}) from an earlier run{}",
                self.new.name,
                m.id,
                if m.is_started() { "" } else { ", not started" }
            )),
            Resume::Voter(m) => Some(format!(
                "{} ({}) is already a voter from an earlier run",
                self.new.name, m.id
            )),
        };
        if let Some(r) = &resumed {
            self.event(Step::Check, format!("resuming: {r}"));
        }

        let mut report = ReplaceReport {
            old: Some(old.clone()),
            new: by_peer.clone().unwrap_or_else(|| Member {
                id: MemberId(0),
                name: self.new.name.clone(),
                peer_urls: vec![self.new.peer_url.clone()],
                client_urls: vec![],
                is_learner: true,
            }),
            removed_first: false,
            moved_leader: false,
            resumed,
            notes: vec![],
            voters: n,
            elapsed_ms: 0,
        };

        if old_dead {
            // Remove first, add after: the dead member counts against quorum until removed.
            Box::pin(self.remove_member(&old, Step::RemoveDead))
                .await
                .map_err(|e| {
                    self.failed(
                        Step::RemoveDead,
                        e,
                        "Nothing else was changed.",
                        self.rerun(),
                    )
                })?;
            report.removed_first = true;
            report.new = match resume {
                Resume::Voter(m) => m,
                Resume::Learner(m) => Box::pin(self.add_and_promote(Some(m))).await?,
                Resume::Fresh => Box::pin(self.add_and_promote(None)).await?,
            };
        } else {
            let new = match resume {
                Resume::Voter(m) => m,
                Resume::Learner(m) => Box::pin(self.add_and_promote(Some(m))).await?,
                Resume::Fresh => Box::pin(self.add_and_promote(None)).await?,
            };
            report.new = new.clone();
            report.moved_leader = Box::pin(self.move_leader_away(&old, &new)).await?;
            Box::pin(self.ensure_voters_up(old.id, Step::RemoveOld)).await?;
            Box::pin(self.remove_member(&old, Step::RemoveOld))
                .await
                .map_err(|e| {
                    self.failed(
                        Step::RemoveOld,
                        e,
                        format!(
                            "{} is a voter; {} is still a member.",
                            self.new.name, self.old_name
                        ),
                        self.rerun(),
                    )
                })?;
        }
        let st = Box::pin(self.verify(Some(old.id), report.new.id, n)).await?;
        if let Some(m) = st.by_id(report.new.id) {
            report.new = m.member.clone();
        }
        report.voters = st.voters().count();
        self.event(Step::StopOld, format!("stopping and wiping {}", old.name));
        match self
            .hooks
            .stop_and_wipe(&StopSpec {
                name: old.name.clone(),
                member_id: old.id,
                peer_urls: old.peer_urls.clone(),
                client_urls: old.client_urls.clone(),
                reason: StopReason::Replaced,
            })
            .await
        {
            Ok(Some(note)) => report.notes.push(note),
            Ok(None) => {}
            Err(e) => report.notes.push(format!(
                "the replacement is complete, but stopping and wiping the old member failed: {e}; stop etcd {} and wipe its data dir by hand",
                old.name
            )),
        }
        report.elapsed_ms = self.elapsed_ms();
        self.event(
            Step::Verify,
            format!(
                "replaced {} by {} ({}) in {:.1}s",
                old.name,
                self.new.name,
                report.new.id,
                report.elapsed_ms as f64 / 1000.0
            ),
        );
        Ok(report)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A client for a voter other than `avoid` that answers, the leader preferred.
    async fn voter_client(&self, avoid: Option<MemberId>) -> Result<(Member, MemberClient)> {
        let st = self.etcd.observe_allowing(Allow::default()).await?;
        let mut cands: Vec<&crate::health::MemberStatus> = st
            .voters()
            .filter(|m| m.is_up() && Some(m.member.id) != avoid)
            .collect();
        cands.sort_by_key(|m| Some(m.member.id) != st.leader);
        for m in cands {
            if let Ok(c) = self.etcd.client_for(&m.member).await {
                return Ok((m.member.clone(), c));
            }
        }
        Err(Error::Refused(format!(
            "no voter other than {} answers (members: {})",
            avoid.map(|a| a.to_string()).unwrap_or_default(),
            st.names()
        )))
    }

    /// Removes `m` through another member and waits until the member lists no longer show it.
    async fn remove_member(&self, m: &Member, step: Step) -> Result<()> {
        self.event(
            step,
            format!("removing {} ({}) through another member", m.label(), m.id),
        );
        let what = format!(
            "the removal of member {} ({}) through another member",
            m.label(),
            m.id
        );
        Etcd::wait_for(
            &what,
            self.opts.settle_timeout,
            self.opts.poll_interval,
            || async {
                let (via, c) = match self.voter_client(Some(m.id)).await {
                    Ok(x) => x,
                    Err(e) => return Ok(Probe::Pending(e.to_string())),
                };
                match c.member_remove(m.id).await {
                    Ok(_) => Ok(Probe::Done(via)),
                    Err(e) if is_member_not_found(&e) => Ok(Probe::Done(via)),
                    Err(e) => Ok(Probe::Pending(e.to_string())),
                }
            },
        )
        .await?;
        Etcd::wait_for(
            &format!("every member list to drop {} ({})", m.label(), m.id),
            self.opts.settle_timeout,
            self.opts.poll_interval,
            || async {
                let st = self.etcd.observe_allowing(Allow::default()).await?;
                let stale: Vec<String> = st
                    .members
                    .iter()
                    .filter(|s| s.members_seen.as_ref().is_some_and(|l| l.contains(&m.id)))
                    .map(|s| s.member.label())
                    .collect();
                if st.by_id(m.id).is_none() && stale.is_empty() {
                    Ok(Probe::Done(()))
                } else {
                    Ok(Probe::Pending(format!(
                        "still listed by {}",
                        stale.join(", ")
                    )))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Checks that every voter except `except` answers (within the down grace).
    async fn ensure_voters_up(&self, except: MemberId, step: Step) -> Result<()> {
        let st = self.observe_settled(Allow::default()).await?;
        let down: Vec<String> = st
            .voters()
            .filter(|m| !m.is_up() && m.member.id != except)
            .map(|m| {
                format!(
                    "{} ({}): {}",
                    m.member.label(),
                    m.member.id,
                    m.error.clone().unwrap_or_default()
                )
            })
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        Err(self.failed(
            step,
            Error::Refused(format!("voter(s) down: {}", down.join("; "))),
            format!(
                "{} is a voter; {} is still a member: nothing was lost.",
                self.new.name, self.old_name
            ),
            format!("bring the member(s) back, then {}", self.rerun()),
        ))
    }

    /// Adds (unless `existing`), starts, waits for catch-up and promotes the new member.
    /// Rolls back on failure.
    async fn add_and_promote(&self, existing: Option<Member>) -> Result<Member> {
        let learner = match existing {
            Some(m) => m,
            None => {
                self.event(
                    Step::AddLearner,
                    format!(
                        "member add --learner {} {}",
                        self.new.name, self.new.peer_url
                    ),
                );
                let what = format!(
                    "member add --learner {} (etcd refuses membership changes until every voter has been connected for 5s)",
                    self.new.peer_url
                );
                let m = Etcd::wait_for(
                    &what,
                    self.opts.settle_timeout,
                    self.opts.poll_interval,
                    || async {
                        // An earlier attempt that timed out may have gone through.
                        let list = self.etcd.member_list().await?;
                        if let Some(m) = list
                            .members
                            .iter()
                            .find(|m| m.peer_urls.iter().any(|u| same_url(u, &self.new.peer_url)))
                        {
                            return Ok(Probe::Done(m.clone()));
                        }
                        let (_, c) = match self.voter_client(None).await {
                            Ok(x) => x,
                            Err(e) => return Ok(Probe::Pending(e.to_string())),
                        };
                        match c.member_add_learner(&self.new.peer_url).await {
                            Ok((m, _)) => Ok(Probe::Done(m)),
                            Err(e) if is_transient(&e) => Ok(Probe::Pending(e.to_string())),
                            // etcd derives a new member's ID from its peer URLs and the time in
                            // seconds: re-adding a peer URL within the second it was removed gets
                            // the removed ID, which etcd refuses as "member not found".
                            Err(e) if is_member_not_found(&e) => Ok(Probe::Pending(e.to_string())),
                            Err(e) => Err(e),
                        }
                    },
                )
                .await
                .map_err(|e| {
                    self.failed(
                        Step::AddLearner,
                        e,
                        "If the add went through, the learner exists but is not started.",
                        self.rerun(),
                    )
                })?;
                self.event(
                    Step::AddLearner,
                    format!("learner {} added as {}", self.new.name, m.id),
                );
                m
            }
        };
        match Box::pin(self.start_catch_up_promote(&learner)).await {
            Ok(m) => Ok(m),
            Err((step, e)) => {
                let rollback = Box::pin(self.rollback(&learner)).await;
                Err(self.failed(step, e, rollback, self.rerun_after_rollback()))
            }
        }
    }

    fn rerun_after_rollback(&self) -> String {
        format!(
            "fix the cause, then run the same command again (if {} is down by then, theseus removes it first and then adds {})",
            self.old_name, self.new.name
        )
    }

    async fn start_catch_up_promote(&self, learner: &Member) -> Result<Member, (Step, Error)> {
        let id = learner.id;
        let started_already =
            learner.is_started() && self.etcd.client(&self.new.client_url).await.is_ok();
        if !started_already {
            let list = self
                .etcd
                .member_list()
                .await
                .map_err(|e| (Step::StartNew, e))?;
            let mut ic: Vec<String> = Vec::new();
            for m in &list.members {
                let name = if m.id == id {
                    self.new.name.as_str()
                } else {
                    m.name.as_str()
                };
                if name.is_empty() {
                    continue;
                }
                for u in &m.peer_urls {
                    ic.push(format!("{name}={u}"));
                }
            }
            // etcd 3.4 answers MemberList from the member asked, which may not have applied the
            // MemberAdd yet: the new member must be in its own --initial-cluster regardless.
            if !list.members.iter().any(|m| m.id == id) {
                ic.push(format!("{}={}", self.new.name, self.new.peer_url));
            }
            let spec = StartSpec {
                name: self.new.name.clone(),
                member_id: id,
                peer_url: self.new.peer_url.clone(),
                client_url: self.new.client_url.clone(),
                initial_cluster: ic.join(","),
                initial_cluster_state: "existing".into(),
            };
            self.event(
                Step::StartNew,
                format!(
                    "starting {} with --initial-cluster {}",
                    spec.name, spec.initial_cluster
                ),
            );
            self.hooks
                .start(&spec)
                .await
                .map_err(|e| (Step::StartNew, e))?;
        }
        Box::pin(self.catch_up(id))
            .await
            .map_err(|e| (Step::CatchUp, e))?;
        let st = self
            .observe_settled(Allow {
                learner: Some(id),
                down: None,
            })
            .await
            .map_err(|e| (Step::Promote, e))?;
        let leader = *lock(&self.leader_at_start);
        let down: Vec<String> = st
            .voters()
            .filter(|m| !m.is_up())
            .map(|m| {
                let was = if Some(m.member.id) == leader {
                    ", the leader"
                } else {
                    ""
                };
                format!("{} ({}{was})", m.member.label(), m.member.id)
            })
            .collect();
        if !down.is_empty() {
            return Err((
                Step::Promote,
                Error::Refused(format!(
                    "voter(s) {} stopped answering before the promotion",
                    down.join(", ")
                )),
            ));
        }
        self.event(Step::Promote, format!("promoting {} ({id})", self.new.name));
        let promoted = Box::pin(self.promote(id))
            .await
            .map_err(|e| (Step::Promote, e))?;
        self.event(
            Step::Promote,
            format!("{} ({id}) is a voter", self.new.name),
        );
        Ok(promoted)
    }

    /// Waits until the learner answers and its applied index reaches the leader's index, while
    /// watching that every voter keeps answering.
    async fn catch_up(&self, id: MemberId) -> Result<()> {
        self.event(
            Step::CatchUp,
            format!("waiting for {} to catch up with the leader", self.new.name),
        );
        // (when each voter last answered, the index to reach, the last known leader)
        let state: Mutex<CatchUpState> = Mutex::new(CatchUpState {
            last_leader: *lock(&self.leader_at_start),
            ..CatchUpState::default()
        });
        let what = format!(
            "learner {} ({id}) at {} to start and catch up with the leader",
            self.new.name, self.new.client_url
        );
        Etcd::wait_for(&what, self.opts.catch_up_timeout, self.opts.poll_interval, || {
            let state = &state;
            async move {
                let st = self
                    .etcd
                    .observe_allowing(Allow { learner: Some(id), down: None })
                    .await?;
                let mut down = None;
                {
                    let mut s = lock(state);
                    if st.leader.is_some() {
                        s.last_leader = st.leader;
                    }
                    let now = Instant::now();
                    for v in st.voters() {
                        let f = s.fails.entry(v.member.id).or_default();
                        *f = if v.is_up() { 0 } else { *f + 1 };
                        let fails = *f;
                        let seen = s.last_up.entry(v.member.id).or_insert(now);
                        if v.is_up() {
                            *seen = now;
                        } else if now.duration_since(*seen) >= self.opts.down_grace && fails >= 2
                        {
                            down = Some((v, Some(v.member.id) == s.last_leader));
                        }
                    }
                }
                if let Some((v, was_leader)) = down {
                    let was_leader = if was_leader { " (the leader)" } else { "" };
                    return Err(Error::Refused(format!(
                        "voter {} ({}){was_leader} stopped answering while the learner caught up: {}",
                        v.member.label(),
                        v.member.id,
                        v.error.clone().unwrap_or_default()
                    )));
                }
                let learner = match self.etcd.client(&self.new.client_url).await {
                    Ok(c) => c,
                    Err(e) => return Ok(Probe::Pending(format!("learner not answering yet: {e}"))),
                };
                let ls = match learner.status().await {
                    Ok(s) => s,
                    Err(e) => return Ok(Probe::Pending(format!("learner status: {e}"))),
                };
                if ls.member_id != id {
                    return Err(Error::Refused(format!(
                        "{} answers as member {}, not as the learner {id}: another etcd runs there",
                        self.new.client_url, ls.member_id
                    )));
                }
                let Some(leader) = st.leader_member().and_then(|l| l.status.as_ref()) else {
                    return Ok(Probe::Pending("no agreed leader (election running)".into()));
                };
                let t = *lock(state).target.get_or_insert(leader.raft_index);
                if ls.raft_applied_index >= t {
                    Ok(Probe::Done(()))
                } else {
                    Ok(Probe::Pending(format!(
                        "learner applied index {} of the leader's {}",
                        ls.raft_applied_index, t
                    )))
                }
            }
        })
        .await
    }

    /// Promotes the learner, retrying while etcd says it is not in sync yet.
    async fn promote(&self, id: MemberId) -> Result<Member> {
        let what = format!(
            "the promotion of learner {} ({id}) (etcd refuses until it is in sync with the leader)",
            self.new.name
        );
        Etcd::wait_for(
            &what,
            self.opts.promote_timeout,
            self.opts.poll_interval,
            || async {
                let (_, c) = match self.voter_client(None).await {
                    Ok(x) => x,
                    Err(e) => return Ok(Probe::Pending(e.to_string())),
                };
                let res = c.member_promote(id).await;
                let list = match &res {
                    Ok(l) => l.clone(),
                    Err(e) if is_not_in_sync(e) => return Ok(Probe::Pending(e.to_string())),
                    Err(e) => match self.etcd.member_list().await {
                        // A retried promote whose first attempt went through.
                        Ok(l) if l.members.iter().any(|m| m.id == id && !m.is_learner) => l.members,
                        _ => return Ok(Probe::Pending(e.to_string())),
                    },
                };
                match list.into_iter().find(|m| m.id == id) {
                    Some(m) if !m.is_learner => Ok(Probe::Done(m)),
                    Some(_) => Ok(Probe::Pending("still a learner".into())),
                    None => Err(Error::Refused(format!(
                        "learner {id} disappeared from the member list during the promotion"
                    ))),
                }
            },
        )
        .await
    }

    /// If `old` leads, moves leadership to `new` (through the leader, as etcd requires) and
    /// waits until the members agree. Returns true if it moved leadership.
    async fn move_leader_away(&self, old: &Member, new: &Member) -> Result<bool> {
        let st = self.observe_settled(Allow::default()).await.map_err(|e| {
            self.failed(
                Step::MoveLeader,
                e,
                format!("{} is a voter; {} is still a member.", new.name, old.name),
                self.rerun(),
            )
        })?;
        if st.leader != Some(old.id) {
            return Ok(false);
        }
        self.event(
            Step::MoveLeader,
            format!(
                "{} leads: moving leadership to {} ({})",
                old.name, new.name, new.id
            ),
        );
        let what = format!(
            "leadership to move from {} to {} ({})",
            old.name, new.name, new.id
        );
        let last_try: Mutex<Option<Instant>> = Mutex::new(None);
        Etcd::wait_for(
            &what,
            self.opts.settle_timeout,
            self.opts.poll_interval,
            || {
                let last_try = &last_try;
                async move {
                    let st = self.etcd.observe().await?;
                    match st.leader {
                        Some(l) if l != old.id => return Ok(Probe::Done(())),
                        None => {
                            return Ok(Probe::Pending(
                                "no agreed leader (election running)".into(),
                            ));
                        }
                        Some(_) => {}
                    }
                    {
                        let mut t = lock(last_try);
                        if t.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                            return Ok(Probe::Pending(format!("{} still leads", old.name)));
                        }
                        *t = Some(Instant::now());
                    }
                    let c = self.etcd.client_for(old).await?;
                    match c.move_leader(new.id).await {
                        Ok(()) => Ok(Probe::Pending("move-leader sent".into())),
                        Err(e) => Ok(Probe::Pending(e.to_string())),
                    }
                }
            },
        )
        .await
        .map_err(|e| {
            self.failed(
                Step::MoveLeader,
                e,
                format!(
                    "{} is a voter; {} is still a member and leads.",
                    new.name, old.name
                ),
                self.rerun(),
            )
        })?;
        self.event(Step::MoveLeader, format!("{} no longer leads", old.name));
        Ok(true)
    }

    /// Waits until the cluster is settled without the old member: the new member votes, the
    /// voter count is `voters`, member lists agree, one leader, a linearizable read succeeds.
    async fn verify(
        &self,
        old: Option<MemberId>,
        new: MemberId,
        voters: usize,
    ) -> Result<ClusterStatus> {
        let what = format!(
            "the cluster to settle with {} ({new}) as a voter: {voters} voters, member lists agree, one leader, a linearizable read",
            self.new.name
        );
        Etcd::wait_for(
            &what,
            self.opts.settle_timeout,
            self.opts.poll_interval,
            || async {
                let st = self.etcd.observe().await?;
                let mut why = st.verdict.problems.clone();
                if let Some(o) = old
                    && st.by_id(o).is_some()
                {
                    why.push(format!("{} is still a member", self.old_name));
                }
                match st.by_id(new) {
                    Some(m) if !m.member.is_learner => {}
                    _ => why.push(format!("{} is not a voter", self.new.name)),
                }
                let n = st.voters().count();
                if n != voters {
                    why.push(format!("{n} voters, expected {voters}"));
                }
                if why.is_empty() {
                    let read = match st.by_id(new) {
                        Some(m) => match self.etcd.client_for(&m.member).await {
                            Ok(c) => c.get(b"theseus/health").await.map(|_| ()),
                            Err(e) => Err(e),
                        },
                        None => Ok(()),
                    };
                    if let Err(e) = read {
                        why.push(format!("linearizable read through {}: {e}", self.new.name));
                    }
                }
                if why.is_empty() {
                    Ok(Probe::Done(st))
                } else {
                    Ok(Probe::Pending(why.join("; ")))
                }
            },
        )
        .await
        .map_err(|e| {
            self.failed(
                Step::Verify,
                e,
                format!("{} was added and {} removed.", self.new.name, self.old_name),
                format!("check `theseus etcd status`; then {}", self.rerun()),
            )
        })
    }

    /// Removes the learner again and stops it. Returns what happened, for the error message.
    async fn rollback(&self, learner: &Member) -> String {
        self.event(
            Step::Rollback,
            format!("removing learner {} ({}) again", self.new.name, learner.id),
        );
        let what = format!("the removal of learner {} ({})", self.new.name, learner.id);
        let removed = Etcd::wait_for(
            &what,
            self.opts.settle_timeout,
            self.opts.poll_interval,
            || async {
                let (_, c) = match self.voter_client(None).await {
                    Ok(x) => x,
                    Err(e) => return Ok(Probe::Pending(e.to_string())),
                };
                match c.member_remove(learner.id).await {
                    Ok(_) => Ok(Probe::Done(())),
                    Err(e) if is_member_not_found(&e) => Ok(Probe::Done(())),
                    Err(e) => Ok(Probe::Pending(e.to_string())),
                }
            },
        )
        .await;
        match removed {
            Ok(()) => {
                let stop = self
                    .hooks
                    .stop_and_wipe(&StopSpec {
                        name: self.new.name.clone(),
                        member_id: learner.id,
                        peer_urls: vec![self.new.peer_url.clone()],
                        client_urls: vec![self.new.client_url.clone()],
                        reason: StopReason::RolledBack,
                    })
                    .await;
                let stopped = match stop {
                    Ok(None) => " and its process stopped and wiped".to_string(),
                    Ok(Some(note)) => format!("; {note}"),
                    Err(e) => format!("; stopping it failed: {e}"),
                };
                format!(
                    "Rolled back: learner {} ({}) was removed again{stopped}; no learner is left behind.",
                    self.new.name, learner.id
                )
            }
            Err(e) => format!(
                "Rollback failed: learner {} ({}) is still in the cluster ({e}). Remove it with `etcdctl member remove {}`, or run the same command again to resume with it.",
                self.new.name, learner.id, learner.id
            ),
        }
    }
}

#[derive(Default)]
struct CatchUpState {
    last_up: BTreeMap<MemberId, Instant>,
    /// Consecutive failed observations per voter.
    fails: BTreeMap<MemberId, u32>,
    target: Option<u64>,
    last_leader: Option<MemberId>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

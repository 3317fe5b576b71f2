//! Cluster health: what every member reports, and the verdict. Pure functions over the data the
//! [`crate::Etcd`] handle collects, so that the rules are unit-tested without etcd.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::client::{Alarm, EndpointStatus, Member, MemberId};

/// The number of voters that must agree: ⌊N/2⌋+1.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// How many voters may fail without losing quorum: ⌊(N−1)/2⌋.
pub fn fault_tolerance(voters: usize) -> usize {
    voters.saturating_sub(1) / 2
}

/// One member: its entry in the member list and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    #[serde(flatten)]
    pub member: Member,
    /// The client URL it was asked on.
    pub endpoint: Option<String>,
    /// Its `Status`, if it answered.
    pub status: Option<EndpointStatus>,
    /// The member IDs in its own member list, sorted (`None` for learners, which do not serve
    /// member lists, and for members that did not answer).
    pub members_seen: Option<Vec<MemberId>>,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl MemberStatus {
    /// True if the member answered `Status`.
    pub fn is_up(&self) -> bool {
        self.status.is_some()
    }

    /// True if it is a voter (not a learner).
    pub fn is_voter(&self) -> bool {
        !self.member.is_learner
    }
}

/// The verdict on a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub healthy: bool,
    /// What is wrong, each with the fix.
    pub problems: Vec<String>,
    pub voters: usize,
    pub voters_up: usize,
    pub quorum: usize,
    pub fault_tolerance: usize,
}

/// What `theseus etcd status` shows: every member, the alarms and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: Option<MemberId>,
    /// The leader every answering member agrees on.
    pub leader: Option<MemberId>,
    pub members: Vec<MemberStatus>,
    pub alarms: Vec<Alarm>,
    pub verdict: Verdict,
}

impl ClusterStatus {
    /// The member with this name.
    pub fn by_name(&self, name: &str) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.member.name == name)
    }

    /// The member with this ID.
    pub fn by_id(&self, id: MemberId) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.member.id == id)
    }

    /// Voters (not learners).
    pub fn voters(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().filter(|m| m.is_voter())
    }

    /// The leader's entry, if there is an agreed leader.
    pub fn leader_member(&self) -> Option<&MemberStatus> {
        self.leader.and_then(|l| self.by_id(l))
    }

    /// Names of the members, for messages.
    pub fn names(&self) -> String {
        let v: Vec<String> = self.members.iter().map(|m| m.member.label()).collect();
        v.join(", ")
    }
}

fn ids(set: &BTreeSet<MemberId>) -> String {
    let v: Vec<String> = set.iter().map(|i| i.to_string()).collect();
    v.join(",")
}

/// The agreed leader: the one leader ID every answering member reports, if they agree and it is a
/// member.
pub fn agreed_leader(members: &[MemberStatus]) -> Option<MemberId> {
    let leaders: BTreeSet<MemberId> = members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.leader))
        .collect();
    match leaders.into_iter().collect::<Vec<_>>()[..] {
        [l] if l.0 != 0 && members.iter().any(|m| m.member.id == l) => Some(l),
        _ => None,
    }
}

/// Exceptions to the verdict's rules, for checks in the middle of a replacement.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allow {
    /// This learner is expected (being added).
    pub learner: Option<MemberId>,
    /// This member may be down (it is the dead one being replaced).
    pub down: Option<MemberId>,
}

/// Judges a cluster: every member answers, every member reports the same member list and cluster
/// ID, exactly one leader, no alarms, no learners left over, quorum.
pub fn verdict(members: &[MemberStatus], alarms: &[Alarm], allow: Allow) -> Verdict {
    let allow_learner = allow.learner;
    let mut problems = Vec::new();
    let names: BTreeMap<MemberId, String> = members
        .iter()
        .map(|m| (m.member.id, m.member.label()))
        .collect();
    let name = |id: MemberId| names.get(&id).cloned().unwrap_or_else(|| id.to_string());

    for m in members {
        if allow.learner == Some(m.member.id) {
            // The learner being added: the replacement starts and watches it.
            continue;
        }
        if !m.member.is_started() {
            problems.push(format!(
                "member {} (peer {}) was added but never started: start it, or remove it with `etcdctl member remove {}`",
                m.member.id,
                m.member.peer_urls.join(","),
                m.member.id
            ));
        } else if let Some(e) = &m.error
            && (allow.down != Some(m.member.id) || m.is_up())
        {
            problems.push(format!(
                "member {} ({}) at {} does not answer: {e}",
                m.member.name,
                m.member.id,
                m.endpoint.as_deref().unwrap_or("(no client URL)")
            ));
        }
        if let Some(s) = &m.status {
            for e in &s.errors {
                problems.push(format!("member {} reports an error: {e}", m.member.name));
            }
        }
    }

    let cluster_ids: BTreeSet<MemberId> = members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.cluster_id))
        .collect();
    if cluster_ids.len() > 1 {
        problems.push(format!(
            "members report different cluster IDs ({}): some endpoints belong to another cluster",
            ids(&cluster_ids)
        ));
    }

    let listed: BTreeSet<MemberId> = members.iter().map(|m| m.member.id).collect();
    for m in members.iter().filter(|m| m.is_up()) {
        let Some(seen) = &m.members_seen else {
            continue;
        };
        let seen: BTreeSet<MemberId> = seen.iter().copied().collect();
        if seen != listed {
            problems.push(format!(
                "member {} sees members [{}] but the member list is [{}]: membership has not converged",
                m.member.name,
                ids(&seen),
                ids(&listed)
            ));
        }
    }

    let up: Vec<&MemberStatus> = members.iter().filter(|m| m.is_up()).collect();
    if !up.is_empty() {
        let leaders: BTreeSet<MemberId> = up
            .iter()
            .filter_map(|m| m.status.as_ref().map(|s| s.leader))
            .collect();
        if leaders.contains(&MemberId(0)) {
            let without: Vec<String> = up
                .iter()
                .filter(|m| m.status.as_ref().is_some_and(|s| s.leader.0 == 0))
                .map(|m| m.member.name.clone())
                .collect();
            problems.push(format!(
                "no leader known to {}: an election is running or quorum is lost",
                without.join(", ")
            ));
        } else if leaders.len() > 1 {
            let v: Vec<String> = leaders.iter().map(|l| name(*l)).collect();
            problems.push(format!(
                "members disagree about the leader ({}): an election is running",
                v.join(" vs ")
            ));
        } else if let Some(l) = leaders.first()
            && !listed.contains(l)
        {
            problems.push(format!("the leader {l} is not in the member list"));
        }
    }

    for a in alarms {
        let fix = if a.alarm == "NOSPACE" {
            "free space (compact, `theseus etcd defrag`), then `theseus etcd alarm disarm`"
        } else {
            "the member's data is inconsistent: replace the member, then `theseus etcd alarm disarm`"
        };
        problems.push(format!(
            "alarm {} raised by member {}: {fix}",
            a.alarm,
            name(a.member_id)
        ));
    }

    for m in members.iter().filter(|m| m.member.is_learner) {
        if Some(m.member.id) != allow_learner {
            problems.push(format!(
                "learner {} ({}) is left over: promote it or remove it with `etcdctl member remove {}` (etcd 3.4 allows one learner at a time, so it blocks the next member add)",
                m.member.label(),
                m.member.id,
                m.member.id
            ));
        }
    }

    let voters = members.iter().filter(|m| m.is_voter()).count();
    let voters_up = members.iter().filter(|m| m.is_voter() && m.is_up()).count();
    let q = quorum(voters);
    if voters_up < q {
        problems.push(format!(
            "quorum lost: {voters_up} of {voters} voters answer, {q} are needed"
        ));
    }
    Verdict {
        healthy: problems.is_empty(),
        problems,
        voters,
        voters_up,
        quorum: q,
        fault_tolerance: fault_tolerance(voters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(id: u64, name: &str, learner: bool, leader: Option<u64>, seen: &[u64]) -> MemberStatus {
        MemberStatus {
            member: Member {
                id: MemberId(id),
                name: name.into(),
                peer_urls: vec![format!("http://127.0.0.1:{id}")],
                client_urls: vec![],
                is_learner: learner,
            },
            endpoint: Some(format!("http://127.0.0.1:{}", id + 1)),
            status: leader.map(|l| EndpointStatus {
                member_id: MemberId(id),
                cluster_id: MemberId(99),
                version: "3.4.23".into(),
                db_size: 1,
                db_size_in_use: 1,
                leader: MemberId(l),
                is_learner: learner,
                raft_term: 2,
                raft_index: 10,
                raft_applied_index: 10,
                errors: vec![],
            }),
            members_seen: (!learner && leader.is_some())
                .then(|| seen.iter().map(|&i| MemberId(i)).collect()),
            error: leader.is_none().then(|| "connection refused".into()),
        }
    }

    #[test]
    fn quorum_math() {
        let t: Vec<(usize, usize, usize)> = (1..=7)
            .map(|n| (n, quorum(n), fault_tolerance(n)))
            .collect();
        assert_eq!(
            t,
            vec![
                (1, 1, 0),
                (2, 2, 0),
                (3, 2, 1),
                (4, 3, 1),
                (5, 3, 2),
                (6, 4, 2),
                (7, 4, 3)
            ]
        );
    }

    #[test]
    fn healthy_and_each_problem() {
        let all = [1, 2, 3];
        let ok = vec![
            ms(1, "a", false, Some(2), &all),
            ms(2, "b", false, Some(2), &all),
            ms(3, "c", false, Some(2), &all),
        ];
        let v = verdict(&ok, &[], Allow::default());
        assert!(v.healthy, "{:?}", v.problems);
        assert_eq!(
            (v.voters, v.voters_up, v.quorum, v.fault_tolerance),
            (3, 3, 2, 1)
        );
        assert_eq!(agreed_leader(&ok), Some(MemberId(2)));

        let mut down = ok.clone();
        down[0] = ms(1, "a", false, None, &[]);
        let v = verdict(&down, &[], Allow::default());
        assert!(!v.healthy);
        assert!(
            v.problems[0].contains("member a (1)") && v.problems[0].contains("does not answer")
        );
        assert_eq!(v.voters_up, 2);
        let allowed = Allow {
            down: Some(MemberId(1)),
            ..Allow::default()
        };
        assert!(verdict(&down, &[], allowed).healthy);

        let mut split = ok.clone();
        split[2] = ms(3, "c", false, Some(3), &all);
        let v = verdict(&split, &[], Allow::default());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("disagree about the leader (b vs c)"))
        );
        assert_eq!(agreed_leader(&split), None);

        let mut lists = ok.clone();
        lists[1].members_seen = Some(vec![MemberId(1), MemberId(2)]);
        let v = verdict(&lists, &[], Allow::default());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("member b sees members [1,2]"))
        );

        let mut learner = ok.clone();
        learner.push(ms(4, "d", true, Some(2), &[1, 2, 3, 4]));
        for m in learner.iter_mut() {
            if !m.member.is_learner {
                m.members_seen = Some(vec![MemberId(1), MemberId(2), MemberId(3), MemberId(4)]);
            }
        }
        let v = verdict(&learner, &[], Allow::default());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("learner d (4) is left over"))
        );
        let allowed = Allow {
            learner: Some(MemberId(4)),
            ..Allow::default()
        };
        assert!(verdict(&learner, &[], allowed).healthy);

        let alarm = Alarm {
            member_id: MemberId(3),
            alarm: "NOSPACE".into(),
        };
        let v = verdict(&ok, &[alarm], Allow::default());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("alarm NOSPACE raised by member c"))
        );

        let lost = vec![
            ms(1, "a", false, Some(0), &all),
            ms(2, "b", false, None, &[]),
            ms(3, "c", false, None, &[]),
        ];
        let v = verdict(&lost, &[], Allow::default());
        assert!(v.problems.iter().any(|p| p.contains("quorum lost: 1 of 3")));
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("no leader known to a"))
        );
    }
}

//! Maintenance: defragment one member at a time (followers first, the leader last), alarms.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::{Alarm, MemberId};
use crate::cluster::{Etcd, Probe};
use crate::error::{Error, Result};

/// One member's defragmentation.
#[derive(Debug, Clone, Serialize)]
pub struct DefragResult {
    pub name: String,
    pub id: MemberId,
    pub endpoint: String,
    pub was_leader: bool,
    pub db_size_before: i64,
    pub db_size_after: i64,
    pub elapsed_ms: u64,
}

/// Defragments every member, one at a time: learners and followers first, the leader last.
/// Refuses while any member is down (a member being defragmented does not answer, so with
/// another one down quorum could be lost). After each member, waits until it answers again and
/// the cluster has a leader.
pub async fn defragment_all(
    etcd: &Etcd,
    timeout: Duration,
    progress: &(dyn Fn(&DefragResult) + Send + Sync),
) -> Result<Vec<DefragResult>> {
    let st = etcd.observe().await?;
    let down: Vec<String> = st
        .members
        .iter()
        .filter(|m| !m.is_up())
        .map(|m| m.member.label())
        .collect();
    if !down.is_empty() {
        return Err(Error::Refused(format!(
            "member(s) {} do not answer; defragmenting blocks one member at a time, which with another member down could lose quorum. Bring them back first",
            down.join(", ")
        )));
    }
    let mut order: Vec<_> = st.members.iter().collect();
    order.sort_by_key(|m| (Some(m.member.id) == st.leader, !m.member.is_learner));
    let mut out = Vec::new();
    for m in order {
        let c = etcd.client_for(&m.member).await?;
        let before = m.status.as_ref().map(|s| s.db_size).unwrap_or(0);
        let start = Instant::now();
        c.defragment(timeout).await?;
        let elapsed_ms = start.elapsed().as_millis() as u64;
        let after = Etcd::wait_for(
            &format!(
                "member {} to answer after defragmentation, with a leader",
                m.member.name
            ),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                match c.status().await {
                    Ok(s) if s.leader.0 != 0 => Ok(Probe::Done(s.db_size)),
                    Ok(_) => Ok(Probe::Pending("no leader".into())),
                    Err(e) => Ok(Probe::Pending(e.to_string())),
                }
            },
        )
        .await?;
        let r = DefragResult {
            name: m.member.name.clone(),
            id: m.member.id,
            endpoint: c.endpoint().to_string(),
            was_leader: Some(m.member.id) == st.leader,
            db_size_before: before,
            db_size_after: after,
            elapsed_ms,
        };
        progress(&r);
        out.push(r);
    }
    Ok(out)
}

/// An alarm with the name of its member.
#[derive(Debug, Clone, Serialize)]
pub struct NamedAlarm {
    #[serde(flatten)]
    pub alarm: Alarm,
    pub member: String,
}

async fn up_voter(
    etcd: &Etcd,
) -> Result<(crate::health::ClusterStatus, crate::client::MemberClient)> {
    let st = etcd.observe().await?;
    for m in st.members.iter().filter(|m| m.is_up() && m.is_voter()) {
        if let Ok(c) = etcd.client_for(&m.member).await {
            return Ok((st, c));
        }
    }
    Err(Error::Refused(format!(
        "no voter answers: {}",
        st.verdict.problems.join("; ")
    )))
}

fn named(st: &crate::health::ClusterStatus, alarms: Vec<Alarm>) -> Vec<NamedAlarm> {
    alarms
        .into_iter()
        .map(|a| NamedAlarm {
            member: st
                .by_id(a.member_id)
                .map(|m| m.member.label())
                .unwrap_or_else(|| a.member_id.to_string()),
            alarm: a,
        })
        .collect()
}

/// The cluster's active alarms.
pub async fn alarm_list(etcd: &Etcd) -> Result<Vec<NamedAlarm>> {
    let (st, c) = up_voter(etcd).await?;
    Ok(named(&st, c.alarms().await?))
}

/// Disarms every active alarm; returns those disarmed.
pub async fn alarm_disarm(etcd: &Etcd) -> Result<Vec<NamedAlarm>> {
    let (st, c) = up_voter(etcd).await?;
    let alarms = c.alarms().await?;
    for a in &alarms {
        c.alarm_disarm(a).await?;
    }
    Ok(named(&st, alarms))
}

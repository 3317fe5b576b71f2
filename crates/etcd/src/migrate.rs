//! Replace every member, one at a time: dead members first (they already cost fault tolerance),
//! then followers, the leader last; the cluster's health is verified between members, and at the
//! end `hash_kv` at one revision must be equal on every member. The control-plane relocation
//! builds on this.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::MemberId;
use crate::cluster::{Etcd, Probe};
use crate::config::same_url;
use crate::error::{Error, Result, Step};
use crate::hooks::MemberHooks;
use crate::replace::{
    Event, NewMember, Progress, ReplaceOptions, ReplaceReport, replace_member, validate_new,
};

/// One old member and its replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateEntry {
    pub old: String,
    pub new: NewMember,
}

/// `hash_kv` of one member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberHash {
    pub name: String,
    pub id: MemberId,
    pub hash: u32,
    pub compact_revision: i64,
}

/// The result of comparing `hash_kv` at one revision on every member.
#[derive(Debug, Clone, Serialize)]
pub struct HashKvCheck {
    pub revision: i64,
    pub members: Vec<MemberHash>,
    pub equal: bool,
}

/// What a migration did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// The replacements, in the order they were done.
    pub replaced: Vec<ReplaceReport>,
    pub hash_kv: HashKvCheck,
    pub elapsed_ms: u64,
}

/// Checks a migration map: distinct names and URLs, new names not clashing with old ones.
pub fn validate_map(entries: &[MigrateEntry]) -> Result<()> {
    if entries.is_empty() {
        return Err(Error::InvalidInput(
            "--map is empty: give OLD=NEW for every member to replace".into(),
        ));
    }
    let mut olds = BTreeSet::new();
    let mut news = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for e in entries {
        validate_new(&e.old, &e.new)?;
        if !olds.insert(e.old.as_str()) {
            return Err(Error::InvalidInput(format!(
                "--map names {:?} twice",
                e.old
            )));
        }
        if !news.insert(e.new.name.as_str()) {
            return Err(Error::InvalidInput(format!(
                "--map uses the new name {:?} twice",
                e.new.name
            )));
        }
        for u in [&e.new.peer_url, &e.new.client_url] {
            if !urls.insert(u.trim_end_matches('/').to_string()) {
                return Err(Error::InvalidInput(format!(
                    "URL {u} is given for two new members"
                )));
            }
        }
    }
    if let Some(n) = news.intersection(&olds).next() {
        return Err(Error::InvalidInput(format!(
            "new name {n:?} is also an old member's name; old and new members run side by side, so their names must differ"
        )));
    }
    Ok(())
}

/// Replaces every member in `entries`, one at a time; see the module documentation.
pub async fn migrate(
    etcd: &Etcd,
    entries: &[MigrateEntry],
    hooks: &dyn MemberHooks,
    opts: &ReplaceOptions,
    progress: Progress<'_>,
) -> Result<MigrateReport> {
    validate_map(entries)?;
    let start = Instant::now();
    let st = etcd.observe().await?;
    // Every old member must exist, or have been replaced by an earlier run.
    for e in entries {
        let replaced = st.by_name(&e.old).is_none()
            && st.members.iter().any(|m| {
                !m.member.is_learner
                    && m.member
                        .peer_urls
                        .iter()
                        .any(|u| same_url(u, &e.new.peer_url))
            });
        if st.by_name(&e.old).is_none() && !replaced {
            return Err(Error::UnknownMember {
                name: e.old.clone(),
                known: st.names(),
            });
        }
    }
    let mut remaining: Vec<&MigrateEntry> = entries.iter().collect();
    let mut replaced = Vec::new();
    while !remaining.is_empty() {
        let st = etcd.observe().await?;
        let rank = |e: &MigrateEntry| -> u8 {
            match st.by_name(&e.old) {
                None => 0,
                Some(m) if !m.is_up() => 0,
                Some(m) if Some(m.member.id) == st.leader => 2,
                Some(_) => 1,
            }
        };
        // A stable choice: the first entry of the lowest rank.
        let (idx, _) = remaining
            .iter()
            .enumerate()
            .min_by_key(|(i, e)| (rank(e), *i))
            .ok_or_else(|| Error::InvalidInput("empty map".into()))?;
        let e = remaining.remove(idx);
        progress(&Event {
            member: e.old.clone(),
            step: Step::Check,
            message: format!(
                "member {} of {}: replacing {} by {}",
                replaced.len() + 1,
                entries.len(),
                e.old,
                e.new.name
            ),
        });
        let r = Box::pin(replace_member(etcd, &e.old, &e.new, hooks, opts, progress)).await?;
        replaced.push(r);
        // Health between members: everything answers, one leader, no learner, no alarm.
        Etcd::wait_for(
            &format!("a healthy cluster after replacing {}", e.old),
            opts.settle_timeout,
            opts.poll_interval,
            || async {
                let st = etcd.observe().await?;
                Ok(if st.verdict.healthy {
                    Probe::Done(())
                } else {
                    Probe::Pending(st.verdict.problems.join("; "))
                })
            },
        )
        .await
        .map_err(|err| Error::ReplaceFailed {
            member: e.old.clone(),
            step: Step::Verify,
            cause: Box::new(err),
            rollback: format!("{} was replaced by {}.", e.old, e.new.name),
            next: "check `theseus etcd status`, then run the same migrate command again: replaced members are skipped".into(),
        })?;
    }
    let hash_kv = hash_kv_check(etcd, opts.settle_timeout).await?;
    progress(&Event {
        member: String::new(),
        step: Step::HashKv,
        message: format!(
            "hash_kv at revision {} equal on {} members",
            hash_kv.revision,
            hash_kv.members.len()
        ),
    });
    Ok(MigrateReport {
        replaced,
        hash_kv,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// Compares `hash_kv` at the current revision on every voter (waiting for members that have not
/// applied it yet). Fails with [`Error::HashMismatch`] if they differ.
pub async fn hash_kv_check(etcd: &Etcd, timeout: Duration) -> Result<HashKvCheck> {
    let revision = etcd.revision().await?;
    let list = etcd.member_list().await?;
    let mut members = Vec::new();
    for m in list.members.iter().filter(|m| !m.is_learner) {
        let c = etcd.client_for(m).await?;
        let h = Etcd::wait_for(
            &format!("hash_kv at revision {revision} on {}", m.label()),
            timeout,
            Duration::from_millis(200),
            || async {
                match c.hash_kv(revision).await {
                    Ok(h) => Ok(Probe::Done(h)),
                    Err(e) => Ok(Probe::Pending(e.to_string())),
                }
            },
        )
        .await?;
        members.push(MemberHash {
            name: m.label(),
            id: m.id,
            hash: h.hash,
            compact_revision: h.compact_revision,
        });
    }
    let equal = members.windows(2).all(|w| w[0].hash == w[1].hash);
    if !equal {
        let d: Vec<String> = members
            .iter()
            .map(|m| format!("{}={:08x}", m.name, m.hash))
            .collect();
        return Err(Error::HashMismatch {
            revision,
            details: d.join(", "),
        });
    }
    Ok(HashKvCheck {
        revision,
        members,
        equal,
    })
}

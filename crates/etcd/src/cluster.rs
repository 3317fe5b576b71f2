//! [`Etcd`]: the handle on one cluster. It finds the members through the configured endpoints,
//! keeps one single-endpoint client per member (by its advertised client URL, as
//! `etcdctl --cluster` does), and observes the whole cluster.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::client::{Alarm, Member, MemberClient, MemberId, MemberList};
use crate::config::{EtcdConfig, TlsMaterial, normalize_endpoint};
use crate::error::{Error, Result};
use crate::health::{Allow, ClusterStatus, MemberStatus, agreed_leader, verdict};

struct Inner {
    config: EtcdConfig,
    endpoints: Vec<String>,
    tls: Option<TlsMaterial>,
    clients: Mutex<HashMap<String, MemberClient>>,
    /// Client URLs learnt from member lists: the cluster stays reachable while a migration
    /// replaces every configured endpoint.
    known: Mutex<Vec<String>>,
}

/// A handle on one etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Etcd {
    /// Validates the configuration (endpoints, TLS files) without connecting.
    pub fn new(config: EtcdConfig) -> Result<Self> {
        let tls = TlsMaterial::load(&config)?;
        if config.endpoints.is_empty() {
            return Err(Error::InvalidInput(
                "no endpoints: pass --endpoints with the client URLs of the etcd members".into(),
            ));
        }
        let mut endpoints = Vec::new();
        for e in &config.endpoints {
            let n = normalize_endpoint(e, config.tls_enabled())?;
            if !endpoints.contains(&n) {
                endpoints.push(n);
            }
        }
        if config.dial_timeout.is_zero() || config.command_timeout.is_zero() {
            return Err(Error::InvalidInput(
                "--dial-timeout and --command-timeout must be positive".into(),
            ));
        }
        Ok(Etcd {
            inner: Arc::new(Inner {
                config,
                endpoints,
                tls,
                clients: Mutex::new(HashMap::new()),
                known: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The configured endpoints, normalized to URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// A client for exactly this endpoint (cached).
    pub async fn client(&self, endpoint: &str) -> Result<MemberClient> {
        if let Some(c) = lock(&self.inner.clients).get(endpoint) {
            return Ok(c.clone());
        }
        let c = MemberClient::connect(
            endpoint,
            self.inner.tls.as_ref(),
            self.inner.config.dial_timeout,
            self.inner.config.command_timeout,
        )
        .await?;
        lock(&self.inner.clients).insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    /// A client for a member: its first client URL that connects.
    pub async fn client_for(&self, member: &Member) -> Result<MemberClient> {
        if member.client_urls.is_empty() {
            return Err(Error::Connect {
                endpoint: format!("member {}", member.label()),
                detail: "the member has no client URL (it has not started)".into(),
                hint: String::new(),
            });
        }
        let mut last = None;
        for u in &member.client_urls {
            match self.client(u).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidInput("no client URL".into())))
    }

    /// Forgets cached clients whose endpoint belongs to no member any more.
    fn prune(&self, members: &[Member]) {
        let urls: BTreeSet<&String> = members.iter().flat_map(|m| &m.client_urls).collect();
        lock(&self.inner.clients)
            .retain(|k, _| urls.contains(k) || self.inner.endpoints.contains(k));
        *lock(&self.inner.known) = urls.into_iter().cloned().collect();
    }

    /// Runs `f` on every candidate endpoint at once and returns the first success; if none
    /// succeeds, [`Error::Unreachable`] lists every endpoint with its error.
    async fn first_answer<T, F, Fut>(&self, f: F) -> Result<(T, MemberClient)>
    where
        T: Send + 'static,
        F: Fn(MemberClient) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let mut candidates: Vec<String> = lock(&self.inner.known).clone();
        for e in &self.inner.endpoints {
            if !candidates.contains(e) {
                candidates.push(e.clone());
            }
        }
        let mut set = JoinSet::new();
        for (i, ep) in candidates.iter().enumerate() {
            let this = self.clone();
            let ep = ep.clone();
            let fut = async move {
                let c = this.client(&ep).await?;
                Ok::<_, Error>(c)
            };
            set.spawn(async move { (i, fut.await) });
        }
        let mut errors: Vec<Option<String>> = vec![None; candidates.len()];
        while let Some(r) = set.join_next().await {
            let Ok((i, r)) = r else { continue };
            match r {
                Ok(c) => match f(c.clone()).await {
                    Ok(v) => return Ok((v, c)),
                    Err(e) => errors[i] = Some(e.to_string()),
                },
                Err(e) => errors[i] = Some(e.to_string()),
            }
        }
        let details: Vec<String> = errors
            .into_iter()
            .zip(&candidates)
            .map(|(e, ep)| e.unwrap_or_else(|| format!("{ep}: no answer")))
            .collect();
        Err(Error::Unreachable {
            details: details.join("; "),
        })
    }

    /// The member list from the first member that answers.
    pub async fn member_list(&self) -> Result<MemberList> {
        let (ml, _) = self
            .first_answer(|c| async move {
                let l = c.member_list().await?;
                // A member that was removed but still runs answers with its stale list.
                if !l.members.iter().any(|m| m.id == l.member_id) {
                    return Err(Error::Rpc {
                        op: "member list",
                        endpoint: c.endpoint().to_string(),
                        detail: "this member is no longer in its own member list (removed)".into(),
                    });
                }
                Ok(l)
            })
            .await?;
        self.prune(&ml.members);
        Ok(ml)
    }

    /// Observes the whole cluster: every member's status and own member list, the alarms and the
    /// verdict. Fails only if no endpoint answers at all.
    pub async fn observe(&self) -> Result<ClusterStatus> {
        self.observe_allowing(Allow::default()).await
    }

    /// As [`Etcd::observe`], with exceptions to the verdict (mid-replacement).
    pub async fn observe_allowing(&self, allow: Allow) -> Result<ClusterStatus> {
        // Boxed: callers nest observations in waits, and the futures would get large.
        Box::pin(self.observe_inner(allow)).await
    }

    async fn observe_inner(&self, allow: Allow) -> Result<ClusterStatus> {
        let list = self.member_list().await?;
        let mut set = JoinSet::new();
        for (i, m) in list.members.iter().enumerate() {
            let this = self.clone();
            let m = m.clone();
            set.spawn(async move { (i, this.member_status(m).await) });
        }
        let mut members: Vec<Option<MemberStatus>> = vec![None; list.members.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, s)) = r {
                members[i] = Some(s);
            }
        }
        let members: Vec<MemberStatus> = members
            .into_iter()
            .zip(&list.members)
            .map(|(s, m)| {
                s.unwrap_or_else(|| MemberStatus {
                    member: m.clone(),
                    endpoint: None,
                    status: None,
                    members_seen: None,
                    error: Some("status task failed".into()),
                })
            })
            .collect();
        let mut alarms: Vec<Alarm> = Vec::new();
        for m in members.iter().filter(|m| m.is_up()) {
            if let Some(ep) = &m.endpoint
                && let Ok(c) = self.client(ep).await
                && let Ok(a) = c.alarms().await
            {
                alarms = a;
                break;
            }
        }
        let v = verdict(&members, &alarms, allow);
        Ok(ClusterStatus {
            cluster_id: members
                .iter()
                .find_map(|m| m.status.as_ref().map(|s| s.cluster_id))
                .or(Some(list.cluster_id)),
            leader: agreed_leader(&members),
            members,
            alarms,
            verdict: v,
        })
    }

    async fn member_status(&self, m: Member) -> MemberStatus {
        let mut out = MemberStatus {
            member: m.clone(),
            endpoint: m.client_urls.first().cloned(),
            status: None,
            members_seen: None,
            error: None,
        };
        if !m.is_started() || m.client_urls.is_empty() {
            out.error = Some("not started".into());
            return out;
        }
        let c = match self.client_for(&m).await {
            Ok(c) => c,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        out.endpoint = Some(c.endpoint().to_string());
        match c.status().await {
            Ok(s) => out.status = Some(s),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
        // Learners serve only Status and serializable reads.
        if !m.is_learner {
            match c.member_list().await {
                Ok(l) => {
                    let mut ids: Vec<MemberId> = l.members.iter().map(|m| m.id).collect();
                    ids.sort();
                    out.members_seen = Some(ids);
                }
                Err(e) => out.error = Some(e.to_string()),
            }
        }
        out
    }

    /// A client for the current leader (asking the members who it is).
    pub async fn leader_client(&self) -> Result<(Member, MemberClient)> {
        let st = self.observe().await?;
        let leader = st.leader_member().ok_or_else(|| {
            Error::Refused(format!(
                "no agreed leader among the members ({}): wait for the election to finish",
                st.names()
            ))
        })?;
        let c = self.client_for(&leader.member).await?;
        Ok((leader.member.clone(), c))
    }

    /// A linearizable read through any member; returns the cluster's current revision.
    pub async fn revision(&self) -> Result<i64> {
        let (r, _) = self
            .first_answer(|c| async move { c.get(b"theseus/health").await })
            .await?;
        Ok(r.1)
    }

    /// Polls `probe` every `interval` until it returns `Ok(Some(_))`, fails with `Err`, or
    /// `timeout` passes: then [`Error::Timeout`] names `what` and the last observation.
    pub async fn wait_for<T, F, Fut>(
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut probe: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Probe<T>>>,
    {
        let start = tokio::time::Instant::now();
        let mut last;
        loop {
            match probe().await? {
                Probe::Done(v) => return Ok(v),
                Probe::Pending(obs) => last = obs,
            }
            if start.elapsed() >= timeout {
                return Err(Error::timeout(what, timeout, last));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// One observation of a wait: done, or not yet (and what was seen).
pub enum Probe<T> {
    Done(T),
    Pending(String),
}

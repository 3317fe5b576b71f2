//! One client per member: a single-endpoint gRPC channel, so that per-member calls (status,
//! move-leader, snapshot, defragment, alarms) reach exactly the member they are meant for
//! (etcd-client otherwise load-balances over all endpoints). Every call has a timeout.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, GetOptions, MemberAddOptions,
    Txn, TxnOp,
};
use serde::Serialize;

use crate::config::TlsMaterial;
use crate::error::{Error, Result, chain};

/// An etcd member ID (printed in hex, as etcdctl does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(pub u64);

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A member as the member list reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: MemberId,
    /// Empty until the member has started and published its name.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// True once the member has started and published its name and client URLs.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }

    /// The member's name, or `(unstarted <id>)`.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("(unstarted {})", self.id)
        } else {
            self.name.clone()
        }
    }

    fn from_pb(m: &etcd_client::Member) -> Self {
        Member {
            id: MemberId(m.id()),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// What one member says about itself (`etcdctl endpoint status`).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// The answering member's ID (from the response header).
    pub member_id: MemberId,
    pub cluster_id: MemberId,
    pub version: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    /// The leader this member knows of (0: none).
    pub leader: MemberId,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub errors: Vec<String>,
}

/// A member list as one member sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberList {
    pub cluster_id: MemberId,
    /// The answering member.
    pub member_id: MemberId,
    pub members: Vec<Member>,
}

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    pub member_id: MemberId,
    /// `NOSPACE` or `CORRUPT`.
    pub alarm: String,
}

/// The result of `hash_kv` on one member.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HashKv {
    pub hash: u32,
    pub compact_revision: i64,
    /// The member's current revision.
    pub header_revision: i64,
}

/// A client bound to exactly one member endpoint.
#[derive(Clone)]
pub struct MemberClient {
    endpoint: String,
    client: Client,
    command_timeout: Duration,
}

impl std::fmt::Debug for MemberClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Describes an etcd-client error: the gRPC message for a status, the source chain otherwise.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            let src = std::error::Error::source(s).map(chain).unwrap_or_default();
            match (msg.is_empty(), src.is_empty()) {
                (true, true) => format!("{:?}", s.code()),
                (false, true) => msg.to_string(),
                (true, false) => src,
                (false, false) if msg.contains(&src) => msg.to_string(),
                (false, false) => format!("{msg}: {src}"),
            }
        }
        other => chain(other),
    }
}

/// A hint for a connection error, naming the flag that fixes it.
fn connect_hint(detail: &str, endpoint: &str, tls: Option<&TlsMaterial>, dial: Duration) -> String {
    let d = detail.to_ascii_lowercase();
    if d.contains("unknownissuer")
        || d.contains("unknown issuer")
        || d.contains("invalid peer certificate")
        || d.contains("badsignature")
    {
        let ca = tls
            .and_then(|t| t.cacert_path.as_ref())
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default();
        return format!(
            ". The server's TLS certificate is not signed by the CA{ca}: pass with --cacert the CA that signed etcd's server certificate (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)"
        );
    }
    if d.contains("certificaterequired") || d.contains("certificate required") {
        return ". The server requires a client certificate: pass --cert and --key".into();
    }
    if d.contains("connection refused") {
        return ". Nothing listens there: is etcd running, and is this its client URL (--advertise-client-urls)?".into();
    }
    if d.contains("timed out") || d.contains("deadline") || d.contains("no answer within") {
        return format!(
            ". No answer within --dial-timeout {}s: check the address and firewalls",
            dial.as_secs_f64()
        );
    }
    if endpoint.starts_with("http://") {
        return ". If etcd serves TLS, use https:// endpoints with --cacert".into();
    }
    if endpoint.starts_with("https://") && tls.is_none_or(|t| t.ca.is_none()) {
        return ". For https endpoints pass --cacert (the CA of etcd's server certificate)".into();
    }
    String::new()
}

impl MemberClient {
    /// Connects eagerly (TCP, TLS and HTTP/2 handshakes within `dial`), so that a wrong address or
    /// CA is reported here, by name.
    pub(crate) async fn connect(
        endpoint: &str,
        tls: Option<&TlsMaterial>,
        dial: Duration,
        command_timeout: Duration,
    ) -> Result<Self> {
        let connect_err = |detail: String| Error::Connect {
            endpoint: endpoint.to_string(),
            hint: connect_hint(&detail, endpoint, tls, dial),
            detail,
        };
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::InvalidInput(format!("endpoint {endpoint:?}: {}", chain(&e))))?
            .connect_timeout(dial)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20));
        if endpoint.starts_with("https://") {
            let cfg = tls.map(TlsMaterial::tonic).unwrap_or_default();
            ep = ep
                .tls_config(cfg)
                .map_err(|e| connect_err(format!("TLS configuration: {}", chain(&e))))?;
        }
        let channel = match tokio::time::timeout(dial, ep.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_err(chain(&e))),
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {}s",
                    dial.as_secs_f64()
                )));
            }
        };
        let client = Client::from_channel(etcd_client::Channel::Tonic(channel), None)
            .await
            .map_err(|e| connect_err(describe(&e)))?;
        Ok(MemberClient {
            endpoint: endpoint.to_string(),
            client,
            command_timeout,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The per-request timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub(crate) fn raw(&self) -> Client {
        self.client.clone()
    }

    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Rpc {
                op,
                endpoint: self.endpoint.clone(),
                detail: describe(&e),
            }),
            Err(_) => Err(Error::Rpc {
                op,
                endpoint: self.endpoint.clone(),
                detail: format!("no answer within {}s", timeout.as_secs_f64()),
            }),
        }
    }

    /// `Status` of this member.
    pub async fn status(&self) -> Result<EndpointStatus> {
        let mut c = self.raw();
        let r = self
            .call("status", self.command_timeout, c.status())
            .await?;
        let (member_id, cluster_id) = r
            .header()
            .map(|h| (h.member_id(), h.cluster_id()))
            .unwrap_or_default();
        Ok(EndpointStatus {
            member_id: MemberId(member_id),
            cluster_id: MemberId(cluster_id),
            version: r.version().to_string(),
            db_size: r.db_size(),
            db_size_in_use: r.raft_used_db_size(),
            leader: MemberId(r.leader()),
            is_learner: r.is_learner(),
            raft_term: r.raft_term(),
            raft_index: r.raft_index(),
            raft_applied_index: r.raft_applied_index(),
            errors: r.errors().to_vec(),
        })
    }

    /// The member list as this member sees it (served locally, not linearizable).
    pub async fn member_list(&self) -> Result<MemberList> {
        let mut c = self.raw();
        let r = self
            .call("member list", self.command_timeout, c.member_list())
            .await?;
        let (member_id, cluster_id) = r
            .header()
            .map(|h| (h.member_id(), h.cluster_id()))
            .unwrap_or_default();
        Ok(MemberList {
            cluster_id: MemberId(cluster_id),
            member_id: MemberId(member_id),
            members: r.members().iter().map(Member::from_pb).collect(),
        })
    }

    /// Active alarms of the whole cluster.
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        let mut c = self.raw();
        let r = self
            .call(
                "alarm list",
                self.command_timeout,
                c.alarm(AlarmAction::Get, AlarmType::None, None),
            )
            .await?;
        Ok(r.alarms()
            .iter()
            .map(|a| Alarm {
                member_id: MemberId(a.member_id()),
                alarm: a.alarm().as_str_name().to_string(),
            })
            .collect())
    }

    /// Deactivates one alarm.
    pub async fn alarm_disarm(&self, alarm: &Alarm) -> Result<()> {
        let ty = AlarmType::from_str_name(&alarm.alarm)
            .ok_or_else(|| Error::InvalidInput(format!("unknown alarm type {:?}", alarm.alarm)))?;
        let mut opts = AlarmOptions::new();
        opts.with_member(alarm.member_id.0);
        let mut c = self.raw();
        self.call(
            "alarm disarm",
            self.command_timeout,
            c.alarm(AlarmAction::Deactivate, ty, Some(opts)),
        )
        .await?;
        Ok(())
    }

    /// Defragments this member's backend (it blocks the member meanwhile).
    pub async fn defragment(&self, timeout: Duration) -> Result<()> {
        let mut c = self.raw();
        self.call("defragment", timeout, c.defragment()).await?;
        Ok(())
    }

    /// `hash_kv` at `revision` (0: the current one).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKv> {
        let mut c = self.raw();
        let r = self
            .call("hash_kv", self.command_timeout, c.hash_kv(revision))
            .await?;
        Ok(HashKv {
            hash: r.hash(),
            compact_revision: r.compact_version(),
            header_revision: r.header().map(|h| h.revision()).unwrap_or(0),
        })
    }

    /// Moves leadership to `target`. Must be sent to the current leader.
    pub async fn move_leader(&self, target: MemberId) -> Result<()> {
        let mut c = self.raw();
        self.call("move-leader", self.command_timeout, c.move_leader(target.0))
            .await?;
        Ok(())
    }

    /// `member add --learner`: returns the new member and the member list after the add.
    pub async fn member_add_learner(&self, peer_url: &str) -> Result<(Member, Vec<Member>)> {
        let mut c = self.raw();
        let r = self
            .call(
                "member add --learner",
                self.command_timeout,
                c.member_add(
                    vec![peer_url.to_string()],
                    Some(MemberAddOptions::new().with_is_learner()),
                ),
            )
            .await?;
        let m = r.member().map(Member::from_pb).ok_or_else(|| Error::Rpc {
            op: "member add --learner",
            endpoint: self.endpoint.clone(),
            detail: "the response names no member".into(),
        })?;
        Ok((m, r.member_list().iter().map(Member::from_pb).collect()))
    }

    /// `member remove`: returns the member list after the removal.
    pub async fn member_remove(&self, id: MemberId) -> Result<Vec<Member>> {
        let mut c = self.raw();
        let r = self
            .call("member remove", self.command_timeout, c.member_remove(id.0))
            .await?;
        Ok(r.members().iter().map(Member::from_pb).collect())
    }

    /// `member promote`: returns the member list after the promotion.
    pub async fn member_promote(&self, id: MemberId) -> Result<Vec<Member>> {
        let mut c = self.raw();
        let r = self
            .call(
                "member promote",
                self.command_timeout,
                c.member_promote(id.0),
            )
            .await?;
        Ok(r.members().iter().map(Member::from_pb).collect())
    }

    /// A linearizable read of `key`: the value, if any, and the cluster revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<Vec<u8>>, i64)> {
        let mut c = self.raw();
        let r = self
            .call("get", self.command_timeout, c.get(key, None))
            .await?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        Ok((r.kvs().first().map(|kv| kv.value().to_vec()), rev))
    }

    /// Writes `key`; returns the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64> {
        let mut c = self.raw();
        let r = self
            .call("put", self.command_timeout, c.put(key, value, None))
            .await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Writes up to 128 keys (etcd's default `--max-txn-ops`) in one transaction.
    pub async fn put_batch(&self, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<i64> {
        let ops: Vec<TxnOp> = kvs
            .iter()
            .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
            .collect();
        let txn = Txn::new().when(Vec::<Compare>::new()).and_then(ops);
        let mut c = self.raw();
        let r = self
            .call("txn put", self.command_timeout, c.txn(txn))
            .await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Writes `key` only if it does not exist yet; true if written.
    pub async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.to_vec(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key.to_vec(), value.to_vec(), None)]);
        let mut c = self.raw();
        let r = self
            .call("txn put", self.command_timeout, c.txn(txn))
            .await?;
        Ok(r.succeeded())
    }

    /// All keys and values under `prefix` (linearizable, read in pages of 1,000 at one revision).
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let mut kv = self.raw().kv_client().max_decoding_message_size(256 << 20);
            let mut r = self
                .call(
                    "get prefix",
                    self.command_timeout,
                    kv.get(start.clone(), Some(opts)),
                )
                .await?;
            if revision == 0 {
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = r.more();
            let kvs = r.take_kvs();
            let Some(last) = kvs.last() else { break };
            let mut next = last.key().to_vec();
            next.push(0);
            out.extend(kvs.into_iter().map(|kv| {
                let (k, v) = kv.into_key_value();
                (k, v)
            }));
            if !more {
                break;
            }
            start = next;
        }
        Ok(out)
    }

    /// The number of keys under `prefix` (linearizable).
    pub async fn count_prefix(&self, prefix: &[u8]) -> Result<i64> {
        let opts = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_count_only();
        let mut c = self.raw();
        let r = self
            .call(
                "get --count-only",
                self.command_timeout,
                c.get(prefix, Some(opts)),
            )
            .await?;
        Ok(r.count())
    }
}

/// The end of the key range that holds every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// True if an RPC error is etcd's "learner not in sync yet" refusal of a promote.
pub(crate) fn is_not_in_sync(e: &Error) -> bool {
    matches!(e, Error::Rpc { detail, .. } if detail.contains("in sync with leader"))
}

/// True if an RPC error is worth retrying: etcd's "the cluster has not been fully connected for
/// 5 s" refusals of membership changes, elections, timeouts and lost connections.
pub(crate) fn is_transient(e: &Error) -> bool {
    let Error::Rpc { detail, .. } = e else {
        return false;
    };
    let d = detail.to_ascii_lowercase();
    [
        "unhealthy cluster",
        "not enough started members",
        "leader changed",
        "no leader",
        "timed out",
        "no answer within",
        "too many requests",
        "server stopped",
        "transport",
        "connection",
        "unavailable",
        "deadline",
    ]
    .iter()
    .any(|p| d.contains(p))
}

/// True if an RPC error says the member does not exist (any more).
pub(crate) fn is_member_not_found(e: &Error) -> bool {
    matches!(e, Error::Rpc { detail, .. } if detail.contains("member not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
    }
}

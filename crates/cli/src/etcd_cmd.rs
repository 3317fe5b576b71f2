//! `theseus etcd …`: wiring of the theseus-etcd crate, with etcdctl's flag names and output in
//! the style of `etcdctl -w table`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use theseus_etcd::local::{LocalLauncher, LocalOptions};
use theseus_etcd::snapshot::{RestoreOptions, RestoreTool, SaveOptions, SnapshotInfo};
use theseus_etcd::{
    ClusterStatus, CommandHooks, Etcd, EtcdConfig, Event, MemberHooks, MigrateEntry, NewMember,
    ReplaceOptions, ReplaceReport,
};

use crate::BadInput;

/// Parses `500ms`, `2s`, `5m`, `1h` or a number of seconds.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How to reach the cluster: etcdctl's flags and environment variables.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Client URLs of etcd members, comma-separated (https://10.0.0.1:2379 or host:port).
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// CA bundle that signed etcd's server certificates (kubeadm: /etc/kubernetes/pki/etcd/ca.crt).
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Client certificate (kubeadm: /etc/kubernetes/pki/etcd/healthcheck-client.crt).
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Timeout for connecting to a member.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// Timeout for one request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    command_timeout: Duration,
}

impl Conn {
    fn etcd(&self) -> Result<Etcd> {
        Etcd::new(EtcdConfig {
            endpoints: self.endpoints.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
        })
        .map_err(lib_err)
    }
}

/// Output format.
#[derive(Args, Debug, Clone)]
pub struct Out {
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl Out {
    fn json(&self) -> bool {
        self.output == "json"
    }
}

/// How new members get started and old ones stopped.
#[derive(Args, Debug, Clone)]
pub struct HookArgs {
    /// Command (sh -c) that starts the new member and returns once etcd is launched. Placeholders
    /// {name} {member_id} {peer_url} {client_url} {initial_cluster} {initial_cluster_state}; the
    /// same values are in THESEUS_ETCD_* environment variables.
    #[arg(long, value_name = "CMD", conflicts_with = "launcher")]
    start_command: Option<String>,
    /// Command (sh -c) that stops a removed member and wipes its data dir (same placeholders).
    /// Without it, theseus tells you which member to stop by hand.
    #[arg(long, value_name = "CMD", conflicts_with = "launcher")]
    stop_command: Option<String>,
    /// `local`: run new members on this machine with --etcd-bin, data in --local-dir (for demos
    /// and tests; the members keep running after theseus exits).
    #[arg(long, value_parser = ["local"])]
    launcher: Option<String>,
    /// Directory of the local launcher: NAME.etcd/ data dirs, NAME.log, NAME.pid.
    #[arg(long, value_name = "DIR", default_value = "theseus-etcd-local")]
    local_dir: PathBuf,
    /// The etcd binary for the local launcher.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Extra flag for locally launched etcd (repeatable), e.g. --local-etcd-arg=--heartbeat-interval=50.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    local_etcd_arg: Vec<String>,
    /// Timeout for each start or stop command.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    hook_timeout: Duration,
}

impl HookArgs {
    fn hooks(&self) -> Result<Box<dyn MemberHooks>> {
        if self.launcher.is_some() {
            let l = LocalLauncher::new(
                &self.local_dir,
                LocalOptions {
                    etcd_bin: self.etcd_bin.clone(),
                    extra_args: self.local_etcd_arg.clone(),
                    ..LocalOptions::default()
                },
            )
            .map_err(lib_err)?;
            return Ok(Box::new(l));
        }
        if self.start_command.is_none() {
            return Err(BadInput(
                "how should the new member be started? Give --start-command CMD (e.g. 'ssh {name} systemctl start etcd') or --launcher local".into(),
            )
            .into());
        }
        Ok(Box::new(CommandHooks {
            start: self.start_command.clone(),
            stop: self.stop_command.clone(),
            timeout: self.hook_timeout,
        }))
    }
}

/// Timeouts of a replacement.
#[derive(Args, Debug, Clone)]
pub struct Timing {
    /// How long the new member may take to start and catch up with the leader.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    catch_up_timeout: Duration,
    /// How long the promotion is retried while etcd says the learner is not in sync.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    promote_timeout: Duration,
    /// How long to wait for elections, leadership moves, removals and member lists to settle.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// A voter that does not answer for this long counts as down.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    down_grace: Duration,
}

impl Timing {
    fn options(&self) -> ReplaceOptions {
        ReplaceOptions {
            catch_up_timeout: self.catch_up_timeout,
            promote_timeout: self.promote_timeout,
            settle_timeout: self.settle_timeout,
            down_grace: self.down_grace,
            poll_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// Every member's status and a health verdict (exit code 1 when unhealthy).
    ///
    /// A table like `etcdctl endpoint status --cluster -w table`, then the verdict: every member
    /// answers, every member reports the same member list and cluster ID, exactly one leader, no
    /// alarms, no learner left over.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
    },
    /// Replace one member safely (learner first, leader moved, quorum kept).
    ///
    /// Health and quorum checks, add the new member as a learner, start it, wait until it caught
    /// up, promote it, move leadership off the old member, remove the old member through another
    /// member, verify, stop and wipe it. A dead old member is removed first. A failure before the
    /// promotion removes the learner again; running the same command again finishes the job.
    Replace(Box<ReplaceArgs>),
    /// Replace every member one at a time: dead ones first, then followers, the leader last.
    ///
    /// Each member is replaced as `replace` does; health is verified between members and
    /// hash_kv compared on every member at the end. Running it again after a failure skips the
    /// members already replaced. Example:
    ///
    ///   theseus etcd migrate --map etcd-a=etcd-x,etcd-b=etcd-y \
    ///     --new-peer-urls etcd-x=https://10.0.0.21:2380,etcd-y=https://10.0.0.22:2380 \
    ///     --new-client-urls etcd-x=https://10.0.0.21:2379,etcd-y=https://10.0.0.22:2379 \
    ///     --start-command 'ssh {name} systemctl start etcd'
    #[command(verbatim_doc_comment)]
    Migrate(Box<MigrateArgs>),
    /// Snapshots: save from a healthy member, status of a file, restore a member's data dir.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Defragment every member, one at a time: followers first, the leader last.
    Defrag {
        /// Timeout for one member's defragmentation.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
    },
    /// List or disarm alarms (NOSPACE, CORRUPT).
    Alarm {
        #[command(subcommand)]
        command: AlarmCommand,
    },
}

/// Arguments of `theseus etcd replace`.
#[derive(Args, Debug)]
pub struct ReplaceArgs {
    /// Name of the member to replace.
    #[arg(long)]
    member: String,
    /// Name of the new member (default: the old name with "-new").
    #[arg(long)]
    new_name: Option<String>,
    /// Peer URL of the new member (http(s)://HOST:PORT).
    #[arg(long, value_name = "URL")]
    new_peer_url: String,
    /// Client URL of the new member.
    #[arg(long, value_name = "URL")]
    new_client_url: String,
    #[command(flatten)]
    hooks: HookArgs,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Out,
}

/// Arguments of `theseus etcd migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// OLD=NEW member names, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "OLD=NEW,..."
    )]
    map: Vec<String>,
    /// NEW=PEER_URL for every new member, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "NEW=URL,..."
    )]
    new_peer_urls: Vec<String>,
    /// NEW=CLIENT_URL for every new member, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "NEW=URL,..."
    )]
    new_client_urls: Vec<String>,
    #[command(flatten)]
    hooks: HookArgs,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Out,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stream a snapshot from one healthy member to FILE (via FILE.part, fsynced, sha256 trailer
    /// verified, renamed) and print its revision, hash, key count and size.
    Save {
        file: PathBuf,
        /// The member to save from (name or client URL); default: the only endpoint, or a
        /// healthy follower.
        #[arg(long)]
        member: Option<String>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
    },
    /// Verify a snapshot file's sha256 trailer and print its hash, revision, keys and size.
    Status {
        file: PathBuf,
        /// Accept a file without a valid sha256 trailer (e.g. a copy of member/snap/db).
        #[arg(long)]
        skip_hash_check: bool,
        #[command(flatten)]
        out: Out,
    },
    /// Restore one member's data dir from FILE (run once per member of the new cluster), with
    /// `etcdutl` (etcd 3.5+) or `etcdctl` (3.4). Refuses a corrupt file.
    Restore(Box<RestoreArgs>),
}

/// Arguments of `theseus etcd snapshot restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    file: PathBuf,
    /// This member's name.
    #[arg(long)]
    name: String,
    /// NAME=PEER_URL of every member of the restored cluster, comma-separated.
    #[arg(long)]
    initial_cluster: String,
    /// A new cluster token (the restored cluster must never join the old one).
    #[arg(long)]
    initial_cluster_token: String,
    /// This member's peer URLs (default: its entries in --initial-cluster).
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// The new data dir (must not exist or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// A separate WAL dir.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Restore even without a valid sha256 trailer.
    #[arg(long)]
    skip_hash_check: bool,
    /// Use this etcdctl (3.4) for the restore.
    #[arg(long, value_name = "PATH", conflicts_with = "etcdutl")]
    etcdctl: Option<PathBuf>,
    /// Use this etcdutl (3.5+) for the restore.
    #[arg(long, value_name = "PATH")]
    etcdutl: Option<PathBuf>,
    #[command(flatten)]
    out: Out,
}

#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// List active alarms.
    List {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
    },
    /// Disarm every active alarm (fix the cause first: free space, or replace a corrupt member).
    Disarm {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
    },
}

/// Converts a library error: bad input becomes [`BadInput`] (exit code 2).
fn lib_err(e: theseus_etcd::Error) -> anyhow::Error {
    if e.is_bad_input() {
        BadInput(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Bytes as etcdctl prints them (go-humanize: SI units).
fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 10.0 {
        return format!("{n} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let e = (n.ln() / 1000f64.ln()).floor().min(5.0);
    let v = (n / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if v < 10.0 {
        format!("{v:.1} {}", units[e as usize])
    } else {
        format!("{v:.0} {}", units[e as usize])
    }
}

/// A bordered table like etcdctl's `-w table`.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let sep: String = w
        .iter()
        .map(|n| format!("+{}", "-".repeat(n + 2)))
        .collect::<String>()
        + "+";
    let line = |cells: Vec<String>| {
        let s: String = cells
            .iter()
            .zip(&w)
            .map(|(c, n)| format!("| {c:<n$} "))
            .collect();
        println!("{s}|");
    };
    println!("{sep}");
    line(
        headers
            .iter()
            .zip(&w)
            .map(|(h, n)| format!("{h:^n$}"))
            .collect(),
    );
    println!("{sep}");
    for r in rows {
        line(r.clone());
    }
    println!("{sep}");
}

fn print_status(st: &ClusterStatus) {
    let rows: Vec<Vec<String>> = st
        .members
        .iter()
        .map(|m| {
            let s = m.status.as_ref();
            let opt =
                |f: &dyn Fn(&theseus_etcd::EndpointStatus) -> String| s.map(f).unwrap_or_default();
            vec![
                m.member.id.to_string(),
                m.member.label(),
                m.endpoint.clone().unwrap_or_default(),
                opt(&|s| s.version.clone()),
                opt(&|s| human_bytes(s.db_size)),
                opt(&|s| (s.leader == m.member.id).to_string()),
                m.member.is_learner.to_string(),
                opt(&|s| s.raft_term.to_string()),
                opt(&|s| s.raft_index.to_string()),
                opt(&|s| s.raft_applied_index.to_string()),
                match (&m.error, s) {
                    (Some(e), _) => e.clone(),
                    (None, Some(s)) => s.errors.join("; "),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "ENDPOINT",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS",
        ],
        &rows,
    );
    let v = &st.verdict;
    let leader = st
        .leader_member()
        .map(|m| m.member.label())
        .unwrap_or_else(|| "none".into());
    if v.healthy {
        println!(
            "HEALTHY: {} of {} voters answer, leader {leader}, quorum {}, tolerates {} failure(s)",
            v.voters_up, v.voters, v.quorum, v.fault_tolerance
        );
    } else {
        println!(
            "UNHEALTHY: {} of {} voters answer, leader {leader}, quorum {}",
            v.voters_up, v.voters, v.quorum
        );
        for p in &v.problems {
            println!("  - {p}");
        }
    }
}

fn print_event(e: &Event) {
    if e.member.is_empty() {
        eprintln!("{}: {}", e.step, e.message);
    } else {
        eprintln!("[{}] {}: {}", e.member, e.step, e.message);
    }
}

fn print_replace(r: &ReplaceReport) {
    let old = r
        .old
        .as_ref()
        .map(|o| format!("{} ({})", o.name, o.id))
        .unwrap_or_else(|| "(already removed)".into());
    println!(
        "replaced {old} by {} ({}) in {:.1}s: {} voters{}{}{}",
        r.new.name,
        r.new.id,
        r.elapsed_ms as f64 / 1000.0,
        r.voters,
        if r.removed_first {
            "; the old member was dead and removed first"
        } else {
            ""
        },
        if r.moved_leader {
            "; leadership moved off the old member"
        } else {
            ""
        },
        r.resumed
            .as_ref()
            .map(|s| format!("; resumed: {s}"))
            .unwrap_or_default()
    );
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn snapshot_rows(i: &SnapshotInfo) -> Vec<Vec<String>> {
    vec![vec![
        format!("{:x}", i.db.hash),
        i.db.revision.to_string(),
        i.db.total_key.to_string(),
        human_bytes(i.db.total_size as i64),
    ]]
}

fn print_snapshot_info(i: &SnapshotInfo) {
    table(
        &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
        &snapshot_rows(i),
    );
    match &i.sha256 {
        Some(s) => println!("sha256 trailer verified: {s}"),
        None => println!("sha256 trailer: not checked"),
    }
}

/// Parses `A=B` pairs; `what` names the flag.
fn pairs(what: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| BadInput(format!("{what}: {s:?} is not NAME=VALUE")).into())
        })
        .collect()
}

pub async fn run(cmd: EtcdCommand) -> Result<()> {
    match cmd {
        EtcdCommand::Status { conn, out } => {
            let etcd = conn.etcd()?;
            let st = etcd.observe().await.map_err(lib_err)?;
            if out.json() {
                print_json(&st)?;
            } else {
                print_status(&st);
            }
            if !st.verdict.healthy {
                anyhow::bail!(
                    "the cluster is not healthy ({} problem(s) listed above)",
                    st.verdict.problems.len()
                );
            }
            Ok(())
        }
        EtcdCommand::Replace(args) => {
            let ReplaceArgs {
                member,
                new_name,
                new_peer_url,
                new_client_url,
                hooks,
                timing,
                conn,
                out,
            } = *args;
            let new = NewMember {
                name: new_name.unwrap_or_else(|| format!("{member}-new")),
                peer_url: new_peer_url,
                client_url: new_client_url,
            };
            theseus_etcd::replace::validate_new(&member, &new).map_err(lib_err)?;
            let hooks = hooks.hooks()?;
            let etcd = conn.etcd()?;
            let r = theseus_etcd::replace_member(
                &etcd,
                &member,
                &new,
                hooks.as_ref(),
                &timing.options(),
                &print_event,
            )
            .await
            .map_err(lib_err)?;
            if out.json() {
                print_json(&r)
            } else {
                print_replace(&r);
                Ok(())
            }
        }
        EtcdCommand::Migrate(args) => {
            let MigrateArgs {
                map,
                new_peer_urls,
                new_client_urls,
                hooks,
                timing,
                conn,
                out,
            } = *args;
            let map = pairs("--map", &map)?;
            let peers = pairs("--new-peer-urls", &new_peer_urls)?;
            let clients = pairs("--new-client-urls", &new_client_urls)?;
            let find = |what: &str, v: &[(String, String)], name: &str| -> Result<String> {
                v.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, u)| u.clone())
                    .ok_or_else(|| {
                        BadInput(format!("{what} has no URL for the new member {name:?}")).into()
                    })
            };
            for (what, v) in [("--new-peer-urls", &peers), ("--new-client-urls", &clients)] {
                if let Some((n, _)) = v.iter().find(|(n, _)| !map.iter().any(|(_, new)| new == n)) {
                    return Err(BadInput(format!(
                        "{what} names {n:?}, which is not a new member in --map"
                    ))
                    .into());
                }
            }
            let mut entries = Vec::new();
            for (old, new) in &map {
                entries.push(MigrateEntry {
                    old: old.clone(),
                    new: NewMember {
                        name: new.clone(),
                        peer_url: find("--new-peer-urls", &peers, new)?,
                        client_url: find("--new-client-urls", &clients, new)?,
                    },
                });
            }
            theseus_etcd::migrate::validate_map(&entries).map_err(lib_err)?;
            let hooks = hooks.hooks()?;
            let etcd = conn.etcd()?;
            let r = theseus_etcd::migrate(
                &etcd,
                &entries,
                hooks.as_ref(),
                &timing.options(),
                &print_event,
            )
            .await
            .map_err(lib_err)?;
            if out.json() {
                return print_json(&r);
            }
            for x in &r.replaced {
                print_replace(x);
            }
            let hashes: Vec<String> = r
                .hash_kv
                .members
                .iter()
                .map(|m| format!("{}={:x}", m.name, m.hash))
                .collect();
            println!(
                "migrated {} member(s) in {:.1}s; hash_kv at revision {} equal on every member ({})",
                r.replaced.len(),
                r.elapsed_ms as f64 / 1000.0,
                r.hash_kv.revision,
                hashes.join(", ")
            );
            println!(
                "the cluster's client URLs are now: {}",
                etcd.member_list()
                    .await
                    .map(|l| l
                        .members
                        .iter()
                        .flat_map(|m| m.client_urls.clone())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            );
            Ok(())
        }
        EtcdCommand::Snapshot { command } => run_snapshot(command).await,
        EtcdCommand::Defrag { timeout, conn, out } => {
            let etcd = conn.etcd()?;
            let json = out.json();
            let res = theseus_etcd::defragment_all(&etcd, timeout, &|r| {
                if !json {
                    eprintln!(
                        "defragmented {} ({}){}: {} -> {} in {:.1}s",
                        r.name,
                        r.endpoint,
                        if r.was_leader { " (leader)" } else { "" },
                        human_bytes(r.db_size_before),
                        human_bytes(r.db_size_after),
                        r.elapsed_ms as f64 / 1000.0
                    )
                }
            })
            .await
            .map_err(lib_err)?;
            if json {
                return print_json(&res);
            }
            let rows: Vec<Vec<String>> = res
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.endpoint.clone(),
                        r.was_leader.to_string(),
                        human_bytes(r.db_size_before),
                        human_bytes(r.db_size_after),
                        format!("{:.1}s", r.elapsed_ms as f64 / 1000.0),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "ENDPOINT",
                    "LEADER",
                    "DB SIZE BEFORE",
                    "DB SIZE AFTER",
                    "TIME",
                ],
                &rows,
            );
            Ok(())
        }
        EtcdCommand::Alarm { command } => {
            let (conn, out, disarm) = match command {
                AlarmCommand::List { conn, out } => (conn, out, false),
                AlarmCommand::Disarm { conn, out } => (conn, out, true),
            };
            let etcd = conn.etcd()?;
            let alarms = if disarm {
                theseus_etcd::alarm_disarm(&etcd).await
            } else {
                theseus_etcd::alarm_list(&etcd).await
            }
            .map_err(lib_err)?;
            if out.json() {
                return print_json(&alarms);
            }
            if alarms.is_empty() {
                println!("no alarms");
            }
            for a in &alarms {
                println!(
                    "{}memberID:{} ({}) alarm:{}",
                    if disarm { "disarmed " } else { "" },
                    a.alarm.member_id,
                    a.member,
                    a.alarm.alarm
                );
            }
            Ok(())
        }
    }
}

async fn run_snapshot(cmd: SnapshotCommand) -> Result<()> {
    match cmd {
        SnapshotCommand::Save {
            file,
            member,
            conn,
            out,
        } => {
            let etcd = conn.etcd()?;
            let saved = theseus_etcd::snapshot_save(
                &etcd,
                &file,
                &SaveOptions {
                    member,
                    with_status: true,
                    idle_timeout: None,
                },
            )
            .await
            .map_err(lib_err)?;
            if out.json() {
                return print_json(&saved);
            }
            let secs = (saved.elapsed_ms as f64 / 1000.0).max(0.001);
            println!(
                "Snapshot saved at {} from {} ({}): {} in {:.2}s ({:.0} MB/s)",
                saved.path.display(),
                saved.member,
                saved.endpoint,
                human_bytes(saved.bytes as i64),
                secs,
                saved.bytes as f64 / 1e6 / secs
            );
            if let Some(i) = &saved.status {
                print_snapshot_info(i);
            }
            Ok(())
        }
        SnapshotCommand::Status {
            file,
            skip_hash_check,
            out,
        } => {
            let i = theseus_etcd::snapshot::snapshot_status_async(&file, skip_hash_check)
                .await
                .map_err(lib_err)?;
            if out.json() {
                print_json(&i)
            } else {
                print_snapshot_info(&i);
                Ok(())
            }
        }
        SnapshotCommand::Restore(args) => {
            let RestoreArgs {
                file,
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                data_dir,
                wal_dir,
                skip_hash_check,
                etcdctl,
                etcdutl,
                out,
            } = *args;
            let tool = match (etcdctl, etcdutl) {
                (Some(p), _) => RestoreTool::Etcdctl(p),
                (None, Some(p)) => RestoreTool::Etcdutl(p),
                (None, None) => RestoreTool::Auto,
            };
            let r = theseus_etcd::snapshot_restore(
                &file,
                &RestoreOptions {
                    name,
                    initial_cluster: initial_cluster.clone(),
                    initial_cluster_token,
                    initial_advertise_peer_urls,
                    data_dir,
                    wal_dir,
                    skip_hash_check,
                    tool,
                    timeout: Duration::from_secs(600),
                },
            )
            .await
            .map_err(lib_err)?;
            if out.json() {
                return print_json(&r);
            }
            if let Some(i) = &r.snapshot {
                print_snapshot_info(i);
            }
            println!(
                "restored member {} into {} with {}",
                r.name,
                r.data_dir.display(),
                r.tool
            );
            println!(
                "start it with: etcd --name {} --data-dir {} --initial-advertise-peer-urls {} --listen-peer-urls {} --initial-cluster {} (plus its client URLs and TLS flags)",
                r.name,
                r.data_dir.display(),
                r.initial_advertise_peer_urls,
                r.initial_advertise_peer_urls,
                initial_cluster
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
        assert_eq!(human_bytes(536_870_912), "537 MB");
    }
}

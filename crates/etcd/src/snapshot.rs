//! Snapshots: save from one healthy member (streamed to `FILE.part`, fsynced, the sha256 trailer
//! verified, renamed), status of a file, and restore through the installed etcd tools
//! (`etcdctl snapshot restore` on 3.4, `etcdutl snapshot restore` on 3.5+).
//!
//! A snapshot stream is the bbolt database followed by the sha256 of the database (32 bytes); a
//! file with a trailer has `size % 512 == 32`, which is how etcd itself tells.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::bolt::{DbStatus, db_status};
use crate::client::MemberClient;
use crate::cluster::Etcd;
use crate::config::EtcdUrl;
use crate::error::{Error, Result, chain};
use crate::hooks::tail;

const SHA_LEN: u64 = 32;

/// The sha256 trailer of a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Integrity {
    /// The trailer matches the database.
    Verified,
    /// There is no trailer (a copy of `member/snap/db`, not a `snapshot save` file).
    NoTrailer,
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// Bytes in the file, trailer included.
    pub file_size: u64,
    pub integrity: Integrity,
    /// sha256 of the database, hex (when there is a trailer).
    pub sha256: Option<String>,
    #[serde(flatten)]
    pub db: DbStatus,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::BadSnapshot {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Checks the sha256 trailer (unless `skip_hash_check`) and reads the database. Blocking.
pub fn snapshot_status(path: &Path, skip_hash_check: bool) -> Result<SnapshotInfo> {
    let mut f = File::open(path).map_err(|source| Error::ReadFile {
        what: "snapshot",
        path: path.to_path_buf(),
        source,
    })?;
    let size = f
        .metadata()
        .map_err(|source| Error::ReadFile {
            what: "snapshot",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let has_trailer = size % 512 == SHA_LEN;
    let db_len = if has_trailer { size - SHA_LEN } else { size };
    let mut sha = None;
    if has_trailer && !skip_hash_check {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = db_len;
        while left > 0 {
            let n = buf.len().min(left as usize);
            f.read_exact(&mut buf[..n])
                .map_err(|e| bad(path, format!("read: {e}")))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let mut trailer = [0u8; 32];
        f.read_exact(&mut trailer)
            .map_err(|e| bad(path, format!("read the sha256 trailer: {e}")))?;
        let digest = h.finalize();
        if digest.as_slice() != trailer {
            return Err(bad(
                path,
                format!(
                    "sha256 mismatch: the file says {} but its database hashes to {}; the file is corrupt (take a new snapshot, or pass --skip-hash-check to use it anyway)",
                    hex(&trailer),
                    hex(&digest)
                ),
            ));
        }
        sha = Some(hex(&digest));
    } else if !has_trailer && !skip_hash_check {
        return Err(bad(
            path,
            format!(
                "no sha256 trailer ({size} bytes, not 32 more than a multiple of 512): it was not written by `snapshot save` (a copy of member/snap/db?) or it is truncated; pass --skip-hash-check to use it anyway"
            ),
        ));
    }
    let db =
        db_status(&f, db_len).map_err(|e| bad(path, format!("not a valid etcd database: {e}")))?;
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        file_size: size,
        integrity: if has_trailer {
            Integrity::Verified
        } else {
            Integrity::NoTrailer
        },
        sha256: sha,
        db,
    })
}

/// [`snapshot_status`] on a blocking thread.
pub async fn snapshot_status_async(path: &Path, skip_hash_check: bool) -> Result<SnapshotInfo> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || snapshot_status(&p, skip_hash_check))
        .await
        .map_err(|e| bad(path, format!("status task failed: {e}")))?
}

/// Which member to save from.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// A member name or client URL; default: the only endpoint, or a healthy follower.
    pub member: Option<String>,
    /// Also read the saved file for its revision, hash and key count (like `snapshot status`).
    pub with_status: bool,
    /// How long to wait for each chunk of the stream (default: the command timeout).
    pub idle_timeout: Option<Duration>,
}

/// A saved snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SavedSnapshot {
    pub path: PathBuf,
    pub member: String,
    pub endpoint: String,
    /// Bytes written, trailer included.
    pub bytes: u64,
    pub sha256: String,
    pub elapsed_ms: u64,
    pub status: Option<SnapshotInfo>,
}

fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn pick_member(etcd: &Etcd, opts: &SaveOptions) -> Result<(String, MemberClient)> {
    if opts.member.is_none() && etcd.endpoints().len() == 1 {
        let ep = &etcd.endpoints()[0];
        let c = etcd.client(ep).await?;
        let s = c.status().await?;
        if s.is_learner {
            return Err(Error::Refused(format!(
                "{ep} is a learner: save from a voter"
            )));
        }
        if !s.errors.is_empty() {
            return Err(Error::Refused(format!(
                "{ep} reports errors ({}): save from a healthy member",
                s.errors.join("; ")
            )));
        }
        let name = c
            .member_list()
            .await
            .ok()
            .and_then(|l| l.members.into_iter().find(|m| m.id == s.member_id))
            .map(|m| m.label())
            .unwrap_or_else(|| s.member_id.to_string());
        return Ok((name, c));
    }
    let st = etcd.observe().await?;
    let mut cands: Vec<&crate::health::MemberStatus> = st
        .members
        .iter()
        .filter(|m| {
            m.is_up() && m.is_voter() && m.status.as_ref().is_some_and(|s| s.errors.is_empty())
        })
        .collect();
    if let Some(want) = &opts.member {
        let m = st
            .members
            .iter()
            .find(|m| &m.member.name == want || m.member.client_urls.iter().any(|u| u == want))
            .ok_or_else(|| Error::UnknownMember {
                name: want.clone(),
                known: st.names(),
            })?;
        if !cands.iter().any(|c| c.member.id == m.member.id) {
            return Err(Error::Refused(format!(
                "member {} is not a healthy voter ({}): save from another member",
                m.member.label(),
                m.error
                    .clone()
                    .unwrap_or_else(|| "learner or reporting errors".into())
            )));
        }
        cands = vec![m];
    }
    // A follower spares the leader.
    cands.sort_by_key(|m| Some(m.member.id) == st.leader);
    let m = cands.first().ok_or_else(|| {
        Error::Refused(format!(
            "no healthy voter to save a snapshot from: {}",
            st.verdict.problems.join("; ")
        ))
    })?;
    Ok((m.member.name.clone(), etcd.client_for(&m.member).await?))
}

/// Streams a snapshot from one healthy member to `path`: to `path.part`, fsynced, sha256 trailer
/// verified, renamed (and the directory fsynced).
pub async fn snapshot_save(etcd: &Etcd, path: &Path, opts: &SaveOptions) -> Result<SavedSnapshot> {
    let (member, client) = pick_member(etcd, opts).await?;
    let start = Instant::now();
    let part = part_path(path);
    let fail = |detail: String| Error::SnapshotSave {
        path: path.to_path_buf(),
        detail,
    };
    let file =
        File::create(&part).map_err(|e| fail(format!("cannot create {}: {e}", part.display())))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let part2 = part.clone();
    // Disk and hashing on a blocking thread, the stream on the runtime: the two overlap.
    let writer = tokio::task::spawn_blocking(
        move || -> std::result::Result<(u64, [u8; 32], Vec<u8>), String> {
            // Flushing to disk overlaps the stream: a second thread syncs what has been written
            // every 32 MiB, so the final fsync only has the tail left.
            let syncer_file = file
                .try_clone()
                .map_err(|e| format!("open {}: {e}", part2.display()))?;
            let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<()>(1);
            let syncer = std::thread::spawn(move || {
                while sync_rx.recv().is_ok() {
                    let _ = syncer_file.sync_data();
                }
            });
            let mut w = BufWriter::with_capacity(4 << 20, file);
            let mut h = Sha256::new();
            // The last 32 bytes seen so far: the trailer, once the stream ends.
            let mut tail: Vec<u8> = Vec::with_capacity(64);
            let mut total = 0u64;
            let mut unsynced = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)
                    .map_err(|e| format!("write {}: {e}", part2.display()))?;
                total += chunk.len() as u64;
                unsynced += chunk.len() as u64;
                if unsynced >= 32 << 20 {
                    // A sync already running covers most of it: never wait for the syncer.
                    let _ = sync_tx.try_send(());
                    unsynced = 0;
                }
                if chunk.len() >= 32 {
                    h.update(&tail);
                    let cut = chunk.len() - 32;
                    h.update(&chunk[..cut]);
                    tail.clear();
                    tail.extend_from_slice(&chunk[cut..]);
                } else {
                    tail.extend_from_slice(&chunk);
                    if tail.len() > 32 {
                        let cut = tail.len() - 32;
                        h.update(&tail[..cut]);
                        tail.drain(..cut);
                    }
                }
            }
            let f = w
                .into_inner()
                .map_err(|e| format!("flush {}: {}", part2.display(), e.error()))?;
            drop(sync_tx);
            let _ = syncer.join();
            f.sync_all()
                .map_err(|e| format!("fsync {}: {e}", part2.display()))?;
            Ok((total, h.finalize().into(), tail))
        },
    );
    let idle = opts.idle_timeout.unwrap_or(client.command_timeout());
    let streamed: Result<()> = async {
        let mut raw = client.raw();
        let mut stream = client.call("snapshot", idle, raw.snapshot()).await?;
        loop {
            let msg = client
                .call("snapshot stream", idle, stream.message())
                .await?;
            let Some(m) = msg else { break };
            if tx.send(m.blob().to_vec()).await.is_err() {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| fail(format!("writer task failed: {e}")))
        .and_then(|r| r.map_err(fail));
    let cleanup = |e: Error| {
        let _ = std::fs::remove_file(&part);
        e
    };
    streamed.map_err(cleanup)?;
    let (total, digest, trailer) = written.map_err(cleanup)?;
    if total < 512 + SHA_LEN || total % 512 != SHA_LEN {
        return Err(cleanup(fail(format!(
            "the stream from {} ended after {total} bytes, which is not a database plus its sha256 trailer (interrupted?)",
            client.endpoint()
        ))));
    }
    if digest.as_slice() != trailer.as_slice() {
        return Err(cleanup(fail(format!(
            "sha256 mismatch: {} sent {} but the data hashes to {}",
            client.endpoint(),
            hex(&trailer),
            hex(&digest)
        ))));
    }
    std::fs::rename(&part, path).map_err(|e| {
        cleanup(fail(format!(
            "rename {} to {}: {e}",
            part.display(),
            path.display()
        )))
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let status = if opts.with_status {
        // The trailer was verified while streaming: read the database only.
        let mut info = snapshot_status_async(path, true).await?;
        info.sha256 = Some(hex(&digest));
        Some(info)
    } else {
        None
    };
    Ok(SavedSnapshot {
        path: path.to_path_buf(),
        member,
        endpoint: client.endpoint().to_string(),
        bytes: total,
        sha256: hex(&digest),
        elapsed_ms,
        status,
    })
}

/// Which tool restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTool {
    /// `etcdutl` if it is on the PATH (3.5+), else `etcdctl` (3.4).
    Auto,
    Etcdctl(PathBuf),
    Etcdutl(PathBuf),
}

/// Options of a restore, with etcd's flag names.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub name: String,
    /// `name=peerURL,…` of the whole restored cluster.
    pub initial_cluster: String,
    /// A new token, so that the restored members never talk to the old cluster.
    pub initial_cluster_token: String,
    /// Default: this member's URLs in `initial_cluster`.
    pub initial_advertise_peer_urls: Option<String>,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub skip_hash_check: bool,
    pub tool: RestoreTool,
    pub timeout: Duration,
}

/// A restored data directory.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub name: String,
    pub data_dir: PathBuf,
    pub initial_advertise_peer_urls: String,
    /// The tool and its version.
    pub tool: String,
    /// The snapshot as verified before the restore (absent with --skip-hash-check).
    pub snapshot: Option<SnapshotInfo>,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

async fn tool_version(tool: &Path) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(tool)
            .arg("version")
            .env("ETCDCTL_API", "3")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| Error::Tool {
        tool: tool.display().to_string(),
        detail: "`version` did not answer within 20s".into(),
    })?
    .map_err(|e| Error::Tool {
        tool: tool.display().to_string(),
        detail: format!("cannot run it: {e}"),
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.split_once("version:").map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into()))
}

fn minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.trim_start_matches('v').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Chooses the restore tool: returns (is_etcdutl, path, version).
async fn pick_tool(tool: &RestoreTool) -> Result<(bool, PathBuf, String)> {
    let (utl, path) = match tool {
        RestoreTool::Etcdutl(p) => (true, p.clone()),
        RestoreTool::Etcdctl(p) => (false, p.clone()),
        RestoreTool::Auto => match which("etcdutl") {
            Some(p) => (true, p),
            None => match which("etcdctl") {
                Some(p) => (false, p),
                None => {
                    return Err(Error::Tool {
                        tool: "etcdctl/etcdutl".into(),
                        detail: "neither etcdutl (etcd 3.5+) nor etcdctl (3.4) is on the PATH: install etcd's client tools (Debian: etcd-client) or pass --etcdutl/--etcdctl".into(),
                    });
                }
            },
        },
    };
    let version = tool_version(&path).await?;
    if !utl
        && let Some((maj, min)) = minor(&version)
        && (maj, min) >= (3, 6)
    {
        return Err(Error::Tool {
            tool: path.display().to_string(),
            detail: format!(
                "etcdctl {version} has no `snapshot restore` (moved to etcdutl in 3.5, removed in 3.6): install etcdutl or pass --etcdutl"
            ),
        });
    }
    Ok((utl, path, version))
}

/// Parses `--initial-cluster` and returns this member's peer URLs.
fn peer_urls_of(initial_cluster: &str, name: &str) -> Result<Vec<String>> {
    let mut mine = Vec::new();
    let mut names = Vec::new();
    for part in initial_cluster.split(',').filter(|p| !p.trim().is_empty()) {
        let (n, u) = part.split_once('=').ok_or_else(|| {
            Error::InvalidInput(format!(
                "--initial-cluster entry {part:?} is not NAME=PEER_URL"
            ))
        })?;
        EtcdUrl::parse("--initial-cluster URL", u.trim())?;
        if n.trim() == name {
            mine.push(u.trim().to_string());
        }
        names.push(n.trim().to_string());
    }
    if names.is_empty() {
        return Err(Error::InvalidInput(
            "--initial-cluster is empty: give NAME=PEER_URL for every member of the restored cluster".into(),
        ));
    }
    if mine.is_empty() {
        return Err(Error::InvalidInput(format!(
            "--name {name:?} is not in --initial-cluster (names: {})",
            names.join(", ")
        )));
    }
    Ok(mine)
}

/// Restores one member's data directory from a snapshot file through the installed etcd tool.
/// Refuses a file whose sha256 trailer is missing or wrong unless `skip_hash_check`.
pub async fn snapshot_restore(snapshot: &Path, opts: &RestoreOptions) -> Result<RestoreReport> {
    if opts.name.is_empty() {
        return Err(Error::InvalidInput(
            "--name is required: the restored member's name".into(),
        ));
    }
    if opts.initial_cluster_token.is_empty() {
        return Err(Error::InvalidInput(
            "--initial-cluster-token is required: a new token, so that the restored cluster never joins the old one".into(),
        ));
    }
    let mine = peer_urls_of(&opts.initial_cluster, &opts.name)?;
    let advertise = match &opts.initial_advertise_peer_urls {
        Some(a) => {
            for u in a.split(',') {
                EtcdUrl::parse("--initial-advertise-peer-urls", u.trim())?;
            }
            a.clone()
        }
        None => mine.join(","),
    };
    if opts.data_dir.exists() {
        let empty = std::fs::read_dir(&opts.data_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(Error::InvalidInput(format!(
                "--data-dir {} exists and is not empty: restore into a new directory (etcd refuses to overwrite data)",
                opts.data_dir.display()
            )));
        }
        // etcdctl refuses even an empty existing directory.
        let _ = std::fs::remove_dir(&opts.data_dir);
    }
    let info = if opts.skip_hash_check {
        None
    } else {
        Some(snapshot_status_async(snapshot, false).await?)
    };
    let (utl, tool, version) = pick_tool(&opts.tool).await?;
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg("--name")
        .arg(&opts.name)
        .arg("--initial-cluster")
        .arg(&opts.initial_cluster)
        .arg("--initial-cluster-token")
        .arg(&opts.initial_cluster_token)
        .arg("--initial-advertise-peer-urls")
        .arg(&advertise)
        .arg("--data-dir")
        .arg(&opts.data_dir)
        .kill_on_drop(true);
    if let Some(w) = &opts.wal_dir {
        cmd.arg("--wal-dir").arg(w);
    }
    if opts.skip_hash_check {
        cmd.arg("--skip-hash-check");
    }
    if !utl {
        cmd.env("ETCDCTL_API", "3");
    }
    let tool_name = format!("{} {version}", tool.display());
    let out = tokio::time::timeout(opts.timeout, cmd.output())
        .await
        .map_err(|_| Error::Tool {
            tool: tool_name.clone(),
            detail: format!(
                "snapshot restore did not finish within {}s",
                opts.timeout.as_secs_f64()
            ),
        })?
        .map_err(|e| Error::Tool {
            tool: tool_name.clone(),
            detail: format!("cannot run it: {}", chain(&e)),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(Error::Tool {
            tool: tool_name,
            detail: format!("snapshot restore failed ({}){}", out.status, tail(&text)),
        });
    }
    let db = opts.data_dir.join("member").join("snap").join("db");
    if !db.is_file() {
        return Err(Error::Tool {
            tool: tool_name,
            detail: format!(
                "snapshot restore succeeded but {} does not exist{}",
                db.display(),
                tail(&text)
            ),
        });
    }
    Ok(RestoreReport {
        name: opts.name.clone(),
        data_dir: opts.data_dir.clone(),
        initial_advertise_peer_urls: advertise,
        tool: tool_name,
        snapshot: info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parsing() {
        assert_eq!(
            peer_urls_of("a=http://h:1,b=http://h:2,a=http://h:3", "a").unwrap(),
            vec!["http://h:1", "http://h:3"]
        );
        let e = peer_urls_of("a=http://h:1", "z").unwrap_err().to_string();
        assert!(
            e.contains("--name \"z\" is not in --initial-cluster (names: a)"),
            "{e}"
        );
        assert!(peer_urls_of("a", "a").is_err());
        assert!(peer_urls_of("a=h:1", "a").is_err());
        assert_eq!(minor("3.4.23"), Some((3, 4)));
        assert_eq!(minor("v3.6.0"), Some((3, 6)));
    }

    #[test]
    fn status_refuses_files_without_a_valid_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let e = snapshot_status(&p, false).unwrap_err().to_string();
        assert!(e.contains("no sha256 trailer"), "{e}");
        let mut data = vec![1u8; 4096];
        data.extend_from_slice(&[0u8; 32]);
        std::fs::write(&p, &data).unwrap();
        let e = snapshot_status(&p, false).unwrap_err().to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
        let e = snapshot_status(&dir.path().join("none"), false).unwrap_err();
        assert!(e.is_bad_input());
    }
}

//! Helpers for the tests against real etcd: clusters in temporary directories (tmpfs when there
//! is one), a continuous writer through the changing endpoint set, a quorum monitor, hooks that
//! inject failures.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use theseus_etcd::local::{LocalCluster, LocalLauncher, LocalOptions};
use theseus_etcd::{
    Etcd, EtcdConfig, MemberHooks, NewMember, ReplaceOptions, StartSpec, StopSpec, quorum,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A temporary directory, on tmpfs when available (etcd fsyncs a lot).
pub fn tmp() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    let base = std::env::var_os("THESEUS_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
    tempfile::Builder::new()
        .prefix("theseus-etcd-")
        .tempdir_in(base)
        .unwrap()
}

/// Is etcd installed? Tests against real etcd need it.
pub fn have_etcd() -> bool {
    std::path::Path::new("/usr/bin/etcd").is_file()
}

/// A started cluster and its directory (dropped after the cluster: processes first).
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

pub async fn cluster(names: &[&str]) -> TestCluster {
    cluster_with(names, LocalOptions::for_tests()).await
}

pub async fn cluster_with(names: &[&str], opts: LocalOptions) -> TestCluster {
    let dir = tmp();
    let cluster = LocalCluster::start(dir.path(), names, opts).await.unwrap();
    TestCluster { cluster, dir }
}

pub fn etcd(c: &LocalCluster) -> Etcd {
    Etcd::new(c.config()).unwrap()
}

/// Replacement timings for loopback.
pub fn opts() -> ReplaceOptions {
    ReplaceOptions {
        catch_up_timeout: Duration::from_secs(60),
        promote_timeout: Duration::from_secs(30),
        settle_timeout: Duration::from_secs(30),
        down_grace: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
    }
}

/// A new member on free loopback ports.
pub fn new_member(name: &str) -> NewMember {
    NewMember {
        name: name.to_string(),
        peer_url: format!(
            "http://127.0.0.1:{}",
            theseus_etcd::local::free_port().unwrap()
        ),
        client_url: format!(
            "http://127.0.0.1:{}",
            theseus_etcd::local::free_port().unwrap()
        ),
    }
}

/// Prints progress events (visible with --nocapture).
pub fn print_event(e: &theseus_etcd::Event) {
    eprintln!("[{}] {}: {}", e.member, e.step, e.message);
}

/// What the writer saw.
pub struct WriterResult {
    /// Keys whose put was acknowledged (the value is the key).
    pub acked: Vec<String>,
    pub failures: u64,
    pub longest_gap: Duration,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<WriterResult>,
    pub acked_count: Arc<AtomicUsize>,
}

/// Writes `prefix/NNNNNNNN` continuously, round-robin over the voters' client URLs as the member
/// list currently says, rotating on any error.
pub fn start_writer(config: EtcdConfig, prefix: &str) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let prefix = prefix.to_string();
    let (s, a) = (stop.clone(), acked_count.clone());
    let handle = tokio::spawn(async move {
        let etcd = Etcd::new(EtcdConfig {
            command_timeout: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(1),
            ..config
        })
        .unwrap();
        let mut endpoints: Vec<String> = Vec::new();
        let mut acked = Vec::new();
        let mut failures = 0u64;
        let mut last_ack = Instant::now();
        let mut longest = Duration::ZERO;
        let mut i = 0u64;
        let mut next = 0usize;
        let mut since_refresh = 0u32;
        while !s.load(Ordering::Relaxed) {
            if endpoints.is_empty() || since_refresh >= 25 {
                since_refresh = 0;
                if let Ok(l) = etcd.member_list().await {
                    endpoints = l
                        .members
                        .iter()
                        .filter(|m| !m.is_learner)
                        .filter_map(|m| m.client_urls.first().cloned())
                        .collect();
                }
                if endpoints.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let ep = endpoints[next % endpoints.len()].clone();
            let key = format!("{prefix}/{i:08}");
            i += 1;
            since_refresh += 1;
            let ok = match etcd.client(&ep).await {
                Ok(c) => c.put(key.as_bytes(), key.as_bytes()).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                let now = Instant::now();
                longest = longest.max(now.duration_since(last_ack));
                last_ack = now;
                acked.push(key);
                a.fetch_add(1, Ordering::Relaxed);
                next += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                failures += 1;
                next += 1;
                endpoints.clear();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        WriterResult {
            acked,
            failures,
            longest_gap: longest,
        }
    });
    Writer {
        stop,
        handle,
        acked_count,
    }
}

impl Writer {
    pub async fn stop(self) -> WriterResult {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

/// Samples the cluster every 250 ms and counts samples in which fewer than a quorum of voters
/// answered twice in a row (a single slow status call is not quorum loss).
pub struct QuorumMonitor {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, u64, Vec<String>)>,
}

pub fn start_quorum_monitor(config: EtcdConfig) -> QuorumMonitor {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = tokio::spawn(async move {
        let etcd = Etcd::new(config).unwrap();
        let (mut samples, mut lost, mut prev_bad) = (0u64, 0u64, false);
        let mut notes = Vec::new();
        while !s.load(Ordering::Relaxed) {
            let bad = match etcd.observe().await {
                Ok(st) => {
                    let v = st.voters().count();
                    let up = st.voters().filter(|m| m.is_up()).count();
                    if up < quorum(v) {
                        notes.push(format!(
                            "{up} of {v} voters up: {}",
                            st.verdict.problems.join("; ")
                        ));
                        true
                    } else {
                        false
                    }
                }
                Err(e) => {
                    notes.push(e.to_string());
                    true
                }
            };
            samples += 1;
            if bad && prev_bad {
                lost += 1;
            }
            prev_bad = bad;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (samples, lost, notes)
    });
    QuorumMonitor { stop, handle }
}

impl QuorumMonitor {
    /// (samples, samples with quorum lost, notes)
    pub async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

/// Start hook that kills member `victim` right after the new member has started: the old
/// leader dies in the middle of a replacement. Kills only once.
pub struct KillAfterStart {
    pub inner: LocalLauncher,
    pub victim: String,
    pub fired: AtomicBool,
}

#[async_trait]
impl MemberHooks for KillAfterStart {
    async fn start(&self, spec: &StartSpec) -> theseus_etcd::Result<()> {
        self.inner.start(spec).await?;
        if !self.fired.swap(true, Ordering::SeqCst) {
            eprintln!("test: killing {} after starting {}", self.victim, spec.name);
            self.inner.kill(&self.victim);
        }
        Ok(())
    }

    async fn stop_and_wipe(&self, spec: &StopSpec) -> theseus_etcd::Result<Option<String>> {
        self.inner.stop_and_wipe(spec).await
    }
}

/// Reads every key under `prefix` and checks that each acknowledged key is there with its value.
pub async fn assert_all_acked_present(etcd: &Etcd, prefix: &str, acked: &[String]) {
    let st = etcd.observe().await.unwrap();
    let leader = st.leader_member().unwrap();
    let c = etcd.client_for(&leader.member).await.unwrap();
    let kvs = c.get_prefix(format!("{prefix}/").as_bytes()).await.unwrap();
    let have: std::collections::HashMap<Vec<u8>, Vec<u8>> = kvs.into_iter().collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| have.get(k.as_bytes()).map(|v| v.as_slice()) != Some(k.as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

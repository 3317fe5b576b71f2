//! etcd-bench: figures for theseus' etcd operations against real etcd on this machine. It prints
//! measurements and asserts nothing about wall-clock time.
//!
//!   cargo run --release -p theseus-bench --bin etcd-bench -- --db-mib 512
//!
//! 1. Snapshot save of a ≥ 512 MiB database, theseus (streamed, fsynced, sha256 verified) against
//!    `etcdctl snapshot save` from the same member, alternating runs; throughput of each.
//! 2. Time per member replacement: a 3-member cluster migrated member by member (non-leaders
//!    first, leader last), and the member of the large database replaced (its learner receives
//!    the whole database).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use theseus_etcd::local::{LocalCluster, LocalOptions, free_port};
use theseus_etcd::snapshot::SaveOptions;
use theseus_etcd::{Etcd, MigrateEntry, NewMember, ReplaceOptions};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(
    name = "etcd-bench",
    about = "Benchmarks theseus' etcd snapshot save and member replacement against real etcd"
)]
struct Args {
    /// Database size to build before the snapshot runs, in MiB.
    #[arg(long, default_value_t = 512)]
    db_mib: u64,
    /// Snapshot runs of each tool.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where the etcd data and the snapshot files go (default: a new directory under /var/tmp,
    /// on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keys in the 3-member cluster that is migrated.
    #[arg(long, default_value_t = 10_000)]
    migrate_keys: u32,
    /// Skip replacing the member of the large database.
    #[arg(long)]
    no_big_replace: bool,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// The etcdctl binary.
    #[arg(long, default_value = "/usr/bin/etcdctl")]
    etcdctl: PathBuf,
}

fn url() -> Res<String> {
    Ok(format!("http://127.0.0.1:{}", free_port()?))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn opts(a: &Args) -> LocalOptions {
    LocalOptions {
        etcd_bin: a.etcd_bin.clone(),
        extra_args: vec!["--quota-backend-bytes=8589934592".into()],
        ..LocalOptions::for_tests()
    }
}

fn replace_opts() -> ReplaceOptions {
    ReplaceOptions {
        poll_interval: Duration::from_millis(100),
        ..ReplaceOptions::default()
    }
}

/// Fills the cluster with 64 KiB values until its database holds `mib` MiB.
async fn fill(etcd: &Etcd, mib: u64) -> Res<i64> {
    let (_, c) = etcd.leader_client().await?;
    let target = (mib as i64) << 20;
    let value: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut next = 0u64;
    loop {
        let size = c.status().await?.db_size;
        if size >= target {
            return Ok(size);
        }
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = c.clone();
            let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..8)
                .map(|_| {
                    next += 1;
                    (format!("bench/{next:012}").into_bytes(), value.clone())
                })
                .collect();
            tasks.push(tokio::spawn(async move { c.put_batch(&batch).await }));
        }
        for t in tasks {
            t.await??;
        }
    }
}

fn etcdctl_save(a: &Args, endpoint: &str, file: &Path) -> Res<()> {
    let out = Command::new(&a.etcdctl)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--command-timeout",
            "600s",
            "snapshot",
            "save",
        ])
        .arg(file)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "etcdctl snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

async fn snapshot_bench(a: &Args, dir: &Path) -> Res<()> {
    println!("== snapshot save: theseus vs etcdctl, same member ==");
    let cluster = LocalCluster::start(&dir.join("big"), &["big"], opts(a)).await?;
    let etcd = Etcd::new(cluster.config())?;
    let t = Instant::now();
    let size = fill(&etcd, a.db_mib).await?;
    println!(
        "database filled to {:.0} MiB in {:.1}s",
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let ep = cluster.endpoints()[0].clone();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut bytes = 0u64;
    println!(
        "{:>4}  {:>12}  {:>10}  {:>12}  {:>10}",
        "run", "etcdctl s", "MB/s", "theseus s", "MB/s"
    );
    for run in 1..=a.runs {
        // Alternate who goes first: the page cache and the disk favour neither.
        let mut e = 0.0;
        let mut o = 0.0;
        let mut saved_bytes = 0;
        for turn in 0..2 {
            if (run + turn) % 2 == 0 {
                let f1 = dir.join("etcdctl.db");
                let t = Instant::now();
                etcdctl_save(a, &ep, &f1)?;
                e = t.elapsed().as_secs_f64();
                bytes = std::fs::metadata(&f1)?.len();
                std::fs::remove_file(&f1)?;
            } else {
                let f2 = dir.join("theseus.db");
                let t = Instant::now();
                let saved =
                    theseus_etcd::snapshot_save(&etcd, &f2, &SaveOptions::default()).await?;
                o = t.elapsed().as_secs_f64();
                saved_bytes = saved.bytes;
                std::fs::remove_file(&f2)?;
            }
        }
        let mb = saved_bytes as f64 / 1e6;
        println!(
            "{run:>4}  {e:>12.2}  {:>10.0}  {o:>12.2}  {:>10.0}",
            mb / e,
            mb / o
        );
        theirs.push(e);
        ours.push(o);
    }
    let (e, o) = (median(&mut theirs), median(&mut ours));
    let mb = bytes as f64 / 1e6;
    println!(
        "median: etcdctl {e:.2}s ({:.0} MB/s), theseus {o:.2}s ({:.0} MB/s): theseus at {:.2}x etcdctl's throughput (target >= 1.0x); {mb:.0} MB per snapshot",
        mb / e,
        mb / o,
        e / o
    );
    let f = dir.join("with-status.db");
    let t = Instant::now();
    let saved = theseus_etcd::snapshot_save(
        &etcd,
        &f,
        &SaveOptions {
            with_status: true,
            ..SaveOptions::default()
        },
    )
    .await?;
    let all = t.elapsed().as_secs_f64();
    if let Some(s) = &saved.status {
        println!(
            "save + status (revision {}, {} keys, hash {:08x}): {all:.2}s",
            s.db.revision, s.db.total_key, s.db.hash
        );
    }
    std::fs::remove_file(&f)?;

    if !a.no_big_replace {
        println!(
            "== replacing the member of the {} MiB database ==",
            a.db_mib
        );
        let new = NewMember {
            name: "big-new".into(),
            peer_url: url()?,
            client_url: url()?,
        };
        let t = Instant::now();
        let r = theseus_etcd::replace_member(
            &etcd,
            "big",
            &new,
            &cluster.launcher(),
            &replace_opts(),
            &|_| {},
        )
        .await?;
        println!(
            "replaced big by big-new in {:.1}s (the learner received the whole database)",
            t.elapsed().as_secs_f64()
        );
        let _ = r;
    }
    Ok(())
}

async fn migrate_bench(a: &Args, dir: &Path) -> Res<()> {
    println!(
        "== time per member replacement: 3-member cluster, {} keys ==",
        a.migrate_keys
    );
    let names = ["m1", "m2", "m3"];
    let cluster = LocalCluster::start(&dir.join("mig"), &names, opts(a)).await?;
    let etcd = Etcd::new(cluster.config())?;
    let (_, c) = etcd.leader_client().await?;
    let mut batch = Vec::new();
    for i in 0..a.migrate_keys {
        batch.push((format!("k/{i:08}").into_bytes(), vec![b'v'; 100]));
        if batch.len() == 128 {
            c.put_batch(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        c.put_batch(&batch).await?;
    }
    let mut entries = Vec::new();
    for n in names {
        entries.push(MigrateEntry {
            old: n.into(),
            new: NewMember {
                name: format!("{n}-new"),
                peer_url: url()?,
                client_url: url()?,
            },
        });
    }
    let t = Instant::now();
    let r = theseus_etcd::migrate(
        &etcd,
        &entries,
        &cluster.launcher(),
        &replace_opts(),
        &|_| {},
    )
    .await?;
    let total = t.elapsed().as_secs_f64();
    for x in &r.replaced {
        println!(
            "  {} -> {}: {:.2}s{}",
            x.old.as_ref().map(|o| o.name.as_str()).unwrap_or("?"),
            x.new.name,
            x.elapsed_ms as f64 / 1000.0,
            if x.moved_leader {
                " (leader: leadership moved first)"
            } else {
                ""
            }
        );
    }
    println!(
        "migrated 3 members in {total:.1}s ({:.1}s per member), hash_kv equal at revision {}",
        total / 3.0,
        r.hash_kv.revision
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let a = Args::parse();
    let keep;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            keep = None;
            d.clone()
        }
        None => {
            let base = PathBuf::from("/var/tmp");
            let d = base.join(format!("theseus-etcd-bench-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            keep = Some(d.clone());
            d
        }
    };
    println!(
        "etcd-bench: etcd {}, data and snapshots under {} (etcd fsyncs there)",
        Command::new(&a.etcd_bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
            .unwrap_or_default(),
        dir.display()
    );
    let res = async {
        migrate_bench(&a, &dir).await?;
        snapshot_bench(&a, &dir).await
    }
    .await;
    if let Some(d) = keep {
        let _ = std::fs::remove_dir_all(d);
    }
    res
}

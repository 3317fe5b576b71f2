//! theseus-etcd against real etcd 3.4 started on 127.0.0.1 ephemeral ports (the issue's
//! acceptance tests). Clusters are killed when a test ends, whatever happens.

mod util;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use theseus_etcd::local::{
    JoinMode, LocalCluster, LocalOptions, ServerTls, generate_test_certs, plan,
};
use theseus_etcd::snapshot::{RestoreOptions, RestoreTool, SaveOptions};
use theseus_etcd::{
    CommandHooks, Error, Etcd, EtcdConfig, MigrateEntry, Step, hash_kv_check, migrate,
    replace_member, snapshot_restore, snapshot_save, snapshot_status,
};
use util::*;

async fn migrate_with_writer(names: &[&str]) {
    if !have_etcd() {
        eprintln!("skipped: /usr/bin/etcd is not installed");
        return;
    }
    let c = cluster(names).await;
    let etcd = etcd(&c);
    let writer = start_writer(c.config(), "w");
    let monitor = start_quorum_monitor(c.config());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries: Vec<MigrateEntry> = names
        .iter()
        .map(|n| MigrateEntry {
            old: n.to_string(),
            new: new_member(&format!("{n}-new")),
        })
        .collect();
    let leader_before = etcd
        .observe()
        .await
        .unwrap()
        .leader_member()
        .unwrap()
        .member
        .name
        .clone();
    let report = migrate(&etcd, &entries, &c.launcher(), &opts(), &print_event)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = writer.stop().await;
    let (samples, lost, notes) = monitor.stop().await;

    // One member at a time, followers first, the old leader last.
    let order: Vec<String> = report
        .replaced
        .iter()
        .map(|r| r.old.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(order.len(), names.len());
    assert_eq!(
        order.last().unwrap(),
        &leader_before,
        "leader last: {order:?}"
    );
    assert!(
        report
            .replaced
            .iter()
            .all(|r| !r.removed_first && r.voters == names.len())
    );
    assert!(report.replaced.last().unwrap().moved_leader);

    // The cluster now consists of exactly the new members, healthy.
    let st = etcd.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    let mut now: Vec<String> = st.members.iter().map(|m| m.member.name.clone()).collect();
    now.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("{n}-new")).collect();
    want.sort();
    assert_eq!(now, want);

    // hash_kv equal at one revision, again after the writer stopped.
    assert!(report.hash_kv.equal && report.hash_kv.members.len() == names.len());
    let h = hash_kv_check(&etcd, Duration::from_secs(30)).await.unwrap();
    assert!(h.equal);

    // No acknowledged write lost; quorum never lost.
    assert!(
        w.acked.len() > 50,
        "the writer wrote only {} keys",
        w.acked.len()
    );
    assert_all_acked_present(&etcd, "w", &w.acked).await;
    assert_eq!(
        lost, 0,
        "quorum lost in {lost} of {samples} samples: {notes:?}"
    );
    eprintln!(
        "{}-member migrate: {} acknowledged writes, {} failed attempts, longest write gap {} ms, {} quorum samples, {:.1}s",
        names.len(),
        w.acked.len(),
        w.failures,
        w.longest_gap.as_millis(),
        samples,
        report.elapsed_ms as f64 / 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_3_members_under_continuous_writes() {
    migrate_with_writer(&["m1", "m2", "m3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_5_members_under_continuous_writes() {
    migrate_with_writer(&["f1", "f2", "f3", "f4", "f5"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_a_dead_member_removes_it_first() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["d1", "d2", "d3"]).await;
    let etcd = etcd(&c);
    let st = etcd.observe().await.unwrap();
    let victim = st
        .members
        .iter()
        .find(|m| Some(m.member.id) != st.leader)
        .unwrap()
        .member
        .name
        .clone();
    c.kill(&victim);
    let new = new_member("d-new");
    let r = replace_member(&etcd, &victim, &new, &c.launcher(), &opts(), &print_event)
        .await
        .unwrap();
    assert!(r.removed_first);
    assert_eq!(r.voters, 3);
    let st = etcd.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    assert!(st.by_name(&victim).is_none());
    assert!(
        st.by_name("d-new")
            .is_some_and(|m| m.is_voter() && m.is_up())
    );
    assert!(
        !c.launcher().data_dir(&victim).exists(),
        "the dead member was wiped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_old_leader_mid_replacement_rolls_back_and_a_rerun_finishes() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["k1", "k2", "k3"]).await;
    let etcd = etcd(&c);
    let st = etcd.observe().await.unwrap();
    let leader = st.leader_member().unwrap().member.clone();
    let ids_before: Vec<_> = st.members.iter().map(|m| m.member.id).collect();
    let new = new_member("k-new");
    let hooks = KillAfterStart {
        inner: c.launcher(),
        victim: leader.name.clone(),
        fired: AtomicBool::new(false),
    };
    let err = replace_member(&etcd, &leader.name, &new, &hooks, &opts(), &print_event)
        .await
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        Error::ReplaceFailed { step, .. } => {
            assert!(matches!(step, Step::CatchUp | Step::Promote), "{msg}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        msg.contains(&leader.name) && msg.contains("stopped answering"),
        "{msg}"
    );
    assert!(
        msg.contains("Rolled back") && msg.contains("no learner is left behind"),
        "{msg}"
    );
    assert!(!err.is_bad_input());

    // The cluster: the old members only, no learner, a leader among the two alive, writes work.
    let st = etcd.observe().await.unwrap();
    let ids_after: Vec<_> = st.members.iter().map(|m| m.member.id).collect();
    assert_eq!(ids_after, ids_before);
    assert!(st.members.iter().all(|m| !m.member.is_learner));
    assert!(st.leader.is_some_and(|l| l != leader.id));
    assert_eq!(st.voters().filter(|m| m.is_up()).count(), 2);
    let (_, lc) = etcd.leader_client().await.unwrap();
    lc.put(b"after-rollback", b"1").await.unwrap();
    assert!(
        !c.launcher().data_dir("k-new").exists(),
        "the learner was wiped"
    );

    // Running the same replacement again finishes the job (the old leader is dead now: removed
    // first, then the new member added).
    let r = replace_member(
        &etcd,
        &leader.name,
        &new,
        &c.launcher(),
        &opts(),
        &print_event,
    )
    .await
    .unwrap();
    assert!(r.removed_first);
    let st = etcd.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    assert_eq!(st.voters().count(), 3);
    assert!(st.by_name("k-new").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_rolls_back_and_a_leftover_learner_is_resumed() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["r1", "r2", "r3"]).await;
    let etcd = etcd(&c);
    let new = new_member("r-new");
    let failing = CommandHooks {
        start: Some("echo cannot reach host >&2; exit 7".into()),
        stop: Some("true".into()),
        timeout: Duration::from_secs(10),
    };
    let err = replace_member(&etcd, "r1", &new, &failing, &opts(), &print_event)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("at step \"start the new member\"") && msg.contains("cannot reach host"),
        "{msg}"
    );
    assert!(msg.contains("Rolled back"), "{msg}");
    let st = etcd.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    assert_eq!(st.members.len(), 3);

    // A crash right after `member add`: the learner exists but never started. The status
    // verdict names it; a rerun finds it and finishes.
    // (etcd derives member IDs from the peer URL and the time in seconds: re-adding the URL in
    // the second it was removed would get the removed ID.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, lc) = etcd.leader_client().await.unwrap();
    let (learner, _) = lc.member_add_learner(&new.peer_url).await.unwrap();
    let st = etcd.observe().await.unwrap();
    assert!(!st.verdict.healthy);
    assert!(
        st.verdict
            .problems
            .iter()
            .any(|p| p.contains("was added but never started")),
        "{:?}",
        st.verdict.problems
    );
    let r = replace_member(&etcd, "r1", &new, &c.launcher(), &opts(), &print_event)
        .await
        .unwrap();
    assert!(
        r.resumed.as_deref().unwrap_or("").contains("not started"),
        "{:?}",
        r.resumed
    );
    assert_eq!(r.new.id, learner.id);
    let st = etcd.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    assert!(st.by_name("r1").is_none());

    // And once more: nothing left to do.
    let r = replace_member(&etcd, "r1", &new, &c.launcher(), &opts(), &print_event)
        .await
        .unwrap();
    assert_eq!(r.resumed.as_deref(), Some("already replaced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_cluster_is_untouched() {
    if !have_etcd() {
        return;
    }
    // Unreachable endpoints.
    let dead = Etcd::new(EtcdConfig::new(&["127.0.0.1:1", "http://127.0.0.1:9"])).unwrap();
    let e = dead.observe().await.unwrap_err().to_string();
    assert!(e.contains("no etcd endpoint answered"), "{e}");
    assert!(
        e.contains("http://127.0.0.1:1") && e.contains("onnection refused"),
        "{e}"
    );
    assert!(e.contains("Check --endpoints"), "{e}");
    assert!(
        Etcd::new(EtcdConfig::new(&["ftp://x:1"]))
            .unwrap_err()
            .is_bad_input()
    );

    let c = cluster(&["b1", "b2", "b3"]).await;
    let etcd = etcd(&c);
    let before = etcd.member_list().await.unwrap();
    let ids = |l: &theseus_etcd::MemberList| {
        let mut v: Vec<_> = l.members.iter().map(|m| (m.id, m.is_learner)).collect();
        v.sort();
        v
    };
    let l = c.launcher();
    let o = opts();

    // A member name that does not exist.
    let e = replace_member(&etcd, "nope", &new_member("x"), &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(e.is_bad_input());
    assert!(
        e.to_string().contains("no member named \"nope\"") && e.to_string().contains("b1"),
        "{e}"
    );

    // A peer URL already used by a member, and one some other process listens on.
    let mut taken = new_member("x");
    taken.peer_url = c.member("b2").unwrap().peer_url.clone();
    let e = replace_member(&etcd, "b1", &taken, &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(e.is_bad_input());
    assert!(
        e.to_string().contains("peer URL") && e.to_string().contains("in use by member b2"),
        "{e}"
    );
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = new_member("x");
    busy.peer_url = format!("http://{}", squatter.local_addr().unwrap());
    let e = replace_member(&etcd, "b1", &busy, &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(e.is_bad_input());
    assert!(
        e.to_string().contains("something accepts connections"),
        "{e}"
    );

    // Invalid URLs and names.
    let mut bad = new_member("x");
    bad.peer_url = "127.0.0.1:2380".into();
    let e = replace_member(&etcd, "b1", &bad, &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("--new-peer-url"),
        "{e}"
    );
    let e = replace_member(&etcd, "b1", &new_member("b2"), &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("a member named \"b2\" already exists"),
        "{e}"
    );

    // Another member down: refused (quorum math), nothing changed.
    c.kill("b3");
    let e = replace_member(&etcd, "b1", &new_member("x"), &l, &o, &print_event)
        .await
        .unwrap_err();
    assert!(!e.is_bad_input());
    assert!(
        e.to_string().contains("refused") && e.to_string().contains("b3"),
        "{e}"
    );
    assert!(e.to_string().contains("3 voters tolerate 1 failure"), "{e}");

    let after = etcd.member_list().await.unwrap();
    assert_eq!(ids(&before), ids(&after), "the cluster was changed");
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_member_clusters_are_refused() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["t1", "t2"]).await;
    let etcd = etcd(&c);
    let e = replace_member(
        &etcd,
        "t1",
        &new_member("t-new"),
        &c.launcher(),
        &opts(),
        &print_event,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("2-member cluster") && e.contains("Add a third member first"),
        "{e}"
    );
    assert_eq!(etcd.member_list().await.unwrap().members.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_named() {
    if !have_etcd() {
        return;
    }
    let dir = tmp();
    let certs = generate_test_certs(&dir.path().join("pki")).unwrap();
    let opts = LocalOptions {
        tls: Some(ServerTls {
            ca: certs.ca.clone(),
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_cert_auth: Some((certs.client_cert.clone(), certs.client_key.clone())),
        }),
        ..LocalOptions::for_tests()
    };
    let c = LocalCluster::start(&dir.path().join("etcd"), &["s1"], opts)
        .await
        .unwrap();
    let good = Etcd::new(c.config()).unwrap();
    let st = good.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);

    let mut wrong = c.config();
    wrong.cacert = Some(certs.other_ca.clone());
    let e = Etcd::new(wrong)
        .unwrap()
        .observe()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not signed by the CA") && e.contains("other-ca.crt") && e.contains("--cacert"),
        "{e}"
    );

    let mut no_client_cert = c.config();
    no_client_cert.cert = None;
    no_client_cert.key = None;
    let e = Etcd::new(no_client_cert)
        .unwrap()
        .observe()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no etcd endpoint answered"), "{e}");

    let mut missing = c.config();
    missing.cacert = Some(dir.path().join("nope.crt"));
    let e = Etcd::new(missing).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("nope.crt"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_10000_keys_restores_a_3_member_cluster() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["s1", "s2", "s3"]).await;
    let etcd = etcd(&c);
    let (_, lc) = etcd.leader_client().await.unwrap();
    let mut batch = Vec::new();
    for i in 0..10_000u32 {
        batch.push((
            format!("k/{i:05}").into_bytes(),
            format!("v{i}").into_bytes(),
        ));
        if batch.len() == 128 {
            lc.put_batch(&batch).await.unwrap();
            batch.clear();
        }
    }
    lc.put_batch(&batch).await.unwrap();
    let dir = tmp();
    let file = dir.path().join("snap.db");
    let saved = snapshot_save(
        &etcd,
        &file,
        &SaveOptions {
            with_status: true,
            ..SaveOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(!dir.path().join("snap.db.part").exists());
    let info = saved.status.clone().unwrap();
    assert!(info.db.total_key >= 10_000, "{info:?}");
    assert_eq!(saved.bytes, std::fs::metadata(&file).unwrap().len());

    // Our reading of the file is etcdctl's.
    let out = std::process::Command::new("etcdctl")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["hash"].as_u64(), Some(u64::from(info.db.hash)), "{j}");
    assert_eq!(j["revision"].as_i64(), Some(info.db.revision), "{j}");
    assert_eq!(j["totalKey"].as_u64(), Some(info.db.total_key), "{j}");
    assert_eq!(j["totalSize"].as_u64(), Some(info.db.total_size), "{j}");

    // A flipped byte and a truncated file are refused, before any data dir is made.
    let flipped = dir.path().join("flipped.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&flipped, &bytes).unwrap();
    let e = snapshot_status(&flipped, false).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("sha256 mismatch"),
        "{e}"
    );
    let truncated = dir.path().join("trunc.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert!(snapshot_status(&truncated, false).is_err());

    // Destroy the cluster, restore three members from the file, start them.
    c.kill_all();
    drop(c);
    let members = plan(&["n1", "n2", "n3"], false).unwrap();
    let ic = theseus_etcd::local::initial_cluster(&members);
    let rdir = tmp();
    let ropts = |name: &str| RestoreOptions {
        name: name.into(),
        initial_cluster: ic.clone(),
        initial_cluster_token: "restored-1".into(),
        initial_advertise_peer_urls: None,
        data_dir: rdir.path().join(format!("{name}.etcd")),
        wal_dir: None,
        skip_hash_check: false,
        tool: RestoreTool::Auto,
        timeout: Duration::from_secs(60),
    };
    let e = snapshot_restore(&flipped, &ropts("n1")).await.unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(!rdir.path().join("n1.etcd").exists());
    for m in &members {
        let r = snapshot_restore(&file, &ropts(&m.name)).await.unwrap();
        assert!(r.tool.contains("etcdctl") || r.tool.contains("etcdutl"));
    }
    let restored = LocalCluster::start_planned(
        rdir.path(),
        members,
        LocalOptions::for_tests(),
        JoinMode::FromDataDir,
    )
    .await
    .unwrap();
    let etcd2 = Etcd::new(restored.config()).unwrap();
    let st = etcd2.observe().await.unwrap();
    assert!(st.verdict.healthy, "{:?}", st.verdict.problems);
    assert_eq!(st.members.len(), 3);
    let (_, lc) = etcd2.leader_client().await.unwrap();
    let kvs = lc.get_prefix(b"k/").await.unwrap();
    assert_eq!(kvs.len(), 10_000);
    for (i, (k, v)) in kvs.iter().enumerate() {
        assert_eq!(k, format!("k/{i:05}").as_bytes());
        assert_eq!(v, format!("v{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_goes_leader_last_and_alarms_are_listed_and_disarmed() {
    if !have_etcd() {
        return;
    }
    let c = cluster(&["g1", "g2", "g3"]).await;
    let etcd = etcd(&c);
    let (_, lc) = etcd.leader_client().await.unwrap();
    for i in 0..50u32 {
        lc.put(format!("junk/{i}").as_bytes(), &[7u8; 10_000])
            .await
            .unwrap();
    }
    let res = theseus_etcd::defragment_all(&etcd, Duration::from_secs(60), &|r| {
        eprintln!(
            "defragmented {} ({} -> {})",
            r.name, r.db_size_before, r.db_size_after
        )
    })
    .await
    .unwrap();
    assert_eq!(res.len(), 3);
    assert!(res[2].was_leader && !res[0].was_leader && !res[1].was_leader);
    assert!(etcd.observe().await.unwrap().verdict.healthy);

    // NOSPACE on a one-member cluster with a tiny quota.
    let small = cluster_with(
        &["q1"],
        LocalOptions {
            extra_args: vec!["--quota-backend-bytes=1048576".into()],
            ..LocalOptions::for_tests()
        },
    )
    .await;
    let e2 = util::etcd(&small);
    let (_, c1) = e2.leader_client().await.unwrap();
    let mut full = false;
    for i in 0..400u32 {
        if let Err(e) = c1
            .put(format!("big/{i}").as_bytes(), &[1u8; 64 * 1024])
            .await
        {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            full = true;
            break;
        }
    }
    assert!(full, "the quota was never reached");
    let alarms = theseus_etcd::alarm_list(&e2).await.unwrap();
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].alarm.alarm, "NOSPACE");
    assert_eq!(alarms[0].member, "q1");
    let st = e2.observe().await.unwrap();
    assert!(
        st.verdict
            .problems
            .iter()
            .any(|p| p.contains("alarm NOSPACE raised by member q1"))
    );
    let disarmed = theseus_etcd::alarm_disarm(&e2).await.unwrap();
    assert_eq!(disarmed.len(), 1);
    assert!(theseus_etcd::alarm_list(&e2).await.unwrap().is_empty());
}

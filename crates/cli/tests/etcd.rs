//! `theseus etcd …` as a user runs it, against real etcd 3.4 on 127.0.0.1 ephemeral ports:
//! exit codes and messages for bad input (the cluster untouched), status output, replace and
//! migrate through the local launcher, snapshot save → destroy → restore of 3 members.

use std::path::{Path, PathBuf};
use std::process::Command;

use theseus_etcd::local::{
    JoinMode, LocalCluster, LocalOptions, ServerTls, free_port, generate_test_certs,
    initial_cluster, plan,
};
use theseus_etcd::{Etcd, MemberList};

fn theseus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_theseus"))
        .args(args)
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .expect("run theseus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn have_etcd() -> bool {
    Path::new("/usr/bin/etcd").is_file()
}

/// A temporary directory, on tmpfs when available (etcd fsyncs a lot).
fn tmp() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("theseus-cli-etcd-")
        .tempdir_in(base)
        .unwrap()
}

async fn cluster(dir: &Path, names: &[&str]) -> LocalCluster {
    LocalCluster::start(dir, names, LocalOptions::for_tests())
        .await
        .unwrap()
}

fn url() -> String {
    format!("http://127.0.0.1:{}", free_port().unwrap())
}

fn ids(l: &MemberList) -> Vec<(u64, bool)> {
    let mut v: Vec<_> = l.members.iter().map(|m| (m.id.0, m.is_learner)).collect();
    v.sort();
    v
}

/// Flags of the local launcher, with the test clusters' raft timings.
fn local(dir: &Path) -> Vec<String> {
    vec![
        "--launcher".into(),
        "local".into(),
        "--local-dir".into(),
        dir.display().to_string(),
        "--local-etcd-arg=--heartbeat-interval=50".into(),
        "--local-etcd-arg=--election-timeout=750".into(),
    ]
}

fn run(args: Vec<String>) -> (i32, String, String) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    theseus(&a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_non_zero_and_the_cluster_is_untouched() {
    // Unreachable endpoints.
    let (code, _, err) = theseus(&["etcd", "status", "--endpoints", "127.0.0.1:1,127.0.0.1:2"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no etcd endpoint answered") && err.contains("Connection refused"),
        "{err}"
    );
    assert!(err.contains("Check --endpoints"), "{err}");
    let (code, _, err) = theseus(&["etcd", "status", "--endpoints", "ftp://h:1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = theseus(&["etcd", "status", "--dial-timeout", "soon"]);
    assert_eq!(code, 2, "{err}");
    if !have_etcd() {
        return;
    }
    let dir = tmp();
    let c = cluster(dir.path(), &["b1", "b2", "b3"]).await;
    let ep = c.endpoints_arg();
    let etcd = Etcd::new(c.config()).unwrap();
    let before = etcd.member_list().await.unwrap();

    // Status: table and JSON.
    let (code, out, err) = theseus(&["etcd", "status", "--endpoints", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("RAFT APPLIED INDEX")
            && out.contains("| b2 ")
            && out.contains("HEALTHY: 3 of 3 voters"),
        "{out}"
    );
    let (code, out, _) = theseus(&["etcd", "status", "--endpoints", &ep, "-o", "json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["verdict"]["healthy"], true);
    assert_eq!(j["members"].as_array().unwrap().len(), 3);

    let d = dir.path().display().to_string();
    let replace = |member: &str, new_name: &str, peer: &str, client: &str| {
        let mut a: Vec<String> = [
            "etcd",
            "replace",
            "--member",
            member,
            "--new-name",
            new_name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "--new-peer-url".into(),
            peer.into(),
            "--new-client-url".into(),
            client.into(),
        ]);
        a.extend([
            "--endpoints".into(),
            ep.clone(),
            "--launcher".into(),
            "local".into(),
        ]);
        a.extend(["--local-dir".into(), d.clone()]);
        run(a)
    };

    // A member name that does not exist.
    let (code, _, err) = replace("nope", "x", &url(), &url());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no member named \"nope\"")
            && ["b1", "b2", "b3"].iter().all(|n| err.contains(n)),
        "{err}"
    );
    // A peer URL already in use.
    let taken = c.member("b3").unwrap().peer_url.clone();
    let (code, _, err) = replace("b1", "x", &taken, &url());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("peer URL {taken} is already in use by member b3")),
        "{err}"
    );
    // Not a URL.
    let (code, _, err) = replace("b1", "x", "localhost:2380", &url());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--new-peer-url \"localhost:2380\" is not a valid URL"),
        "{err}"
    );
    // No way to start the new member.
    let (code, _, err) = theseus(&[
        "etcd",
        "replace",
        "--member",
        "b1",
        "--new-peer-url",
        &url(),
        "--new-client-url",
        &url(),
        "--endpoints",
        &ep,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--start-command") && err.contains("--launcher local"),
        "{err}"
    );
    // A bad migrate map.
    let (code, _, err) = theseus(&[
        "etcd",
        "migrate",
        "--map",
        "b1=x,b2",
        "--new-peer-urls",
        "x=http://127.0.0.1:1",
        "--new-client-urls",
        "x=http://127.0.0.1:2",
        "--endpoints",
        &ep,
        "--launcher",
        "local",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--map: \"b2\" is not NAME=VALUE"), "{err}");
    // Another member down: refused (exit 1), nothing changed.
    c.kill("b3");
    let (code, _, err) = replace("b1", "x", &url(), &url());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused") && err.contains("b3") && err.contains("do not answer"),
        "{err}"
    );
    let (code, out, _) = theseus(&["etcd", "status", "--endpoints", &ep]);
    assert_eq!(code, 1);
    assert!(
        out.contains("UNHEALTHY: 2 of 3 voters") && out.contains("member b3"),
        "{out}"
    );

    let after = etcd.member_list().await.unwrap();
    assert_eq!(ids(&before), ids(&after), "the cluster was changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_exits_non_zero_and_names_the_flag() {
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
    let ep = c.endpoints_arg();
    let s = |p: &PathBuf| p.display().to_string();
    let (code, out, err) = theseus(&[
        "etcd",
        "status",
        "--endpoints",
        &ep,
        "--cacert",
        &s(&certs.ca),
        "--cert",
        &s(&certs.client_cert),
        "--key",
        &s(&certs.client_key),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HEALTHY"), "{out}");
    let (code, _, err) = theseus(&[
        "etcd",
        "status",
        "--endpoints",
        &ep,
        "--cacert",
        &s(&certs.other_ca),
        "--cert",
        &s(&certs.client_cert),
        "--key",
        &s(&certs.client_key),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not signed by the CA") && err.contains("--cacert"),
        "{err}"
    );
    let (code, _, err) = theseus(&[
        "etcd",
        "status",
        "--endpoints",
        &ep,
        "--cacert",
        "/nonexistent/ca.crt",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read CA certificate (--cacert) /nonexistent/ca.crt"),
        "{err}"
    );
    let (code, _, err) = theseus(&[
        "etcd",
        "status",
        "--endpoints",
        &ep,
        "--cacert",
        &s(&certs.ca),
        "--cert",
        &s(&certs.client_cert),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cert needs --key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_migrate_defrag_and_alarms_through_the_binary() {
    if !have_etcd() {
        return;
    }
    let dir = tmp();
    let c = cluster(dir.path(), &["a1", "a2", "a3"]).await;
    let ep = c.endpoints_arg();
    let etcd = Etcd::new(c.config()).unwrap();
    let (_, lc) = etcd.leader_client().await.unwrap();
    lc.put(b"keep", b"me").await.unwrap();

    // One member.
    let mut a: Vec<String> = ["etcd", "replace", "--member", "a1", "--new-name", "x1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend([
        "--new-peer-url".into(),
        url(),
        "--new-client-url".into(),
        url(),
    ]);
    a.extend(["--endpoints".into(), ep.clone()]);
    a.extend(local(dir.path()));
    let (code, out, err) = run(a);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replaced a1 (") && out.contains("by x1 ("),
        "{out}"
    );
    assert!(err.contains("[a1] promote the learner"), "{err}");

    // The rest, through the binary's migrate; the old endpoints still lead the way in.
    let (p2, p3, c2, c3) = (url(), url(), url(), url());
    let mut a: Vec<String> = vec![
        "etcd".into(),
        "migrate".into(),
        "--map".into(),
        "a2=x2,a3=x3".into(),
        "--new-peer-urls".into(),
        format!("x2={p2},x3={p3}"),
        "--new-client-urls".into(),
        format!("x2={c2},x3={c3}"),
        "--endpoints".into(),
        ep.clone(),
    ];
    a.extend(local(dir.path()));
    let (code, out, err) = run(a);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("migrated 2 member(s)") && out.contains("equal on every member"),
        "{out}"
    );

    let (code, out, err) = theseus(&["etcd", "status", "--endpoints", &c2]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("| x1 ")
            && out.contains("| x2 ")
            && out.contains("| x3 ")
            && !out.contains("| a1 "),
        "{out}"
    );
    let (code, out, err) = theseus(&["etcd", "defrag", "--endpoints", &c3]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DB SIZE AFTER"), "{out}");
    let (code, out, err) = theseus(&["etcd", "alarm", "list", "--endpoints", &c3]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no alarms"), "{out}");
    let etcd = Etcd::new(theseus_etcd::EtcdConfig::new(&[c2.as_str()])).unwrap();
    let (_, lc) = etcd.leader_client().await.unwrap();
    assert_eq!(
        lc.get(b"keep").await.unwrap().0.as_deref(),
        Some(&b"me"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_destroy_and_restore_3_members_through_the_binary() {
    if !have_etcd() {
        return;
    }
    let dir = tmp();
    let c = cluster(&dir.path().join("old"), &["o1", "o2", "o3"]).await;
    let etcd = Etcd::new(c.config()).unwrap();
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
    let file = dir.path().join("backup.db");
    let f = file.display().to_string();
    let (code, out, err) = theseus(&[
        "etcd",
        "snapshot",
        "save",
        &f,
        "--endpoints",
        &c.endpoints_arg(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Snapshot saved at")
            && out.contains("TOTAL KEYS")
            && out.contains("sha256 trailer verified"),
        "{out}"
    );
    let (code, out, err) = theseus(&["etcd", "snapshot", "status", &f, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["total_key"].as_u64().unwrap() >= 10_000, "{j}");
    assert_eq!(j["integrity"], "verified");

    // A flipped byte is refused, and no data dir is made.
    let flipped = dir.path().join("flipped.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 1;
    std::fs::write(&flipped, &bytes).unwrap();
    let fl = flipped.display().to_string();
    let (code, _, err) = theseus(&["etcd", "snapshot", "status", &fl]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256 mismatch"), "{err}");

    // Destroy the cluster; restore three members, one command each; start them.
    drop(c);
    let members = plan(&["n1", "n2", "n3"], false).unwrap();
    let ic = initial_cluster(&members);
    let new_dir = dir.path().join("new");
    let data = |name: &str| new_dir.join(format!("{name}.etcd")).display().to_string();
    let (code, _, err) = theseus(&[
        "etcd",
        "snapshot",
        "restore",
        &fl,
        "--name",
        "n1",
        "--initial-cluster",
        &ic,
        "--initial-cluster-token",
        "restored",
        "--data-dir",
        &data("n1"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sha256 mismatch") && err.contains("--skip-hash-check"),
        "{err}"
    );
    assert!(!Path::new(&data("n1")).exists());
    let (code, _, err) = theseus(&[
        "etcd",
        "snapshot",
        "restore",
        &f,
        "--name",
        "zz",
        "--initial-cluster",
        &ic,
        "--initial-cluster-token",
        "restored",
        "--data-dir",
        &data("zz"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--name \"zz\" is not in --initial-cluster"),
        "{err}"
    );
    for m in &members {
        let (code, out, err) = theseus(&[
            "etcd",
            "snapshot",
            "restore",
            &f,
            "--name",
            &m.name,
            "--initial-cluster",
            &ic,
            "--initial-cluster-token",
            "restored",
            "--data-dir",
            &data(&m.name),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("restored member {}", m.name)),
            "{out}"
        );
    }
    let restored = LocalCluster::start_planned(
        &new_dir,
        members,
        LocalOptions::for_tests(),
        JoinMode::FromDataDir,
    )
    .await
    .unwrap();
    let (code, out, err) = theseus(&["etcd", "status", "--endpoints", &restored.endpoints_arg()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HEALTHY: 3 of 3"), "{out}");
    let etcd = Etcd::new(restored.config()).unwrap();
    let (_, lc) = etcd.leader_client().await.unwrap();
    let kvs = lc.get_prefix(b"k/").await.unwrap();
    assert_eq!(kvs.len(), 10_000);
    assert!(
        kvs.iter()
            .enumerate()
            .all(|(i, (k, v))| k == format!("k/{i:05}").as_bytes()
                && v == format!("v{i}").as_bytes())
    );
}

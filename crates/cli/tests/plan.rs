//! `theseus snapshot` and `theseus plan` as a user runs them: against `theseus sim serve` on a
//! loopback port, then offline from the snapshot file. Exit codes 0 (runnable), 1 (blocked or
//! cluster unreachable), 2 (bad input), and the messages that go with them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use theseus_model::ClusterSnapshot;

fn theseus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_theseus"))
        .args(args)
        .output()
        .expect("run theseus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the served simulator when the test ends, whatever happens.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `theseus sim serve` of a scenario on a free port; returns once its kubeconfig exists.
fn serve(scenario: &str, kubeconfig: &Path) -> Served {
    let scenario = format!("{}/../../scenarios/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let served = Served(
        Command::new(env!("CARGO_BIN_EXE_theseus"))
            .args([
                "sim",
                "serve",
                "--scenario",
                &scenario,
                "--port",
                "0",
                "--speed",
                "20",
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start theseus sim serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !kubeconfig.exists() {
        assert!(
            Instant::now() < deadline,
            "sim serve wrote no kubeconfig within 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    served
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn spec(body: &str) -> String {
    format!(
        "apiVersion: theseus.io/v1alpha1\nkind: Migration\nmetadata:\n  name: reboot\nspec:\n{body}"
    )
}

const REBOOT_FORCED: &str =
    "  operation:\n    maintenance: {action: reboot}\n  drain:\n    force: true\n";
const REBOOT: &str = "  operation:\n    maintenance: {action: reboot}\n";

#[test]
fn snapshot_then_plan_offline_and_live() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("sim.kubeconfig");
    let kc_s = kc.to_str().unwrap();
    let _served = serve("cka-002-lab.yaml", &kc);

    // snapshot: the versioned JSON and a one-line summary.
    let snap = dir.path().join("cluster.json");
    let snap_s = snap.to_str().unwrap();
    let (code, out, err) = theseus(&["snapshot", "--kubeconfig", kc_s, "-o", snap_s]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("written to")
            && out.contains("2 nodes (1 control-plane)")
            && out.contains("0 PodDisruptionBudgets"),
        "{out}"
    );
    let s = ClusterSnapshot::from_json(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    assert_eq!(s.metadata.source.as_deref(), Some("theseus-sim"));
    let pods_line = format!("{} pods", s.pods.len());
    assert!(out.contains(&pods_line), "{out}");
    let hr = s
        .pods
        .iter()
        .find(|p| p.name == "hr-app")
        .expect("hr-app captured");
    assert!(hr.controller.is_none());
    // `-o -`: the JSON on standard output, the summary on standard error.
    let (code, out, err) = theseus(&[
        "snapshot",
        "--kubeconfig",
        kc_s,
        "--chunk-size",
        "2",
        "-o",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ClusterSnapshot::from_json(&out).unwrap().pods.len(),
        s.pods.len()
    );
    assert!(err.contains("2 nodes"), "{err}");

    // plan offline: runnable with drain.force (exit 0), blocked by hr-app without it (exit 1).
    let forced = write(dir.path(), "forced.yaml", &spec(REBOOT_FORCED));
    let (code, out, err) = theseus(&["plan", "-f", forced.to_str().unwrap(), "--snapshot", snap_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("[plan] Migration \"reboot\": maintenance"),
        "{out}"
    );
    assert!(
        out.contains("Nodes by wave:") && out.contains("node01") && out.contains("hr-app"),
        "{out}"
    );

    let strict = write(dir.path(), "strict.yaml", &spec(REBOOT));
    let strict_s = strict.to_str().unwrap();
    let (code, out, err) = theseus(&["plan", "-f", strict_s, "--snapshot", snap_s]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("[UnmanagedPod]") && out.contains("default/hr-app"),
        "{out}"
    );
    assert!(
        err.contains("the plan is blocked by 1 error finding"),
        "{err}"
    );

    // -o json / -o yaml: the documented schema.
    let (code, out, _) = theseus(&["plan", "-f", strict_s, "--snapshot", snap_s, "-o", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "Plan");
    assert!(
        v["waves"][0]["nodes"].is_array() && v["waves"][0]["estimatedSeconds"].is_u64(),
        "{v}"
    );
    let unmanaged = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "UnmanagedPod")
        .expect("UnmanagedPod finding");
    assert_eq!(unmanaged["severity"], "error");
    assert!(unmanaged["message"].as_str().unwrap().contains("hr-app"));
    assert!(
        unmanaged["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Pod" && o["name"] == "hr-app")
    );
    assert!(
        v["estimate"]["totalSeconds"].as_u64().unwrap()
            >= v["estimate"]["lowerBoundSeconds"].as_u64().unwrap()
    );
    let (code, out, _) = theseus(&["plan", "-f", strict_s, "--snapshot", snap_s, "-o", "yaml"]);
    assert_eq!(code, 1);
    let y: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(y, v);

    // plan live: the same plan from the cluster itself.
    let (code, out, err) = theseus(&["plan", "-f", strict_s, "--kubeconfig", kc_s, "-o", "json"]);
    assert_eq!(code, 1, "{err}");
    let live: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(live["waves"], v["waves"]);
    assert_eq!(live["findings"], v["findings"]);

    // A context the kubeconfig does not have is bad input.
    let (code, _, err) = theseus(&[
        "snapshot",
        "--kubeconfig",
        kc_s,
        "--context",
        "prod",
        "-o",
        snap_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("context \"prod\" is not in the kubeconfig") && err.contains("theseus-sim"),
        "{err}"
    );
}

#[test]
fn bad_input_exits_2_and_names_field_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let snap = write(
        dir.path(),
        "empty.json",
        "{\"apiVersion\": \"theseus.io/v1alpha1\", \"kind\": \"ClusterSnapshot\"}",
    );
    let snap_s = snap.to_str().unwrap();

    // An unknown field.
    let typo = write(
        dir.path(),
        "typo.yaml",
        &spec(
            "  operation:\n    maintenance: {action: reboot}\n  strategy:\n    maxUnavailabel: 2\n",
        ),
    );
    let (code, out, err) = theseus(&["plan", "-f", typo.to_str().unwrap(), "--snapshot", snap_s]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("typo.yaml:9:5: spec.strategy.maxUnavailabel: unknown field `maxUnavailabel`"),
        "{err}"
    );
    assert!(err.contains("nothing was done"), "{err}");

    // A bad value: field, line and column.
    let zero = write(
        dir.path(),
        "zero.yaml",
        &spec(
            "  operation:\n    maintenance: {action: reboot}\n  strategy:\n    maxUnavailable: 0\n",
        ),
    );
    let (code, _, err) = theseus(&["plan", "-f", zero.to_str().unwrap(), "--snapshot", snap_s]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("zero.yaml:9:") && err.contains("spec.strategy.maxUnavailable"),
        "{err}"
    );

    // No operation at all.
    let none = write(
        dir.path(),
        "none.yaml",
        &spec("  nodes: {roles: [worker]}\n"),
    );
    let (code, _, err) = theseus(&["plan", "-f", none.to_str().unwrap(), "--snapshot", snap_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("operation"), "{err}");

    // Unreadable files.
    let good = write(dir.path(), "good.yaml", &spec(REBOOT));
    let good_s = good.to_str().unwrap();
    let (code, _, err) = theseus(&["plan", "-f", "/nonexistent/m.yaml", "--snapshot", snap_s]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read the migration spec /nonexistent/m.yaml"),
        "{err}"
    );
    let (code, _, err) = theseus(&[
        "plan",
        "-f",
        good_s,
        "--snapshot",
        "/nonexistent/cluster.json",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read the snapshot /nonexistent/cluster.json"),
        "{err}"
    );
    let garbage = write(dir.path(), "garbage.json", "{\"nodes\": [");
    let (code, _, err) = theseus(&[
        "plan",
        "-f",
        good_s,
        "--snapshot",
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("garbage.json") && err.contains("not valid JSON"),
        "{err}"
    );
    let future = write(
        dir.path(),
        "v9.json",
        "{\"apiVersion\": \"theseus.io/v9\", \"kind\": \"ClusterSnapshot\"}",
    );
    let (code, _, err) = theseus(&["plan", "-f", good_s, "--snapshot", future.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("apiVersion is \"theseus.io/v9\""), "{err}");

    // A missing kubeconfig is bad input; an unreachable cluster fails safely with exit 1.
    let (code, _, err) = theseus(&[
        "snapshot",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "-o",
        "x.json",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot load the kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
    let down = write(
        dir.path(),
        "down.kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\ncontexts:\n- name: down\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {}\ncurrent-context: down\n",
    );
    let out_file = dir.path().join("never.json");
    let (code, _, err) = theseus(&[
        "snapshot",
        "--kubeconfig",
        down.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot capture the cluster at http://127.0.0.1:9/ (context down)"),
        "{err}"
    );
    assert!(
        err.contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
    assert!(!out_file.exists());
}

/// `theseus snapshot --endpoints …` records the etcd members next to the cluster (real etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_records_the_etcd_members_when_given_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = theseus_etcd::LocalCluster::start(
        &dir.path().join("etcd"),
        &["e1", "e2", "e3"],
        theseus_etcd::LocalOptions::for_tests(),
    )
    .await
    .unwrap();
    let kc = dir.path().join("kubeconfig");
    let _served = serve("cka-002-lab.yaml", &kc);
    let out = dir.path().join("cluster.json");
    let endpoints = etcd.endpoints_arg();
    let (code, stdout, err) = tokio::task::spawn_blocking({
        let (kc, out) = (kc.clone(), out.clone());
        move || {
            theseus(&[
                "snapshot",
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--endpoints",
                &endpoints,
                "-o",
                out.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("3 etcd members"), "{stdout}");
    let snap = ClusterSnapshot::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let e = snap.etcd.expect("etcd members recorded");
    let mut names: Vec<&str> = e.members.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["e1", "e2", "e3"]);
    assert_eq!(e.members.iter().filter(|m| m.leader).count(), 1);
    assert!(e.members.iter().all(|m| m.healthy && !m.is_learner));
    assert!(e.version.as_deref().is_some_and(|v| v.starts_with("3.")));

    // Unreachable etcd: exit 1, the message names etcd, no file written.
    let bad_out = dir.path().join("none.json");
    let (code, _, err) = tokio::task::spawn_blocking({
        let (kc, bad_out) = (kc.clone(), bad_out.clone());
        move || {
            theseus(&[
                "snapshot",
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--endpoints",
                "http://127.0.0.1:1",
                "-o",
                bad_out.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("etcd"), "{err}");
    assert!(!bad_out.exists());
}

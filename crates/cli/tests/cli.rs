//! The binary as a user runs it: exit codes and messages for bad input, and generated scenarios.

use std::process::Command;

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

#[test]
fn bad_scenarios_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = theseus(&["sim", "serve", "--scenario", "/nonexistent/scenario.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read the scenario file /nonexistent/scenario.yaml"),
        "{err}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: sim.theseus.io/v1alpha1\nkind: Scenario\nnodePool: []\n",
    )
    .unwrap();
    let (code, _, err) = theseus(&["sim", "serve", "--scenario", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown field `nodePool`") && err.contains("line 3"),
        "{err}"
    );

    let (code, _, err) = theseus(&["sim", "serve", "--speed", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--speed must be a positive number"), "{err}");
}

#[test]
fn control_commands_without_a_server_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("none.kubeconfig");
    let (code, _, err) = theseus(&["sim", "machines", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("start `theseus sim serve` first"), "{err}");
    let (code, _, err) = theseus(&["sim", "probes", "--server", "http://127.0.0.1:9"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the simulator"), "{err}");
}

#[test]
fn generated_scenarios_are_valid_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen.yaml");
    let (code, _, err) = theseus(&[
        "sim",
        "generate",
        "--nodes",
        "12",
        "--pods-per-node",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let s = theseus_sim::scenario::Scenario::parse("gen.yaml", &text).unwrap();
    let e = s.expand("gen.yaml").unwrap();
    assert_eq!(e.nodes.len(), 15);
    assert_eq!(s.workloads.iter().map(|w| w.replicas).sum::<usize>(), 60);
}

/// Kills the served simulator when the test ends, whatever happens.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn faults_are_added_listed_and_cleared_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("sim.kubeconfig");
    let kc_s = kc.to_str().unwrap();
    let _served = Served(
        Command::new(env!("CARGO_BIN_EXE_theseus"))
            .args(["sim", "serve", "--kubeconfig", kc_s, "--speed", "20"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start theseus sim serve"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !kc.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "sim serve wrote no kubeconfig within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let good = dir.path().join("fault.yaml");
    std::fs::write(
        &good,
        "{kind: ApiError, verbs: [list], resources: [nodes], rate: 0.5, code: 503}\n",
    )
    .unwrap();
    let (code, out, err) = theseus(&[
        "sim",
        "fault",
        "add",
        good.to_str().unwrap(),
        "--kubeconfig",
        kc_s,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fault 1 added"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "{kind: ApiError, code: 418}\n").unwrap();
    let (code, _, err) = theseus(&[
        "sim",
        "fault",
        "add",
        bad.to_str().unwrap(),
        "--kubeconfig",
        kc_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("code must be 429, 500 or 503"), "{err}");

    let (code, out, err) = theseus(&["sim", "fault", "list", "--kubeconfig", kc_s]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ApiError") && out.lines().count() == 2,
        "{out}"
    );
    let (code, out, _) = theseus(&["sim", "fault", "list", "--kubeconfig", kc_s, "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["faults"][0]["code"], 503);

    let (code, out, _) = theseus(&["sim", "fault", "clear", "--kubeconfig", kc_s]);
    assert_eq!(code, 0);
    assert!(out.contains("1 faults cleared"), "{out}");
    let (_, out, _) = theseus(&["sim", "fault", "list", "--kubeconfig", kc_s]);
    assert!(out.contains("No faults."), "{out}");
}

//! Providers against real parts: `sh` for the command provider, the in-process simulator (virtual
//! time) for the sim provider.

use std::time::Duration;

use serde_json::Value;
use theseus_providers::command::CommandProvider;
use theseus_providers::sim::SimProvider;
use theseus_providers::{Action, NodeTarget, Provider, ProviderError};
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;

fn node(name: &str) -> NodeTarget {
    NodeTarget {
        name: name.into(),
        internal_ip: Some("10.1.0.7".into()),
        roles: vec!["worker".into()],
    }
}

fn ubuntu() -> Action {
    Action::OsMigration {
        os_image: "Ubuntu 22.04.4 LTS".into(),
        kernel_version: Some("5.15.0-105-generic".into()),
        kubelet_version: None,
    }
}

#[tokio::test]
async fn the_command_sees_the_node_and_target_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = CommandProvider::new(
        format!(
            "printf '%s|%s|%s|%s|%s|%s' \"$THESEUS_NODE\" \"$THESEUS_NODE_IP\" \"$THESEUS_NODE_ROLES\" \"$THESEUS_ACTION\" \"$THESEUS_TARGET_OS_IMAGE\" \"$THESEUS_TARGET_KERNEL_VERSION\" > {}; echo done",
            out.display()
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let r = p.run(&node("w1"), &ubuntu()).await.unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.output.trim(), "done");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "w1|10.1.0.7|worker|os-migration|Ubuntu 22.04.4 LTS|5.15.0-105-generic"
    );
}

#[tokio::test]
async fn node_names_are_data_not_shell() {
    let dir = tempfile::tempdir().unwrap();
    let p = CommandProvider::new("echo \"$THESEUS_NODE\"", Duration::from_secs(30)).unwrap();
    let pwned = dir.path().join("pwned");
    let evil = format!("w1; touch {}", pwned.display());
    let r = p.run(&node(&evil), &Action::Reboot).await.unwrap();
    assert!(r.output.contains("touch"), "{}", r.output);
    assert!(!pwned.exists(), "the node name was run as a command");
}

#[tokio::test]
async fn a_failing_command_fails_the_step_with_its_last_words() {
    let p = CommandProvider::new(
        "echo starting; echo 'reimage failed: disk full' >&2; exit 3",
        Duration::from_secs(30),
    )
    .unwrap();
    let e = p.run(&node("w2"), &ubuntu()).await.unwrap_err().to_string();
    assert!(
        e.contains("node w2") && e.contains("exit code 3") && e.contains("disk full"),
        "{e}"
    );
}

#[tokio::test]
async fn a_command_that_outlives_its_timeout_is_killed() {
    let p = CommandProvider::new("sleep 30", Duration::from_millis(300)).unwrap();
    let t = std::time::Instant::now();
    let e = p.run(&node("w3"), &Action::Reboot).await.unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("node w3"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the command was not killed"
    );
    assert!(CommandProvider::new("  ", Duration::from_secs(1)).is_err());
    assert!(CommandProvider::new("true", Duration::ZERO).is_err());
}

const SCENARIO: &str = r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
seed: 2
timing: {bootSeconds: 30, reimageSeconds: 60, jitterSeconds: 0, podStartupSeconds: 2}
nodePools:
- {name: workers, count: 2, namePattern: "w{index}", ipStart: 10.1.0.1, osImage: "CentOS Linux 7 (Core)", kubeletVersion: v1.33.4}
workloads:
- {kind: Deployment, name: web, replicas: 2, cpu: 100m}
"#;

async fn sim() -> Simulation {
    let e = Scenario::parse("test", SCENARIO)
        .unwrap()
        .expand("test")
        .unwrap();
    let s = Simulation::start(&e).await.unwrap();
    s.wait_steady(Duration::from_secs(600)).await.unwrap();
    s
}

async fn node_info(s: &Simulation, name: &str) -> Option<Value> {
    let n = s.cluster.get(&s.cluster.res.nodes, "", name).await.ok()?;
    Some(n.value["status"]["nodeInfo"].to_value())
}

#[tokio::test(start_paused = true)]
async fn sim_os_migration_removes_reimages_and_rejoins_the_node() {
    let s = sim().await;
    let p = SimProvider::in_process(s.router());
    let before = p.machine("w1").await.unwrap();
    assert_eq!(before["osImage"], "CentOS Linux 7 (Core)");
    let r = p.run(&node("w1"), &ubuntu()).await.unwrap();
    assert!(
        r.summary
            .contains("CentOS Linux 7 (Core) to Ubuntu 22.04.4 LTS"),
        "{}",
        r.summary
    );
    // The Node object is gone at once (remove-node), and comes back after reimage + boot.
    assert!(node_info(&s, "w1").await.is_none());
    tokio::time::sleep(Duration::from_secs(180)).await;
    let info = node_info(&s, "w1").await.expect("w1 registered again");
    assert_eq!(info["osImage"], "Ubuntu 22.04.4 LTS");
    assert_eq!(info["kernelVersion"], "5.15.0-105-generic");
    assert_eq!(
        info["kubeletVersion"], "v1.33.4",
        "the kubelet version is kept"
    );
    let after = p.machine("w1").await.unwrap();
    assert_eq!(after["internalIP"], before["internalIP"]);
    assert_eq!(
        after["boots"].as_u64(),
        before["boots"].as_u64().map(|b| b + 1)
    );
}

#[tokio::test(start_paused = true)]
async fn sim_upgrade_and_reboot() {
    let s = sim().await;
    let p = SimProvider::in_process(s.router());
    p.run(
        &node("w2"),
        &Action::Upgrade {
            kubelet_version: "v1.34.1".into(),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(180)).await;
    let info = node_info(&s, "w2").await.unwrap();
    assert_eq!(info["kubeletVersion"], "v1.34.1");
    assert_eq!(info["osImage"], "CentOS Linux 7 (Core)", "the OS is kept");

    let boots = p.machine("w1").await.unwrap()["boots"].as_u64().unwrap();
    p.run(&node("w1"), &Action::Reboot).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        p.machine("w1").await.unwrap()["boots"].as_u64(),
        Some(boots + 1)
    );

    let e = p
        .run(&node("w9"), &Action::Reboot)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("machine w9"), "{e}");
}

#[tokio::test]
async fn sim_over_http_says_what_is_wrong() {
    assert!(matches!(
        SimProvider::http("https://127.0.0.1:6443"),
        Err(ProviderError::Config { .. })
    ));
    let mut p = SimProvider::http("http://127.0.0.1:1").unwrap();
    p.request_timeout = Duration::from_secs(5);
    let e = p
        .run(&node("w1"), &Action::Reboot)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("theseus sim serve") || e.contains("no answer"),
        "{e}"
    );
}

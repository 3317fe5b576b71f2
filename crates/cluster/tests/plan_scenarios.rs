//! The planner on snapshots captured from the runbook scenarios (issue 4's scenario tests):
//! capture from the simulator in-process, then plan.

mod util;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use theseus_model::plan::{Finding, FindingCode, ObjectRef, Plan, Severity};
use theseus_model::{ClusterSnapshot, Migration};
use theseus_plan::{plan, render_text};
use util::{client, scenario, settle, snapshot, start};

fn migration(body: &str) -> Migration {
    let yaml = format!(
        "apiVersion: theseus.io/v1alpha1\nkind: Migration\nmetadata:\n  name: test\nspec:\n{body}"
    );
    Migration::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

const OS_MIGRATION: &str = "  operation:\n    osMigration: {targetOsImage: Ubuntu 22.04.4 LTS}\n  drain: {deleteEmptyDirData: true}\n";

fn findings(p: &Plan, code: FindingCode) -> Vec<&Finding> {
    p.findings_with(code).collect()
}

fn one(p: &Plan, code: FindingCode) -> &Finding {
    p.findings_with(code)
        .next()
        .unwrap_or_else(|| panic!("no {code:?} finding in:\n{}", render_text(p)))
}

fn pods_on(s: &ClusterSnapshot, node: &str) -> usize {
    s.pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(node))
        .count()
}

#[tokio::test(start_paused = true)]
async fn dce_cluster_with_full_workers_gets_a_capacity_finding() {
    let sim = start(&scenario("dce-000-centos-to-ubuntu.yaml")).await;
    let before = snapshot(&sim).await;
    // Fill every worker to kubelet_max_pods (110): the runbook's warning.
    let free: usize = before
        .nodes
        .iter()
        .filter(|n| !n.is_control_plane())
        .map(|n| 110 - pods_on(&before, &n.name))
        .sum();
    let filler: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "batch-filler", "namespace": "shop"},
        "spec": {"replicas": free, "selector": {"matchLabels": {"app": "batch-filler"}},
            "template": {"metadata": {"labels": {"app": "batch-filler"}},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client(&sim), "shop")
        .create(&PostParams::default(), &filler)
        .await
        .unwrap();
    settle(&sim, Duration::from_secs(1800)).await.unwrap();
    let s = snapshot(&sim).await;
    for w in [
        "centos-worker1",
        "centos-worker2",
        "centos-worker3",
        "centos-worker4",
    ] {
        assert_eq!(pods_on(&s, w), 110, "{w}");
    }

    let p = plan(&s, &migration(OS_MIGRATION));
    assert!(p.is_blocked(), "{}", render_text(&p));
    let capacity = one(&p, FindingCode::CapacityExceeded);
    assert_eq!(capacity.severity, Severity::Error);
    assert!(
        capacity.message.contains("pods-per-node limit (110 pods)"),
        "{}",
        capacity.message
    );
    assert!(capacity.wave.is_some());
    assert!(
        capacity
            .objects
            .iter()
            .any(|o| o.kind == "Node" && o.name.starts_with("centos-worker")),
        "{:?}",
        capacity.objects
    );
    // Before the filler, the same migration has no capacity problem.
    let p0 = plan(&before, &migration(OS_MIGRATION));
    assert!(
        findings(&p0, FindingCode::CapacityExceeded).is_empty(),
        "{}",
        render_text(&p0)
    );
}

#[tokio::test(start_paused = true)]
async fn dce_cluster_plans_master1_last_and_an_endpoint_handoff() {
    let sim = start(&scenario("dce-000-centos-to-ubuntu.yaml")).await;
    let s = snapshot(&sim).await;
    let p = plan(&s, &migration(OS_MIGRATION));
    let n = p.waves.len();
    let last: Vec<&[String]> = p.waves[n - 3..]
        .iter()
        .map(|w| w.nodes.as_slice())
        .collect();
    assert_eq!(
        last,
        [["centos-master2"], ["centos-master3"], ["centos-master1"]]
    );
    assert!(p.waves[n - 1].primary);
    assert_eq!(p.control_plane.primary.as_deref(), Some("centos-master1"));
    let handoff = one(&p, FindingCode::EndpointHandoffRequired);
    assert!(
        handoff.message.contains("centos-master1"),
        "{}",
        handoff.message
    );
    // storefront: 4 replicas with required anti-affinity on 6 workers: a spare node takes the
    // replica of the node that is out, so nothing blocks.
    assert!(
        findings(&p, FindingCode::AntiAffinityNeedsSpareNode).is_empty(),
        "{}",
        render_text(&p)
    );
    assert!(!p.is_blocked(), "{}", render_text(&p));
    // Every node is planned, each in exactly one wave.
    let mut planned: Vec<&str> = p
        .waves
        .iter()
        .flat_map(|w| w.nodes.iter().map(String::as_str))
        .collect();
    planned.sort();
    let mut all: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    all.sort();
    assert_eq!(planned, all);
}

#[tokio::test(start_paused = true)]
async fn cka_lab_gets_the_unmanaged_pod_finding_naming_hr_app() {
    let sim = start(&scenario("cka-002-lab.yaml")).await;
    let s = snapshot(&sim).await;
    let hr_app = ObjectRef::namespaced("Pod", "default", "hr-app");

    let p = plan(
        &s,
        &migration("  operation:\n    maintenance: {action: reboot}\n"),
    );
    let f = one(&p, FindingCode::UnmanagedPod);
    assert_eq!(f.severity, Severity::Error);
    assert!(f.objects.contains(&hr_app), "{f:?}");
    assert!(
        f.message.contains("hr-app") && f.message.contains("node01"),
        "{}",
        f.message
    );
    assert!(p.is_blocked());
    assert_eq!(findings(&p, FindingCode::UnmanagedPod).len(), 1);

    // With drain.force the pod is deleted for good: a warning, no longer blocking.
    let p = plan(
        &s,
        &migration("  operation:\n    maintenance: {action: reboot}\n  drain: {force: true}\n"),
    );
    let f = one(&p, FindingCode::UnmanagedPod);
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.objects.contains(&hr_app));
}

#[tokio::test(start_paused = true)]
async fn a_pdb_with_min_available_equal_to_replicas_is_an_error_naming_it() {
    let sim = start(&scenario("cka-002-lab.yaml")).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "blue-all", "namespace": "default"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "blue"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client(&sim), "default")
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    settle(&sim, Duration::from_secs(600)).await.unwrap();
    let s = snapshot(&sim).await;
    let captured = &s.pod_disruption_budgets[0];
    assert_eq!(captured.status.map(|st| st.disruptions_allowed), Some(0));

    let p = plan(
        &s,
        &migration("  operation:\n    maintenance: {action: reboot}\n  drain: {force: true}\n"),
    );
    let f = one(&p, FindingCode::PdbNeverAllowsDisruption);
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.objects.contains(&ObjectRef::namespaced(
            "PodDisruptionBudget",
            "default",
            "blue-all"
        )),
        "{f:?}"
    );
    assert!(f.message.contains("default/blue-all"), "{}", f.message);
    assert!(p.is_blocked());
}

#[tokio::test(start_paused = true)]
async fn kubeadm_1_11_cluster_asked_for_1_13_gets_a_two_hop_path() {
    let sim = start(&scenario("kubeadm-003-arm.yaml")).await;
    let s = snapshot(&sim).await;
    let p = plan(
        &s,
        &migration("  operation:\n    upgrade: {targetVersion: v1.13}\n"),
    );
    let hops: Vec<(&str, &str)> = p
        .upgrade_path
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str()))
        .collect();
    assert_eq!(hops.len(), 2, "{hops:?}\n{}", render_text(&p));
    assert!(
        hops[0].0.starts_with("v1.11") && hops[0].1.starts_with("v1.12"),
        "{hops:?}"
    );
    assert!(
        hops[1].0.starts_with("v1.12") && hops[1].1.starts_with("v1.13"),
        "{hops:?}"
    );
    assert_eq!(one(&p, FindingCode::UpgradePath).severity, Severity::Info);
    // The master goes first in each hop, alone.
    let first = &p.waves[0];
    assert_eq!(first.nodes, ["c2-master0"]);
    // Runbook 003: web's hard anti-affinity over the 3 workers needs a spare node.
    let anti = one(&p, FindingCode::AntiAffinityNeedsSpareNode);
    assert!(
        anti.objects
            .contains(&ObjectRef::namespaced("Deployment", "default", "web")),
        "{anti:?}"
    );
}

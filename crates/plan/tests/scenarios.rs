//! Scenario tests on the runbooks' clusters, written by hand, plus targeted behaviours.

mod util;

use theseus_model::IntOrPercent;
use theseus_model::KubeVersion;
use theseus_model::plan::{FindingCode, ObjectRef, Plan, Severity, WaveKind};
use theseus_model::snapshot::{
    ClusterSnapshot, ControlPlaneComponent, KubeadmConfig, LABEL_HOSTNAME, LABEL_ZONE, WorkloadKind,
};
use theseus_plan::{plan, plan_detailed, render_text};
use util::{Cluster, GI, MI, check_plan, migration};

fn codes(p: &Plan, sev: Severity) -> Vec<FindingCode> {
    p.findings_of(sev).map(|f| f.code).collect()
}

fn finding(p: &Plan, code: FindingCode) -> &theseus_model::plan::Finding {
    p.findings_with(code)
        .next()
        .unwrap_or_else(|| panic!("no {code:?} finding in:\n{}", render_text(p)))
}

fn wave_nodes(p: &Plan) -> Vec<Vec<String>> {
    p.waves.iter().map(|w| w.nodes.clone()).collect()
}

/// Runbook 000: DCE 5.0 cluster, 3 masters (centos-master1 primary, first in the Kubean
/// inventory) and 4 workers at 110 pods per node, kubeadm-config and cluster-info pointing at
/// master1.
fn dce_cluster() -> Cluster {
    let mut c = Cluster::new("v1.33.4");
    for (i, zone) in ["zone-a", "zone-b", "zone-c"].iter().enumerate() {
        c.control_plane(
            &format!("centos-master{}", i + 1),
            &format!("10.6.212.1{}", i + 1),
            zone,
            false,
        );
    }
    for (i, zone) in ["zone-a", "zone-b", "zone-a", "zone-b"].iter().enumerate() {
        c.worker(
            &format!("centos-worker{}", i + 1),
            &format!("10.6.212.2{}", i + 1),
            zone,
            16_000,
            64 * GI,
            110,
        );
    }
    let w = [
        "centos-worker1",
        "centos-worker2",
        "centos-worker3",
        "centos-worker4",
    ];
    // The runbook scenario runs storefront with 4 replicas on 4 workers; with required
    // anti-affinity that leaves no spare node (see the test below), so 3 here.
    c.deployment("shop", "storefront", 3, 500, 512 * MI, &w)
        .anti_affinity("shop", "storefront", LABEL_HOSTNAME)
        .pdb(
            "shop",
            "storefront",
            "storefront",
            Some(IntOrPercent::Int(2)),
            None,
        )
        .deployment("shop", "checkout", 3, 250, 256 * MI, &w[1..])
        .pdb(
            "shop",
            "checkout",
            "checkout",
            None,
            Some(IntOrPercent::Int(1)),
        )
        .deployment("shop", "report-generator", 1, 1000, 2 * GI, &w[2..])
        .workload(
            WorkloadKind::StatefulSet,
            "shop",
            "redis",
            3,
            500,
            GI,
            &w[..3],
        )
        .anti_affinity("shop", "redis", LABEL_HOSTNAME)
        .pdb("shop", "redis", "redis", Some(IntOrPercent::Int(2)), None)
        .deployment("shop", "cache-warmer", 2, 100, 128 * MI, &w[..2])
        .deployment("kube-system", "coredns", 2, 100, 70 * MI, &w[2..])
        .anti_affinity("kube-system", "coredns", LABEL_HOSTNAME)
        .pdb(
            "kube-system",
            "coredns",
            "coredns",
            Some(IntOrPercent::Int(1)),
            None,
        )
        .daemonset("monitoring", "node-exporter", 50, 64 * MI)
        .daemonset("kube-system", "calico-node", 100, 128 * MI);
    for p in c
        .snap
        .pods
        .iter_mut()
        .filter(|p| p.name.starts_with("cache-warmer"))
    {
        p.empty_dir = vec!["cache".into()];
    }
    let cp = &mut c.snap.control_plane;
    cp.kubeadm = Some(KubeadmConfig {
        config_map: Some("kube-system/kubeadm-config".into()),
        kubernetes_version: Some(KubeVersion::parse("v1.33.4").unwrap()),
        control_plane_endpoint: Some("10.6.212.11:6443".into()),
        cluster_name: Some("centos".into()),
        external_etcd_endpoints: vec![],
    });
    cp.cluster_info_server = Some("https://10.6.212.11:6443".into());
    let hosts = r#"
all:
  hosts:
    centos-master1: {ip: 10.6.212.11}
    centos-master2: {ip: 10.6.212.12}
    centos-master3: {ip: 10.6.212.13}
  children:
    kube_control_plane:
      hosts: {centos-master1: null, centos-master2: null, centos-master3: null}
    kube_node:
      hosts: {centos-worker1: null, centos-worker2: null, centos-worker3: null, centos-worker4: null}
    etcd:
      hosts: {centos-master1: null, centos-master2: null, centos-master3: null}
"#;
    cp.inventory = Some(
        theseus_model::sources::parse_inventory(hosts, Some("kubean-system/centos-hosts-conf"))
            .unwrap(),
    );
    c
}

const OS_MIGRATION: &str = "  operation:\n    osMigration: {targetOsImage: Ubuntu 22.04.4 LTS}\n  drain: {deleteEmptyDirData: true}\n";

#[test]
fn dce_cluster_migrates_workers_then_masters_with_master1_last() {
    let c = dce_cluster();
    let snap = c.build();
    let detail = plan_detailed(&snap, &migration(OS_MIGRATION));
    let p = &detail.plan;
    let violations = check_plan(&snap, &detail);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(!p.is_blocked(), "{}", render_text(p));
    let waves = wave_nodes(p);
    let n = waves.len();
    assert_eq!(waves[n - 3], ["centos-master2"]);
    assert_eq!(waves[n - 2], ["centos-master3"]);
    assert_eq!(waves[n - 1], ["centos-master1"]);
    assert!(p.waves[n - 1].primary);
    for w in &p.waves[..n - 3] {
        assert_eq!(w.kind, WaveKind::Workers);
    }
    // storefront (3 replicas, minAvailable 2) allows one disruption: one worker per wave.
    assert!(
        p.waves[..n - 3].iter().all(|w| w.nodes.len() == 1),
        "{waves:?}"
    );
    assert_eq!(p.control_plane.primary.as_deref(), Some("centos-master1"));
    let primary = finding(p, FindingCode::PrimaryControlPlane);
    assert!(
        primary
            .message
            .contains("first of kube_control_plane in kubean-system/centos-hosts-conf"),
        "{}",
        primary.message
    );
    // controlPlaneEndpoint and cluster-info name master1: handoff before its wave.
    let handoff = finding(p, FindingCode::EndpointHandoffRequired);
    assert_eq!(handoff.severity, Severity::Warning);
    assert!(
        handoff.message.contains("centos-master1"),
        "{}",
        handoff.message
    );
    assert!(
        handoff.message.contains(&format!("wave {n}")),
        "{}",
        handoff.message
    );
    assert!(
        handoff
            .hint
            .as_deref()
            .unwrap()
            .contains("centos-master2 (10.6.212.12)")
    );
    assert!(p.control_plane.endpoint_handoff);
    let etcd = p.control_plane.etcd.as_ref().unwrap();
    assert_eq!(
        (
            etcd.members,
            etcd.quorum,
            etcd.tolerated_failures,
            etcd.tolerated_failures_during_migration
        ),
        (3, 2, 1, 0)
    );
    assert_eq!(etcd.source, "inventory");
    // report-generator has one replica: surged.
    assert!(
        finding(p, FindingCode::SingleReplicaSurge)
            .message
            .contains("report-generator")
    );
    assert_eq!(
        finding(p, FindingCode::EmptyDirData).severity,
        Severity::Warning
    );
    assert_eq!(p.components[0].current, "7 x CentOS Linux 7 (Core)");
    assert!(p.estimate.lower_bound_seconds <= p.estimate.total_seconds);
    assert!(p.estimate.lower_bound_seconds > 0);
}

#[test]
fn four_anti_affine_replicas_on_four_workers_need_a_spare_node() {
    let mut c = dce_cluster();
    c.deployment(
        "shop",
        "storefront4",
        4,
        500,
        512 * MI,
        &[
            "centos-worker1",
            "centos-worker2",
            "centos-worker3",
            "centos-worker4",
        ],
    )
    .anti_affinity("shop", "storefront4", LABEL_HOSTNAME)
    .pdb(
        "shop",
        "storefront4",
        "storefront4",
        Some(IntOrPercent::Int(3)),
        None,
    );
    let snap = c.build();
    let detail = plan_detailed(&snap, &migration(OS_MIGRATION));
    let p = &detail.plan;
    let f = finding(p, FindingCode::AntiAffinityNeedsSpareNode);
    assert!(
        f.message
            .contains("Deployment shop/storefront4 has 4 replicas"),
        "{}",
        f.message
    );
    assert!(f.message.contains("only 4 eligible nodes"), "{}", f.message);
    assert!(f.wave.is_some());
    assert!(p.is_blocked());
    assert!(
        p.waves
            .iter()
            .filter(|w| w.blocked)
            .all(|w| w.kind == WaveKind::Workers)
    );
}

#[test]
fn dce_cluster_with_a_full_worker_at_110_pods_gets_a_capacity_finding() {
    let mut c = dce_cluster();
    // centos-worker1 runs 110 pods; the other workers are nearly full too.
    let count = |c: &Cluster, node: &str| {
        c.snap
            .pods
            .iter()
            .filter(|p| p.node_name.as_deref() == Some(node))
            .count()
    };
    let fill1 = 110 - count(&c, "centos-worker1");
    c.deployment("batch", "crawler", fill1, 10, 16 * MI, &["centos-worker1"]);
    for n in ["centos-worker2", "centos-worker3", "centos-worker4"] {
        let fill = 100 - count(&c, n);
        c.deployment("batch", &format!("filler-{n}"), fill, 10, 16 * MI, &[n]);
    }
    assert_eq!(count(&c, "centos-worker1"), 110);
    let snap = c.build();
    let detail = plan_detailed(&snap, &migration(OS_MIGRATION));
    let p = &detail.plan;
    assert!(p.is_blocked());
    let cap = finding(p, FindingCode::CapacityExceeded);
    assert_eq!(cap.severity, Severity::Error);
    assert!(
        cap.objects.contains(&ObjectRef::node("centos-worker1")),
        "{cap:#?}"
    );
    assert!(
        cap.message.contains("pods-per-node limit (110 pods)"),
        "{}",
        cap.message
    );
    assert!(cap.hint.as_deref().unwrap().contains("maxPods"));
    let wave = p
        .waves
        .iter()
        .find(|w| w.nodes == ["centos-worker1"])
        .unwrap();
    assert!(wave.blocked);
    assert_eq!(cap.wave, Some(wave.index));
    // The checker accepts everything but the blocked wave's pending pods.
    let violations = check_plan(&snap, &detail);
    assert!(
        violations.iter().all(|v| !v.contains("overcommitted")),
        "{violations:#?}"
    );
    let text = render_text(p);
    assert!(text.contains("BLOCKED"), "{text}");
    assert!(text.contains("[CapacityExceeded]"), "{text}");
}

/// Runbook 002, CKA lab: controlplane (schedulable) and node01; `hr-app` has no controller.
fn cka_lab() -> ClusterSnapshot {
    let mut c = Cluster::new("v1.33.4");
    c.control_plane("controlplane", "192.168.121.10", "", true)
        .worker("node01", "192.168.121.11", "", 4000, 8 * GI, 110)
        .deployment(
            "default",
            "blue",
            3,
            100,
            64 * MI,
            &["controlplane", "node01"],
        )
        .naked_pod("default", "hr-app", "node01")
        .daemonset("kube-system", "kube-flannel-ds", 100, 50 * MI)
        .daemonset("kube-system", "kube-proxy", 0, 0);
    c.build()
}

#[test]
fn cka_lab_names_the_unmanaged_pod_hr_app() {
    let snap = cka_lab();
    let m = migration("  operation: {maintenance: {action: reboot}}\n  nodes: {names: [node01]}\n");
    let p = plan(&snap, &m);
    assert!(p.is_blocked());
    let f = finding(&p, FindingCode::UnmanagedPod);
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("default/hr-app"), "{}", f.message);
    assert!(
        f.objects
            .contains(&ObjectRef::namespaced("Pod", "default", "hr-app"))
    );
    assert!(f.hint.as_deref().unwrap().contains("drain.force"));
    let ds = finding(&p, FindingCode::DaemonSetPods);
    assert_eq!(ds.severity, Severity::Info);
    assert!(ds.message.contains("kube-flannel-ds"));
    // A forced drain deletes it: a warning, and the wave deletes one pod.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  nodes: {names: [node01]}\n  drain: {force: true}\n",
    );
    let p = plan(&snap, &m);
    assert!(!p.is_blocked(), "{}", render_text(&p));
    assert_eq!(
        finding(&p, FindingCode::UnmanagedPod).severity,
        Severity::Warning
    );
    assert_eq!(p.waves.len(), 1);
    assert_eq!(p.waves[0].deleted_pods, 1);
    // blue's node01 replicas go to the schedulable control plane.
    assert_eq!(p.waves[0].evicted_pods, 1);
}

#[test]
fn pdb_with_min_available_equal_to_replicas_is_an_error_naming_it() {
    let mut c = Cluster::new("v1.30.2");
    c.worker("w1", "10.0.0.1", "a", 4000, 8 * GI, 110)
        .worker("w2", "10.0.0.2", "a", 4000, 8 * GI, 110)
        .worker("w3", "10.0.0.3", "a", 4000, 8 * GI, 110)
        .deployment("shop", "web", 3, 100, 64 * MI, &["w1", "w2", "w3"])
        .pdb("shop", "web-pdb", "web", Some(IntOrPercent::Int(3)), None);
    let snap = c.build();
    let detail = plan_detailed(
        &snap,
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    let p = &detail.plan;
    assert!(p.is_blocked());
    let f = finding(p, FindingCode::PdbNeverAllowsDisruption);
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("shop/web-pdb"), "{}", f.message);
    assert!(f.message.contains("minAvailable 3"), "{}", f.message);
    assert!(f.objects.contains(&ObjectRef::namespaced(
        "PodDisruptionBudget",
        "shop",
        "web-pdb"
    )));
    assert!(f.wave.is_some());
    assert_eq!(p.waves.iter().filter(|w| w.blocked).count(), 3);
    assert!(check_plan(&snap, &detail).is_empty());
    // maxUnavailable 0 and 100% say so too.
    let mut c2 = c;
    c2.snap.pod_disruption_budgets[0].min_available = None;
    c2.snap.pod_disruption_budgets[0].max_unavailable = Some(IntOrPercent::Int(0));
    let p = plan(
        &c2.build(),
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    assert!(
        finding(&p, FindingCode::PdbNeverAllowsDisruption)
            .message
            .contains("maxUnavailable is 0")
    );
}

#[test]
fn workload_already_below_its_pdb_blocks() {
    let mut c = Cluster::new("v1.30.2");
    c.worker("w1", "10.0.0.1", "a", 4000, 8 * GI, 110)
        .worker("w2", "10.0.0.2", "a", 4000, 8 * GI, 110)
        .deployment("shop", "api", 3, 100, 64 * MI, &["w1", "w2"])
        .pdb("shop", "api", "api", None, Some(IntOrPercent::Int(1)));
    c.snap.pods[2].ready = false;
    let p = plan(
        &c.build(),
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    let f = finding(&p, FindingCode::PdbBelowMinimum);
    assert!(
        f.message.contains("2 of 3 pods healthy, 2 required"),
        "{}",
        f.message
    );
    assert!(p.is_blocked());
}

/// Runbook 003: kubeadm cluster at v1.11.1, one master and three workers.
fn kubeadm_arm() -> Cluster {
    let mut c = Cluster::new("v1.11.1");
    c.control_plane("c2-master0", "192.168.2.100", "", false)
        .worker("c2-worker0", "192.168.2.101", "", 4000, 2 * GI, 110)
        .worker("c2-worker1", "192.168.2.102", "", 4000, 2 * GI, 110)
        .worker("c2-worker2", "192.168.2.103", "", 4000, 2 * GI, 110)
        .deployment(
            "default",
            "web",
            3,
            200,
            128 * MI,
            &["c2-worker0", "c2-worker1", "c2-worker2"],
        )
        .anti_affinity("default", "web", LABEL_HOSTNAME)
        .pdb("default", "web", "web", None, Some(IntOrPercent::Int(1)))
        .deployment(
            "kube-system",
            "coredns",
            2,
            100,
            70 * MI,
            &["c2-worker0", "c2-worker1"],
        )
        .daemonset("kube-system", "kube-proxy", 0, 0);
    let v = KubeVersion::parse("v1.11.1").unwrap();
    for comp in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        c.snap.control_plane.components.push(ControlPlaneComponent {
            component: comp.into(),
            node: "c2-master0".into(),
            version: Some(v.clone()),
            image: None,
        });
    }
    c.snap.control_plane.kubeadm = Some(
        theseus_model::sources::parse_cluster_configuration(
            "kind: MasterConfiguration\nkubernetesVersion: v1.11.1\napi: {advertiseAddress: 192.168.2.100, bindPort: 6443}\n",
        )
        .unwrap(),
    );
    c
}

#[test]
fn kubeadm_1_11_1_to_1_13_is_a_two_hop_path() {
    let c = kubeadm_arm();
    let snap = c.build();
    let detail = plan_detailed(
        &snap,
        &migration("  operation:\n    upgrade: {targetVersion: v1.13}\n"),
    );
    let p = &detail.plan;
    let hops: Vec<(&str, &str, bool)> = p
        .upgrade_path
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str(), h.workers))
        .collect();
    assert_eq!(
        hops,
        [("v1.11.1", "v1.12.x", false), ("v1.12.x", "v1.13", true)]
    );
    let path = finding(p, FindingCode::UpgradePath);
    assert!(
        path.message.contains("2 hops (v1.12.x → v1.13)"),
        "{}",
        path.message
    );
    // The master once per hop, then the workers once at v1.13.
    assert_eq!(p.waves[0].nodes, ["c2-master0"]);
    assert_eq!(p.waves[0].target_version.as_deref(), Some("v1.12.x"));
    assert_eq!(p.waves[1].nodes, ["c2-master0"]);
    assert_eq!(p.waves[1].target_version.as_deref(), Some("v1.13"));
    assert!(
        p.waves[2..]
            .iter()
            .all(|w| w.kind == WaveKind::Workers && w.target_version.as_deref() == Some("v1.13"))
    );
    let kubelet = p
        .components
        .iter()
        .find(|c| c.component == "Kubelet")
        .unwrap();
    assert_eq!(kubelet.current, "4 x v1.11.1");
    assert_eq!(p.components[0].component, "API Server");
    assert_eq!(p.components[0].current, "v1.11.1");
    // Hard anti-affinity with three replicas on three workers needs a spare node (runbook 003).
    let spare = finding(p, FindingCode::AntiAffinityNeedsSpareNode);
    assert!(
        spare.message.contains("Deployment default/web"),
        "{}",
        spare.message
    );
    // A single master: the API is down during its waves.
    assert_eq!(
        finding(p, FindingCode::ControlPlaneDowntime).severity,
        Severity::Warning
    );
    let text = render_text(p);
    assert!(
        text.contains("Upgrade path (one minor version at a time):"),
        "{text}"
    );
    assert!(text.contains("hop 1: v1.11.1 -> v1.12.x"), "{text}");
    assert!(text.contains("COMPONENT"), "{text}");
    assert!(text.contains("4 x v1.11.1"), "{text}");
}

#[test]
fn a_spare_node_or_add_before_remove_resolves_the_anti_affinity() {
    let mut c = kubeadm_arm();
    c.worker("c2-worker3", "192.168.2.104", "", 4000, 2 * GI, 110);
    let snap = c.build();
    let detail = plan_detailed(
        &snap,
        &migration("  operation:\n    upgrade: {targetVersion: v1.12.1}\n"),
    );
    assert!(
        detail
            .plan
            .findings_with(FindingCode::AntiAffinityNeedsSpareNode)
            .next()
            .is_none()
    );
    assert!(!detail.plan.is_blocked(), "{}", render_text(&detail.plan));
    assert!(check_plan(&snap, &detail).is_empty());

    let snap = kubeadm_arm().build();
    let m = migration(
        "  operation:\n    osMigration: {targetOsImage: Arch Linux ARM 2024}\n  strategy: {type: addBeforeRemove}\n",
    );
    let detail = plan_detailed(&snap, &m);
    assert!(!detail.plan.is_blocked(), "{}", render_text(&detail.plan));
    assert!(
        detail
            .trace
            .iter()
            .any(|t| t.added_nodes.contains(&"c2-worker0-new".to_string()))
    );
    assert!(
        check_plan(&snap, &detail).is_empty(),
        "{:#?}",
        check_plan(&snap, &detail)
    );
}

#[test]
fn waves_grow_to_the_cap_draining_budgets_in_rounds() {
    let mut c = Cluster::new("v1.30.2");
    let names: Vec<String> = (1..=12).map(|i| format!("w{i:02}")).collect();
    for (i, n) in names.iter().enumerate() {
        c.worker(
            n,
            &format!("10.0.0.{}", i + 1),
            ["a", "b", "c"][i % 3],
            8000,
            16 * GI,
            110,
        );
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.deployment("shop", "web", 12, 200, 256 * MI, &refs).pdb(
        "shop",
        "web",
        "web",
        None,
        Some(IntOrPercent::Percent(25)),
    );
    let snap = c.build();
    // 25% of 12 = 3 disruptions; cap 50% = 6 nodes. A wave may drain web in rounds of 3, so
    // the waves fill up to the cap instead of stopping at 3 nodes.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: auto, maxUnavailableCap: 50%}\n",
    );
    let detail = plan_detailed(&snap, &m);
    let p = &detail.plan;
    assert!(check_plan(&snap, &detail).is_empty());
    // Reboot 300 s, no soak, start-up unobserved (10 s) + 2 s a round: 1 + 61 / 12 = 6 rounds.
    assert_eq!(p.selection.max_drain_rounds, 6);
    assert_eq!(p.waves.len(), 2, "{:?}", wave_nodes(p));
    // Interleaved over the zones; 6 web pods out of a budget of 3: two rounds.
    assert_eq!(p.waves[0].nodes, ["w01", "w02", "w03", "w04", "w05", "w06"]);
    assert_eq!(p.waves[0].drain_rounds, 2);
    // The second wave's nodes carry the first wave's pods too: 12 pods, 4 rounds.
    assert_eq!(p.waves[1].evicted_pods, 12);
    assert_eq!(p.waves[1].drain_rounds, 4);
    assert_eq!(p.estimate.min_worker_waves, 2);
    assert_eq!(p.estimate.min_worker_waves_bound, "cap");
    // Each extra round costs a start-up time plus 2 s in the estimate.
    assert_eq!(
        p.waves[1].estimated_seconds - p.waves[0].estimated_seconds,
        2 * 12
    );
    // Waves of 3 nodes evict 3 web pods: one round each.
    let m3 = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: 3}\n",
    );
    let p3 = plan(&snap, &m3);
    assert_eq!(p3.waves[0].drain_rounds, 1);
    assert_eq!(
        p.waves[0].estimated_seconds - p3.waves[0].estimated_seconds,
        12
    );
    // The user's cap holds.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: 2}\n",
    );
    let p = plan(&snap, &m);
    assert!(p.waves.iter().all(|w| w.nodes.len() <= 2));
    assert_eq!(p.waves.len(), 6);
    // Zone by zone: waves never mix zones.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {zoneByZone: true, maxUnavailableCap: 50%}\n",
    );
    let p = plan(&snap, &m);
    assert!(p.waves.iter().all(|w| w.zones.len() == 1), "{:?}", p.waves);
    let zones: Vec<&str> = p.waves.iter().map(|w| w.zones[0].as_str()).collect();
    let mut sorted = zones.clone();
    sorted.sort();
    assert_eq!(zones, sorted, "zones one after another");
}

#[test]
fn unbudgeted_workloads_keep_a_replica_and_surge_rescues_single_replica_pdbs() {
    let mut c = Cluster::new("v1.30.2");
    for i in 1..=4 {
        c.worker(
            &format!("w{i}"),
            &format!("10.0.0.{i}"),
            "a",
            8000,
            16 * GI,
            110,
        );
    }
    c.deployment("shop", "pair", 2, 100, 64 * MI, &["w1", "w2"])
        .deployment("shop", "solo", 1, 100, 64 * MI, &["w3"])
        .pdb("shop", "solo", "solo", Some(IntOrPercent::Int(1)), None);
    let snap = c.build();
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: 4}\n",
    );
    let detail = plan_detailed(&snap, &m);
    let p = &detail.plan;
    assert!(!p.is_blocked(), "{}", render_text(p));
    assert!(check_plan(&snap, &detail).is_empty());
    // w1 and w2 (both replicas of `pair`) go together only in two drain rounds: one replica,
    // then (once its replacement is Ready) the other.
    let both = p
        .waves
        .iter()
        .find(|w| w.nodes.contains(&"w1".into()) && w.nodes.contains(&"w2".into()));
    assert!(both.is_none_or(|w| w.drain_rounds >= 2), "{:?}", p.waves);
    assert!(
        finding(p, FindingCode::NoPdb)
            .message
            .contains("Deployment shop/pair")
    );
    assert!(
        finding(p, FindingCode::SingleReplicaSurge)
            .message
            .contains("shop/solo")
    );
    let solo_wave = p
        .waves
        .iter()
        .find(|w| w.nodes.contains(&"w3".into()))
        .unwrap();
    assert_eq!(solo_wave.surge_pods, 1);
    // Without surge, minAvailable 1 on one replica can never allow a disruption.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  surge: {singleReplicaDeployments: false}\n",
    );
    let p = plan(&snap, &m);
    assert!(
        finding(&p, FindingCode::PdbNeverAllowsDisruption)
            .message
            .contains("shop/solo")
    );
    // Without protection, both replicas may go at once, in one round.
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: 4, protectUnbudgeted: false}\n",
    );
    let p = plan(&snap, &m);
    assert!(
        p.waves.iter().any(|w| w.nodes.contains(&"w1".into())
            && w.nodes.contains(&"w2".into())
            && w.drain_rounds == 1),
        "{:?}",
        p.waves
    );
}

#[test]
fn selections_and_skew() {
    let snap = cka_lab();
    let p = plan(
        &snap,
        &migration("  operation: {maintenance: {action: reboot}}\n  nodes: {names: [node09]}\n"),
    );
    assert!(codes(&p, Severity::Error).contains(&FindingCode::UnknownNode));
    assert!(codes(&p, Severity::Error).contains(&FindingCode::EmptySelection));
    assert!(p.waves.is_empty());
    let p = plan(
        &snap,
        &migration(
            "  operation: {maintenance: {action: reboot}}\n  nodes: {roles: [worker]}\n  drain: {force: true}\n",
        ),
    );
    assert_eq!(wave_nodes(&p), [["node01"]]);
    let p = plan(
        &snap,
        &migration(
            "  operation: {maintenance: {action: reboot}}\n  nodes: {selector: {matchLabels: {kubernetes.io/hostname: controlplane}}}\n",
        ),
    );
    assert_eq!(wave_nodes(&p), [["controlplane"]]);
    // A kubelet newer than the API server.
    let mut snap2 = snap.clone();
    snap2.nodes[1].kubelet_version = Some(KubeVersion::parse("v1.34.0").unwrap());
    let p = plan(
        &snap2,
        &migration("  operation: {maintenance: {action: reboot}}\n  drain: {force: true}\n"),
    );
    assert!(
        finding(&p, FindingCode::KubeletSkew)
            .message
            .contains("newer than the API server")
    );
    // Downgrades are refused.
    let p = plan(
        &snap,
        &migration("  operation: {upgrade: {targetVersion: v1.32.0}}\n"),
    );
    assert!(codes(&p, Severity::Error).contains(&FindingCode::DowngradeNotSupported));
    // OS migration skips nodes already at the target.
    let mut snap3 = snap.clone();
    snap3.nodes[0].os_image = "Ubuntu 22.04.4 LTS".into();
    let p = plan(
        &snap3,
        &migration(
            "  operation: {osMigration: {targetOsImage: Ubuntu 22.04.4 LTS}}\n  drain: {force: true}\n",
        ),
    );
    assert_eq!(p.selection.skipped, ["controlplane"]);
    assert_eq!(wave_nodes(&p), [["node01"]]);
}

#[test]
fn multiple_pdbs_on_one_pod_and_pdbs_selecting_nothing() {
    let mut c = Cluster::new("v1.30.2");
    c.worker("w1", "10.0.0.1", "a", 4000, 8 * GI, 110)
        .worker("w2", "10.0.0.2", "a", 4000, 8 * GI, 110)
        .deployment("shop", "web", 2, 100, 64 * MI, &["w1", "w2"])
        .pdb("shop", "web-a", "web", None, Some(IntOrPercent::Int(1)))
        .pdb("shop", "web-b", "web", None, Some(IntOrPercent::Int(1)))
        .pdb("shop", "typo", "wbe", None, Some(IntOrPercent::Int(1)));
    let p = plan(
        &c.build(),
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    let f = finding(&p, FindingCode::PodInMultiplePdbs);
    assert!(
        f.message.contains("shop/web-a, shop/web-b"),
        "{}",
        f.message
    );
    assert!(
        finding(&p, FindingCode::PdbMatchesNoPods)
            .message
            .contains("shop/typo")
    );
}

#[test]
fn node_selectors_and_taints_are_honoured_when_placing() {
    let mut c = Cluster::new("v1.30.2");
    c.worker("gpu1", "10.0.0.1", "a", 8000, 16 * GI, 110)
        .worker("cpu1", "10.0.0.2", "a", 8000, 16 * GI, 110)
        .worker("cpu2", "10.0.0.3", "a", 8000, 16 * GI, 110)
        .deployment("ml", "trainer", 1, 1000, GI, &["gpu1"]);
    c.snap.nodes[0]
        .labels
        .insert("accelerator".into(), "gpu".into());
    for p in c.snap.pods.iter_mut() {
        p.node_selector.insert("accelerator".into(), "gpu".into());
    }
    let snap = c.build();
    let p = plan(
        &snap,
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    let f = finding(&p, FindingCode::NoEligibleNode);
    assert!(f.message.contains("Deployment ml/trainer"), "{}", f.message);
    assert!(f.objects.contains(&ObjectRef::node("gpu1")));
    // A zone selector restricts where pods may go.
    let mut c = Cluster::new("v1.30.2");
    c.worker("a1", "10.0.0.1", "a", 4000, 8 * GI, 110)
        .worker("a2", "10.0.0.2", "a", 4000, 8 * GI, 110)
        .worker("b1", "10.0.0.3", "b", 4000, 8 * GI, 110)
        .deployment("shop", "web", 2, 3000, GI, &["a1", "b1"]);
    for p in c.snap.pods.iter_mut() {
        p.node_selector.insert(LABEL_ZONE.into(), "a".into());
    }
    c.snap.pods[1].node_name = Some("a2".into());
    let snap = c.build();
    let detail = plan_detailed(
        &snap,
        &migration("  operation: {maintenance: {action: reboot}}\n  nodes: {names: [a1]}\n"),
    );
    // web-0 needs zone a; a2 has 1000m left after its own 3000m replica: it fits nowhere.
    assert!(detail.plan.is_blocked());
    assert!(
        finding(&detail.plan, FindingCode::CapacityExceeded)
            .message
            .contains("short of CPU")
    );
}

#[test]
fn plans_serialize_to_a_stable_json_and_yaml_schema() {
    let snap = dce_cluster().build();
    let p = plan(&snap, &migration(OS_MIGRATION));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["apiVersion"], "theseus.io/v1alpha1");
    assert_eq!(json["kind"], "Plan");
    assert!(json["waves"][0]["nodes"].is_array());
    assert!(json["waves"][0]["estimatedSeconds"].is_u64());
    let f = &json["findings"][0];
    for key in ["severity", "code", "message", "objects"] {
        assert!(!f[key].is_null(), "finding lacks {key}: {f}");
    }
    assert!(json["estimate"]["totalSeconds"].is_u64());
    assert!(json["estimate"]["lowerBoundSeconds"].is_u64());
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
    let yaml = serde_yaml::to_string(&p).unwrap();
    let back: Plan = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, p);
}

#[test]
fn estimates_follow_the_spec() {
    let snap = dce_cluster().build();
    let base = plan(&snap, &migration(OS_MIGRATION));
    let slow = plan(
        &snap,
        &migration(&format!(
            "{OS_MIGRATION}  provider:\n    type: sim\n    expectedActionDuration: 1h\n  maintenanceWindow: {{start: \"22:00\", end: \"23:00\"}}\n"
        )),
    );
    assert_eq!(base.waves.len(), slow.waves.len());
    for (a, b) in base.waves.iter().zip(&slow.waves) {
        assert_eq!(b.estimated_seconds - a.estimated_seconds, 3600 - 1200);
    }
    assert!(finding(&slow, FindingCode::MaintenanceWindowTooShort).severity == Severity::Warning);
    assert_eq!(
        slow.estimate.maintenance_windows,
        Some(slow.waves.len() as u32)
    );
    let short = plan(
        &snap,
        &migration(&format!("{OS_MIGRATION}  gates: {{soak: 0s}}\n")),
    );
    assert_eq!(
        short.estimate.total_seconds + 30 * short.waves.len() as u64,
        base.estimate.total_seconds
    );
}

#[test]
fn many_findings_of_one_kind_are_grouped() {
    let mut c = Cluster::new("v1.30.2");
    c.worker("w1", "10.0.0.1", "a", 16_000, 32 * GI, 110)
        .worker("w2", "10.0.0.2", "a", 16_000, 32 * GI, 110);
    for i in 0..7 {
        c.workload(
            WorkloadKind::StatefulSet,
            "db",
            &format!("db{i}"),
            1,
            100,
            64 * MI,
            &["w1"],
        );
    }
    let p = plan(
        &c.build(),
        &migration("  operation: {maintenance: {action: reboot}}\n"),
    );
    let single: Vec<_> = p
        .findings_with(FindingCode::SingleReplicaWorkload)
        .collect();
    assert_eq!(single.len(), 1);
    assert!(
        single[0]
            .message
            .starts_with("7 workloads have one replica"),
        "{}",
        single[0].message
    );
    assert!(
        single[0].message.ends_with("and 2 more"),
        "{}",
        single[0].message
    );
    assert_eq!(single[0].objects.len(), 7);
}

#[test]
fn hostile_snapshots_never_panic() {
    use theseus_model::snapshot::Resources;
    let m = migration(
        "  operation: {osMigration: {targetOsImage: U}}\n  strategy: {maxUnavailable: 100%}\n",
    );
    // Empty cluster.
    let p = plan(&ClusterSnapshot::default(), &m);
    assert!(codes(&p, Severity::Error).contains(&FindingCode::EmptySelection));
    // Extreme numbers, duplicate names, pods on unknown nodes, PDBs with absurd values.
    let mut c = Cluster::new("v1.30.2");
    c.worker("w1", "10.0.0.1", "a", i64::MAX, i64::MAX, i64::MAX)
        .worker("w1", "10.0.0.1", "a", 0, 0, 0)
        .worker("w2", "10.0.0.2", "", -5, -5, -5)
        .deployment("x", "big", 3, i64::MAX, i64::MAX, &["w1", "w2", "ghost"])
        .pdb("x", "min", "big", Some(IntOrPercent::Int(i64::MIN)), None)
        .pdb("x", "max", "big", None, Some(IntOrPercent::Int(i64::MIN)))
        .pdb(
            "x",
            "pct",
            "big",
            None,
            Some(IntOrPercent::Percent(u32::MAX)),
        );
    for p in c.snap.pods.iter_mut() {
        p.termination_grace_period_seconds = Some(i64::MAX);
        p.startup_seconds = Some(u32::MAX);
        p.requests = Resources {
            cpu_millis: i64::MIN,
            memory_bytes: i64::MAX,
        };
    }
    c.snap.nodes[0].kubelet_version = Some(KubeVersion::new(u32::MAX, u32::MAX, Some(u32::MAX)));
    let snap = c.build();
    for body in [
        "  operation: {osMigration: {targetOsImage: U}}\n  strategy: {maxUnavailable: 100%}\n",
        "  operation: {upgrade: {targetVersion: v1.31.0}}\n",
        "  operation: {maintenance: {action: reboot}}\n  strategy: {type: addBeforeRemove}\n  drain: {gracePeriodSeconds: 0}\n",
    ] {
        let p = plan(&snap, &migration(body));
        let _ = render_text(&p);
        let _ = serde_json::to_string(&p).unwrap();
    }
}

#[test]
fn synthetic_cluster_goes_in_as_few_waves_as_the_cap_allows() {
    // 60 workers, 1,800 pods, a PDB for every workload; cap 20% = 12 nodes. PDBs drain in
    // rounds, and the last two waves are retried with their leftovers first, so the plan
    // needs no more waves than the cap does.
    let snap =
        theseus_plan::synthetic::synthetic_snapshot(&theseus_plan::synthetic::SyntheticSpec {
            nodes: 63,
            control_plane: 3,
            pods: 1_800,
            pdbs: 100_000,
            zones: 3,
            fill: 0.5,
            seed: 7,
        });
    let m = migration(
        "  operation: {maintenance: {action: reboot}}\n  nodes: {roles: [worker]}\n  strategy: {maxUnavailable: auto}\n",
    );
    let detail = plan_detailed(&snap, &m);
    let p = &detail.plan;
    let problems = check_plan(&snap, &detail);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(p.selection.max_wave_size, 12);
    assert_eq!(p.estimate.min_worker_waves, 5);
    assert_eq!(p.waves.len(), 5, "{:?}", wave_nodes(p));
    assert!(p.waves.iter().any(|w| w.drain_rounds > 1));
    assert!(
        p.waves
            .iter()
            .all(|w| w.drain_rounds <= p.selection.max_drain_rounds)
    );
}

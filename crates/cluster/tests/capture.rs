//! Capture of the runbook scenarios from an in-process simulator on a paused clock, and the
//! errors a user sees for bad kubeconfigs, missing permissions and unreachable servers.

mod util;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use theseus_cluster::{CaptureError, CaptureOptions, ClientError, ClientOptions, capture, connect};
use theseus_model::IntOrPercent;
use theseus_model::snapshot::{ClusterSnapshot, Pod, PrimarySource, WorkloadKind};
use util::{client, options, scenario, snapshot, start};

fn pods_of<'a>(s: &'a ClusterSnapshot, prefix: &str) -> Vec<&'a Pod> {
    s.pods
        .iter()
        .filter(|p| p.name.starts_with(prefix))
        .collect()
}

fn controller(p: &Pod) -> Option<(WorkloadKind, &str)> {
    p.controller
        .as_ref()
        .map(|c| (c.kind.clone(), c.name.as_str()))
}

#[tokio::test(start_paused = true)]
async fn dce_cluster_is_captured_with_owner_chains_control_plane_and_inventory() {
    let sim = start(&scenario("dce-000-centos-to-ubuntu.yaml")).await;
    let s = snapshot(&sim).await;

    assert_eq!(s.api_version, "theseus.io/v1alpha1");
    assert_eq!(s.kind, "ClusterSnapshot");
    assert_eq!(
        s.kubernetes_version
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("v1.33.4")
    );
    assert_eq!(s.metadata.cluster_name.as_deref(), Some("centos"));
    assert_eq!(s.metadata.source.as_deref(), Some("test"));

    // Nodes: 3 masters + 6 workers, CentOS, 110 pods each, zones, taints on the masters.
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    let m1 = s.node("centos-master1").unwrap();
    assert_eq!(m1.roles, ["control-plane"]);
    assert!(m1.has_address("10.6.212.11"));
    assert_eq!(m1.taints.len(), 1);
    let w1 = s.node("centos-worker1").unwrap();
    assert_eq!(w1.os_image, "CentOS Linux 7 (Core)");
    assert_eq!(w1.allocatable.pods, 110);
    assert_eq!(w1.allocatable.cpu_millis, 16_000);
    assert_eq!(w1.allocatable.memory_bytes, 64 << 30);
    assert_eq!(w1.zone.as_deref(), Some("zone-a"));
    assert!(w1.is_ready() && !w1.unschedulable && w1.taints.is_empty());
    assert_eq!(
        w1.kubelet_version
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("v1.33.4")
    );

    // Owner chains: Pod -> ReplicaSet -> Deployment; StatefulSet; DaemonSet.
    let storefront = pods_of(&s, "storefront-");
    assert_eq!(storefront.len(), 4);
    for p in &storefront {
        assert_eq!(
            controller(p),
            Some((WorkloadKind::Deployment, "storefront")),
            "{}",
            p.name
        );
        assert!(p.ready);
        assert_eq!(p.requests.cpu_millis, 500);
        let anti = &p.affinity.as_ref().unwrap().pod_anti_affinity;
        assert_eq!(anti[0].topology_key, "kubernetes.io/hostname");
    }
    // Required anti-affinity: one storefront pod per worker.
    let mut on: Vec<&str> = storefront
        .iter()
        .filter_map(|p| p.node_name.as_deref())
        .collect();
    on.sort();
    on.dedup();
    assert_eq!(on.len(), 4);
    for p in pods_of(&s, "redis-") {
        assert_eq!(controller(p), Some((WorkloadKind::StatefulSet, "redis")));
    }
    let exporters = pods_of(&s, "node-exporter-");
    assert_eq!(
        exporters.len(),
        9,
        "one per node, masters included (tolerates every taint)"
    );
    assert!(exporters.iter().all(|p| p.is_daemonset()));
    for p in pods_of(&s, "cache-warmer-") {
        assert_eq!(p.empty_dir, ["scratch"]);
    }
    // Workloads: the top controllers only (every ReplicaSet has a Deployment).
    let w = |kind: WorkloadKind, name: &str| {
        s.workloads
            .iter()
            .find(|w| w.kind == kind && w.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    assert_eq!(w(WorkloadKind::Deployment, "storefront").replicas, 4);
    assert_eq!(w(WorkloadKind::Deployment, "storefront").ready_replicas, 4);
    assert_eq!(w(WorkloadKind::StatefulSet, "redis").replicas, 3);
    assert_eq!(w(WorkloadKind::DaemonSet, "calico-node").replicas, 9);
    assert!(
        s.workloads
            .iter()
            .all(|w| w.kind != WorkloadKind::ReplicaSet)
    );

    // PDBs as the scenario declares them.
    let pdbs: BTreeMap<String, _> = s
        .pod_disruption_budgets
        .iter()
        .map(|p| (p.key(), p))
        .collect();
    assert_eq!(pdbs.len(), 4, "{:?}", pdbs.keys());
    assert_eq!(
        pdbs["shop/storefront"].min_available,
        Some(IntOrPercent::Int(3))
    );
    assert_eq!(
        pdbs["shop/checkout"].max_unavailable,
        Some(IntOrPercent::Int(1))
    );
    assert_eq!(
        pdbs["shop/storefront"].status.unwrap().disruptions_allowed,
        1
    );
    assert!(
        s.services
            .iter()
            .any(|svc| svc.name == "storefront" && svc.selector["app"] == "storefront")
    );
    assert!(s.namespaces.iter().any(|n| n.name == "shop"));

    // Control plane: role labels, static pods, kubeadm-config, cluster-info, Kubean inventory.
    let cp = &s.control_plane;
    assert_eq!(
        cp.nodes,
        ["centos-master1", "centos-master2", "centos-master3"]
    );
    assert_eq!(cp.primary.as_deref(), Some("centos-master1"));
    assert_eq!(cp.primary_source, Some(PrimarySource::Inventory));
    assert_eq!(cp.components.len(), 12, "{:?}", cp.components);
    let apiservers: Vec<_> = cp
        .components
        .iter()
        .filter(|c| c.component == "kube-apiserver")
        .collect();
    assert_eq!(apiservers.len(), 3);
    assert!(
        apiservers
            .iter()
            .all(|c| c.version.as_ref().is_some_and(|v| v.minor == 33))
    );
    let kubeadm = cp.kubeadm.as_ref().unwrap();
    assert_eq!(
        kubeadm.control_plane_endpoint.as_deref(),
        Some("10.6.212.11:6443")
    );
    assert_eq!(
        kubeadm.config_map.as_deref(),
        Some("kube-system/kubeadm-config")
    );
    assert_eq!(
        cp.cluster_info_server.as_deref(),
        Some("https://10.6.212.11:6443")
    );
    let inv = cp.inventory.as_ref().unwrap();
    assert_eq!(
        inv.config_map.as_deref(),
        Some("kubean-system/centos-hosts-conf")
    );
    assert_eq!(
        inv.kube_control_plane,
        ["centos-master1", "centos-master2", "centos-master3"]
    );
    assert_eq!(inv.hosts.len(), 9);
    // Mirror pods: not controlled by anything theseus can evict.
    let mirrors: Vec<&Pod> = s.pods.iter().filter(|p| p.mirror).collect();
    assert_eq!(mirrors.len(), 12);
    assert!(
        mirrors
            .iter()
            .all(|p| p.controller.is_none() && p.namespace == "kube-system")
    );

    // The snapshot survives its own JSON.
    let json = s.to_json().unwrap();
    assert_eq!(ClusterSnapshot::from_json(&json).unwrap(), s);
}

#[tokio::test(start_paused = true)]
async fn pagination_gives_the_same_snapshot_whatever_the_page_size() {
    let sim = start(&scenario("dce-000-centos-to-ubuntu.yaml")).await;
    let c = client(&sim);
    let one = capture(&c, &options(1)).await.unwrap();
    let big = capture(&c, &options(10_000)).await.unwrap();
    assert!(one.pods.len() > 40, "{}", one.pods.len());
    assert_eq!(one, big);
    // And a page size of 0 means the default.
    assert_eq!(capture(&c, &options(0)).await.unwrap(), big);
}

#[tokio::test(start_paused = true)]
async fn cka_lab_has_the_unmanaged_pod_hr_app() {
    let sim = start(&scenario("cka-002-lab.yaml")).await;
    let s = snapshot(&sim).await;
    let hr = s.pods.iter().find(|p| p.name == "hr-app").expect("hr-app");
    assert_eq!(hr.controller, None);
    assert!(!hr.mirror && !hr.is_daemonset());
    assert_eq!(hr.node_name.as_deref(), Some("node01"));
    let blue = pods_of(&s, "blue-");
    assert_eq!(blue.len(), 3);
    assert!(
        blue.iter()
            .all(|p| controller(p) == Some((WorkloadKind::Deployment, "blue")))
    );
    let proxies = pods_of(&s, "kube-proxy-");
    assert_eq!(proxies.len(), 2);
    assert!(
        proxies
            .iter()
            .all(|p| controller(p) == Some((WorkloadKind::DaemonSet, "kube-proxy")))
    );
    let cp = &s.control_plane;
    assert_eq!(cp.nodes, ["controlplane"]);
    assert_eq!(cp.primary.as_deref(), Some("controlplane"));
    assert_eq!(cp.primary_source, Some(PrimarySource::FirstByName));
    assert!(cp.kubeadm.is_none() && cp.inventory.is_none() && cp.cluster_info_server.is_none());
    assert!(s.pod_disruption_budgets.is_empty());
}

#[tokio::test(start_paused = true)]
async fn kubeadm_arm_cluster_reads_the_old_master_configuration() {
    let sim = start(&scenario("kubeadm-003-arm.yaml")).await;
    let s = snapshot(&sim).await;
    assert_eq!(
        s.kubernetes_version
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("v1.11.1")
    );
    let cp = &s.control_plane;
    assert_eq!(cp.nodes, ["c2-master0"]);
    assert_eq!(s.node("c2-master0").unwrap().roles, ["master"]);
    let kubeadm = cp.kubeadm.as_ref().unwrap();
    assert_eq!(
        kubeadm.control_plane_endpoint.as_deref(),
        Some("192.168.2.100:6443")
    );
    assert_eq!(
        kubeadm.kubernetes_version.as_ref().map(|v| v.minor),
        Some(11)
    );
    assert_eq!(cp.primary.as_deref(), Some("c2-master0"));
    assert_eq!(cp.primary_source, Some(PrimarySource::ControlPlaneEndpoint));
    for n in &s.nodes {
        assert_eq!(n.architecture, "arm64");
        assert_eq!(
            n.kubelet_version
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("v1.11.1")
        );
    }
    let web = pods_of(&s, "web-");
    assert_eq!(web.len(), 3);
    assert!(
        web.iter()
            .all(|p| controller(p) == Some((WorkloadKind::Deployment, "web")))
    );
    assert_eq!(
        s.pod_disruption_budgets[0].max_unavailable,
        Some(IntOrPercent::Int(1))
    );
}

#[tokio::test(start_paused = true)]
async fn domeos_cluster_has_its_manifests_and_no_kubeadm() {
    let sim = start(&scenario("domeos-001-master-etcd.yaml")).await;
    let s = snapshot(&sim).await;
    assert_eq!(s.nodes.len(), 4);
    assert_eq!(s.control_plane.nodes, ["domeos-master"]);
    assert!(s.control_plane.kubeadm.is_none());
    let skydns = pods_of(&s, "skydns-");
    assert_eq!(skydns.len(), 2);
    assert!(
        skydns
            .iter()
            .all(|p| controller(p) == Some((WorkloadKind::Deployment, "skydns")))
    );
    assert!(
        s.services
            .iter()
            .any(|svc| svc.name == "skydns-svc" && svc.selector.len() == 2)
    );
}

/// The simulator's router behind a layer that answers `status` with `body` to requests whose
/// path matches.
fn refusing(
    sim: &theseus_sim::sim::Simulation,
    path_part: &'static str,
    status: u16,
    message: &'static str,
) -> kube::Client {
    let router = sim.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            if req.uri().path().contains(path_part) {
                let code = StatusCode::from_u16(status).unwrap();
                let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": message,
                    "reason": if status == 403 { "Forbidden" } else { "Unauthorized" }, "code": status});
                return (code, [("content-type", "application/json")], body.to_string()).into_response();
            }
            next.run(req).await
        },
    ));
    kube::Client::new(router, "default")
}

#[tokio::test(start_paused = true)]
async fn missing_rbac_names_the_verb_and_resource() {
    let sim = start(&scenario("cka-002-lab.yaml")).await;
    let c = refusing(
        &sim,
        "/api/v1/pods",
        403,
        "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
    );
    let e = capture(&c, &CaptureOptions::default()).await.unwrap_err();
    assert!(
        matches!(&e, CaptureError::Forbidden { verb: "list", resource, namespace: None, .. } if resource == "pods"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("theseus needs `list` on `pods` in every namespace"),
        "{text}"
    );
    assert!(text.contains("User \"bob\" cannot list"), "{text}");
    assert!(
        text.contains("kubectl auth can-i list pods --all-namespaces"),
        "{text}"
    );

    let c = refusing(
        &sim,
        "/configmaps/kubeadm-config",
        403,
        "configmaps \"kubeadm-config\" is forbidden",
    );
    let text = capture(&c, &CaptureOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`get` on `configmaps` in namespace kube-system"),
        "{text}"
    );
    assert!(text.contains("-n kube-system"), "{text}");

    let c = refusing(&sim, "/", 401, "Unauthorized");
    let e = capture(&c, &CaptureOptions::default()).await.unwrap_err();
    assert!(matches!(e, CaptureError::Unauthorized { .. }), "{e:?}");
    assert!(
        e.to_string().contains("401 Unauthorized") && e.to_string().contains("renew"),
        "{e}"
    );
}

// Real sockets: not on the paused clock (its auto-advance would fire the connect timeout).
#[tokio::test]
async fn unreachable_server_says_so() {
    // A port nothing listens on (port 9 is discard; not served on CI machines).
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let c = kube::Client::try_from(config).unwrap();
    let e = capture(&c, &CaptureOptions::default()).await.unwrap_err();
    assert!(matches!(e, CaptureError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{e}"
    );
}

#[tokio::test]
async fn kubeconfig_and_context_errors_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let e = connect(&ClientOptions {
        kubeconfig: Some(missing.clone()),
        context: None,
        no_retry: false,
    })
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::Kubeconfig { .. }), "{e:?}");
    assert!(
        e.to_string().contains("nope.kubeconfig") && e.to_string().contains("no such file"),
        "{e}"
    );

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "clusters: [\n").unwrap();
    let e = connect(&ClientOptions {
        kubeconfig: Some(garbage),
        context: None,
        no_retry: false,
    })
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::Kubeconfig { .. }), "{e:?}");

    let kc = dir.path().join("two.kubeconfig");
    std::fs::write(&kc, "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster: {server: 'http://127.0.0.1:6443'}\n- name: b\n  cluster: {server: 'https://10.0.0.1:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: prod\n  context: {cluster: b, user: u}\n- name: lab\n  context: {cluster: a, user: u}\ncurrent-context: lab\n").unwrap();
    let e = connect(&ClientOptions {
        kubeconfig: Some(kc.clone()),
        context: Some("staging".into()),
        no_retry: false,
    })
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ClientError::UnknownContext { .. }), "{e:?}");
    assert!(
        text.contains("\"staging\"") && text.contains("prod, lab") && text.contains("--context"),
        "{text}"
    );

    let ok = connect(&ClientOptions {
        kubeconfig: Some(kc.clone()),
        context: None,
        no_retry: false,
    })
    .await
    .unwrap();
    assert_eq!(ok.context.as_deref(), Some("lab"));
    assert_eq!(ok.server, "http://127.0.0.1:6443/");
    let prod = connect(&ClientOptions {
        kubeconfig: Some(kc),
        context: Some("prod".into()),
        no_retry: false,
    })
    .await
    .unwrap();
    assert_eq!(prod.server, "https://10.0.0.1:6443/");
}

/// A Kubean management cluster holds the inventories of several clusters: the capture takes the
/// one whose hosts are this cluster's nodes, found through the `hostsConfRef` of a
/// `clusters.kubean.io` object even outside `kubean-system`; `--inventory` names one directly.
#[tokio::test(start_paused = true)]
async fn kubean_inventory_is_found_by_the_nodes_it_names() {
    let mut s = scenario("cka-002-lab.yaml");
    let yaml = r#"
- apiVersion: apiextensions.k8s.io/v1
  kind: CustomResourceDefinition
  metadata: {name: clusters.kubean.io}
  spec:
    group: kubean.io
    scope: Cluster
    names: {plural: clusters, kind: Cluster, singular: cluster}
    versions:
    - name: v1alpha1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
- apiVersion: kubean.io/v1alpha1
  kind: Cluster
  metadata: {name: lab}
  spec:
    hostsConfRef: {namespace: ops, name: lab-inventory}
    varsConfRef: {namespace: ops, name: lab-vars}
- {apiVersion: v1, kind: Namespace, metadata: {name: ops}}
- {apiVersion: v1, kind: Namespace, metadata: {name: kubean-system}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: lab-inventory, namespace: ops}
  data:
    hosts.yml: |
      all:
        hosts:
          controlplane: {ip: 192.168.121.10}
          node01: {ip: 192.168.121.11}
        children:
          kube_control_plane: {hosts: {controlplane: null}}
          kube_node: {hosts: {node01: null}}
          etcd: {hosts: {controlplane: null}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: prod-hosts-conf, namespace: kubean-system}
  data:
    hosts.yml: |
      all:
        hosts: {prod-master1: {ip: 10.0.0.1}, prod-worker1: {ip: 10.0.0.2}}
        children:
          kube_control_plane: {hosts: {prod-master1: null}}
          kube_node: {hosts: {prod-worker1: null}}
"#;
    let extra: Vec<serde_json::Value> = serde_yaml::from_str(yaml).unwrap();
    s.manifests.extend(extra);
    let sim = start(&s).await;
    let snap = snapshot(&sim).await;
    let cp = &snap.control_plane;
    let inv = cp.inventory.as_ref().expect("inventory found");
    assert_eq!(inv.config_map.as_deref(), Some("ops/lab-inventory"));
    assert_eq!(inv.kube_node, ["node01"]);
    assert_eq!(cp.primary_source, Some(PrimarySource::Inventory));
    assert_eq!(snap.metadata.cluster_name.as_deref(), Some("lab"));

    // Named explicitly: taken as is, even if it names other nodes.
    let c = client(&sim);
    let opts = CaptureOptions {
        inventory: Some("kubean-system/prod-hosts-conf".into()),
        ..options(500)
    };
    let named = capture(&c, &opts).await.unwrap();
    let inv = named.control_plane.inventory.unwrap();
    assert_eq!(inv.kube_control_plane, ["prod-master1"]);
    // Its first control-plane host is not a node here: no primary is recorded.
    assert_eq!(named.control_plane.primary, None);
    let opts = CaptureOptions {
        inventory: Some("kubean-system/missing".into()),
        ..options(500)
    };
    let e = capture(&c, &opts).await.unwrap_err().to_string();
    assert!(
        e.contains("ConfigMap kubean-system/missing: not found"),
        "{e}"
    );
}

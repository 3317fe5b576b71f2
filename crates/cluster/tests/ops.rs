//! `Ops` against the simulator in-process (the DCE runbook scenario: three control-plane nodes,
//! six workers, budgeted Deployments, a StatefulSet, DaemonSets, one single-replica service) on
//! a paused clock, and `select_for_drain` on tables of pods. What `Ops` did is checked by
//! reading the objects back with plain kube-rs, not through `Ops` itself.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use theseus_cluster::{
    CORDONED_BY, DrainOptions, Eviction, LeaseOutcome, Ops, OpsError, OwnerRef, PodState,
    SURGE_ANNOTATION, select_for_drain,
};
use theseus_sim::sim::Simulation;
use util::{client, scenario, start};

const DCE: &str = "dce-000-centos-to-ubuntu.yaml";

async fn dce() -> (Simulation, Ops) {
    let sim = start(&scenario(DCE)).await;
    let ops = Ops::new(client(&sim));
    (sim, ops)
}

/// Polls `check` every second of virtual time until it returns Some, or panics after `secs`.
async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..secs {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{what}: not after {secs} s");
}

fn annotations(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

/// The live (not terminating) pods with label app=`app`.
async fn live_pods(c: &kube::Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn cordon_sets_unschedulable_and_the_annotation_and_uncordon_clears_both() {
    let (sim, ops) = dce().await;
    let nodes: Api<Node> = Api::all(client(&sim));
    let read = || async {
        let n = nodes.get("centos-worker3").await.unwrap();
        let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        (
            unschedulable,
            annotations(&n.metadata).get(CORDONED_BY).cloned(),
        )
    };
    assert_eq!(read().await, (false, None));

    ops.cordon("centos-worker3", "run-1").await.unwrap();
    assert_eq!(read().await, (true, Some("run-1".to_string())));
    // Idempotent, and what Ops reports agrees with the object.
    ops.cordon("centos-worker3", "run-1").await.unwrap();
    let state = ops.node("centos-worker3").await.unwrap().unwrap();
    assert!(state.unschedulable);
    assert_eq!(state.cordoned_by.as_deref(), Some("run-1"));
    // Other nodes are untouched.
    assert!(
        !ops.node("centos-worker4")
            .await
            .unwrap()
            .unwrap()
            .unschedulable
    );

    ops.uncordon("centos-worker3").await.unwrap();
    assert_eq!(read().await, (false, None));
    ops.uncordon("centos-worker3").await.unwrap();
    assert_eq!(read().await, (false, None));

    // A missing node: uncordon is a no-op, cordon names the node.
    ops.uncordon("no-such-node").await.unwrap();
    let e = ops.cordon("no-such-node", "run-1").await.unwrap_err();
    assert!(matches!(e, OpsError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("patch Node no-such-node"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn nodes_report_roles_zones_versions_and_readiness() {
    let (_sim, ops) = dce().await;
    let nodes = ops.nodes().await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes.len(), 9, "{names:?}");
    for n in &nodes {
        assert_eq!(n.ready, Some(true), "{n:?}");
        assert_eq!(n.os_image, "CentOS Linux 7 (Core)", "{n:?}");
        assert_eq!(n.kernel_version, "3.10.0-1160.el7.x86_64", "{n:?}");
        assert!(n.kubelet_version.starts_with("v1.33"), "{n:?}");
        assert!(!n.boot_id.is_empty() && !n.uid.is_empty(), "{n:?}");
        assert!(n.creation_timestamp.is_some(), "{n:?}");
        assert!(n.zone.is_some(), "{n:?}");
        assert!(!n.unschedulable && n.cordoned_by.is_none(), "{n:?}");
        let master = n.name.starts_with("centos-master");
        assert_eq!(
            n.roles.contains(&"control-plane".to_string()),
            master,
            "{n:?}"
        );
    }
    let w1 = ops.node("centos-worker1").await.unwrap().unwrap();
    assert_eq!(w1.internal_ip.as_deref(), Some("10.6.212.21"));
    assert_eq!(
        w1.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("centos-worker1")
    );
    assert_eq!(ops.node("no-such-node").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn pods_on_node_lists_exactly_the_pods_the_simulator_bound_there() {
    let (sim, ops) = dce().await;
    let all: Api<Pod> = Api::all(client(&sim));
    let pods = all.list(&ListParams::default()).await.unwrap().items;
    let mut expected: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for p in &pods {
        expected.entry(node_of(p)).or_default().insert((
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
        ));
    }
    let mut seen = 0;
    for n in ops.nodes().await.unwrap() {
        let on = ops.pods_on_node(&n.name).await.unwrap();
        let got: BTreeSet<(String, String)> = on
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        assert_eq!(got.len(), on.len(), "no duplicates on {}", n.name);
        assert_eq!(Some(&got), expected.get(&n.name), "pods on {}", n.name);
        assert!(
            on.iter()
                .all(|p| p.node.as_deref() == Some(n.name.as_str()))
        );
        // Every node runs both DaemonSets' pods.
        let daemons = on
            .iter()
            .filter(|p| p.controller.as_ref().is_some_and(|c| c.kind == "DaemonSet"))
            .count();
        assert_eq!(daemons, 2, "{}: {on:#?}", n.name);
        // Control-plane nodes run their static pods, seen as mirror pods.
        assert_eq!(
            on.iter().any(|p| p.mirror),
            n.name.starts_with("centos-master"),
            "{}",
            n.name
        );
        seen += on.len();
    }
    assert_eq!(seen, pods.len(), "every pod is bound to one node");
    assert_eq!(ops.pods_on_node("no-such-node").await.unwrap(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn select_for_drain_on_live_nodes_reads_mirror_daemonset_and_emptydir_pods() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    let ignore_ds = DrainOptions {
        ignore_daemon_sets: true,
        ..DrainOptions::default()
    };
    // A control-plane node: only mirror and DaemonSet pods, all skipped, nothing to evict.
    let master = ops.pods_on_node("centos-master1").await.unwrap();
    let s = select_for_drain(&master, &ignore_ds);
    assert!(s.evict.is_empty() && s.refused.is_empty(), "{s:#?}");
    assert_eq!(s.skipped.len(), master.len());
    assert!(
        s.skipped
            .iter()
            .any(|(p, why)| p.mirror && why.contains("mirror"))
    );
    // Without --ignore-daemonsets kubectl refuses.
    let s = select_for_drain(&master, &DrainOptions::default());
    assert_eq!(s.refused.len(), 2, "{s:#?}");
    assert!(
        s.refused
            .iter()
            .all(|(_, why)| why.contains("--ignore-daemonsets"))
    );

    // The node of a cache-warmer pod (emptyDir): refused without --delete-emptydir-data.
    let warmer = &live_pods(&c, "shop", "cache-warmer").await[0];
    let node = node_of(warmer);
    let on = ops.pods_on_node(&node).await.unwrap();
    let s = select_for_drain(&on, &ignore_ds);
    let refused: Vec<&str> = s.refused.iter().map(|(p, _)| p.name.as_str()).collect();
    assert!(
        refused.contains(&warmer.metadata.name.as_deref().unwrap_or_default()),
        "{s:#?}"
    );
    assert!(
        s.refused
            .iter()
            .all(|(p, why)| p.empty_dir && why.contains("--delete-emptydir-data"))
    );
    let s = select_for_drain(
        &on,
        &DrainOptions {
            delete_empty_dir_data: true,
            ..ignore_ds.clone()
        },
    );
    assert!(s.refused.is_empty(), "{s:#?}");
    assert_eq!(s.evict.len() + s.skipped.len(), on.len());
    assert!(s.evict.iter().all(|p| {
        p.controller
            .as_ref()
            .is_some_and(|c| c.kind == "ReplicaSet" || c.kind == "StatefulSet")
    }));
}

#[tokio::test(start_paused = true)]
async fn an_eviction_a_budget_refuses_is_blocked_and_names_the_budget() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "shop");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), "shop");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pinned", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pinned"}},
            "template": {"metadata": {"labels": {"app": "pinned"}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let b: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "pinned", "namespace": "shop"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "pinned"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &b).await.unwrap();
    let budget = until("pinned's budget counts its pods", 120, || async {
        ops.pdbs()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "pinned" && p.current_healthy == 2)
    })
    .await;
    assert_eq!(budget.disruptions_allowed, 0, "{budget:?}");
    assert_eq!(budget.desired_healthy, 2);
    assert_eq!(budget.expected_pods, 2);
    assert_eq!(
        budget.selector_labels.get("app").map(String::as_str),
        Some("pinned")
    );

    let pod = &live_pods(&c, "shop", "pinned").await[0];
    let name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    match ops.evict("shop", &name, None).await.unwrap() {
        Eviction::Blocked { pdbs, message } => {
            assert_eq!(pdbs, vec!["pinned".to_string()]);
            assert!(message.contains("disruption budget"), "{message}");
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    // The refusal itself names the budget (its DisruptionBudget cause): no list needed.
    match ops.try_evict("shop", &name, None).await.unwrap() {
        Eviction::Blocked { pdbs, .. } => assert_eq!(pdbs, vec!["pinned".to_string()]),
        other => panic!("expected Blocked, got {other:?}"),
    }
    // Nothing happened to the pod.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(ops.pod_exists("shop", &name, &uid).await.unwrap());
    let again = ops.pods_on_node(&node_of(pod)).await.unwrap();
    assert!(again.iter().any(|p| p.uid == uid && !p.deleting));
}

#[tokio::test(start_paused = true)]
async fn an_allowed_eviction_removes_the_pod_and_spends_the_budget() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    // checkout: 3 replicas, maxUnavailable 1.
    let pods = live_pods(&c, "shop", "checkout").await;
    assert_eq!(pods.len(), 3);
    let (first, second) = (&pods[0], &pods[1]);
    let name = first.metadata.name.clone().unwrap();
    let uid = first.metadata.uid.clone().unwrap();
    assert_eq!(
        ops.evict("shop", &name, Some(7)).await.unwrap(),
        Eviction::Evicted
    );
    // Terminating for its grace period, which the eviction's deleteOptions set.
    let api: Api<Pod> = Api::namespaced(c.clone(), "shop");
    let now = api.get(&name).await.unwrap();
    assert_eq!(now.metadata.deletion_grace_period_seconds, Some(7));
    assert!(ops.pod_exists("shop", &name, &uid).await.unwrap());
    let state = ops
        .pods_on_node(&node_of(first))
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.uid == uid)
        .unwrap();
    assert!(state.deleting, "{state:?}");
    // The budget is spent: the next checkout pod is refused, naming the budget.
    let second_name = second.metadata.name.clone().unwrap();
    match ops.evict("shop", &second_name, None).await.unwrap() {
        Eviction::Blocked { pdbs, .. } => assert_eq!(pdbs, vec!["checkout".to_string()]),
        other => panic!("expected Blocked, got {other:?}"),
    }
    // Gone after the grace period.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!ops.pod_exists("shop", &name, &uid).await.unwrap());
    // A missing pod.
    assert_eq!(
        ops.evict("shop", "no-such-pod", None).await.unwrap(),
        Eviction::Gone
    );
    assert!(!ops.delete_pod("shop", "no-such-pod", None).await.unwrap());
    // An unbudgeted pod with grace 0 is gone at once; a wrong uid does not count as the pod.
    let warmer = &live_pods(&c, "shop", "cache-warmer").await[0];
    let w = warmer.metadata.name.clone().unwrap();
    let wuid = warmer.metadata.uid.clone().unwrap();
    assert!(!ops.pod_exists("shop", &w, "another-uid").await.unwrap());
    assert_eq!(
        ops.evict("shop", &w, Some(0)).await.unwrap(),
        Eviction::Evicted
    );
    assert!(!ops.pod_exists("shop", &w, &wuid).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn delete_pod_deletes_gracefully() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    let pod = &live_pods(&c, "shop", "storefront").await[0];
    let name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    assert!(ops.delete_pod("shop", &name, Some(5)).await.unwrap());
    let api: Api<Pod> = Api::namespaced(c.clone(), "shop");
    let now = api.get(&name).await.unwrap();
    assert_eq!(now.metadata.deletion_grace_period_seconds, Some(5));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!ops.pod_exists("shop", &name, &uid).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn workload_reports_replicas_of_each_controller_kind() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    let w = ops
        .workload("Deployment", "shop", "storefront")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (w.desired, w.ready, w.available, w.updated, w.observed),
        (4, 4, 4, 4, true),
        "{w:?}"
    );
    let w = ops
        .workload("StatefulSet", "shop", "redis")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.desired, w.ready, w.observed), (3, 3, true), "{w:?}");
    let w = ops
        .workload("DaemonSet", "monitoring", "node-exporter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.desired, w.ready, w.available), (9, 9, 9), "{w:?}");
    // The ReplicaSet of a storefront pod, and its Deployment.
    let pod = &live_pods(&c, "shop", "storefront").await[0];
    let Some(OwnerRef { kind, name: rs }) = ops
        .pods_on_node(&node_of(pod))
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.uid == pod.metadata.uid.clone().unwrap())
        .and_then(|p| p.controller)
    else {
        panic!("storefront pod without a controller");
    };
    assert_eq!(kind, "ReplicaSet");
    let w = ops
        .workload("ReplicaSet", "shop", &rs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.desired, w.ready, w.updated), (4, 4, 4), "{w:?}");
    assert_eq!(
        ops.deployment_of_replicaset("shop", &rs)
            .await
            .unwrap()
            .as_deref(),
        Some("storefront")
    );
    assert_eq!(
        ops.deployment_of_replicaset("shop", "nope").await.unwrap(),
        None
    );
    assert_eq!(
        ops.workload("Deployment", "shop", "nope").await.unwrap(),
        None
    );
    let e = ops
        .workload("CronJob", "shop", "nightly")
        .await
        .unwrap_err();
    assert!(
        matches!(e, OpsError::Invalid { .. }) && e.to_string().contains("CronJob"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_surge_adds_a_replica_elsewhere_and_its_end_removes_the_old_pod() {
    let (sim, ops) = dce().await;
    let c = client(&sim);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "shop");
    let old = live_pods(&c, "shop", "report-generator").await;
    assert_eq!(old.len(), 1);
    let old = &old[0];
    let old_name = old.metadata.name.clone().unwrap();
    let old_uid = old.metadata.uid.clone().unwrap();
    let old_node = node_of(old);
    assert!(ops.surged_deployments().await.unwrap().is_empty());

    ops.cordon(&old_node, "run-1").await.unwrap();
    let original = ops
        .surge_start("shop", "report-generator", "run-1", &old_node)
        .await
        .unwrap();
    assert_eq!(original, 1);
    let d = deployments.get("report-generator").await.unwrap();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let record: serde_json::Value =
        serde_json::from_str(&annotations(&d.metadata)[SURGE_ANNOTATION]).unwrap();
    assert_eq!(
        record,
        serde_json::json!({"run": "run-1", "node": old_node, "originalReplicas": 1})
    );
    // Idempotent: a second start (a resumed run) neither surges again nor forgets the original.
    assert_eq!(
        ops.surge_start("shop", "report-generator", "run-2", "elsewhere")
            .await
            .unwrap(),
        1
    );
    let d = deployments.get("report-generator").await.unwrap();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        ops.surged_deployments().await.unwrap(),
        vec![("shop".to_string(), "report-generator".to_string(), record)]
    );
    let w = ops
        .workload("Deployment", "shop", "report-generator")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.desired, w.ready), (2, 1), "{w:?}");

    // The new pod starts on another node and becomes Ready.
    until("the surge pod is Ready", 300, || async {
        let w = ops
            .workload("Deployment", "shop", "report-generator")
            .await
            .unwrap()?;
        (w.ready == 2).then_some(())
    })
    .await;
    let both = live_pods(&c, "shop", "report-generator").await;
    let new = both
        .iter()
        .find(|p| p.metadata.uid.as_deref() != Some(old_uid.as_str()))
        .unwrap();
    let new_uid = new.metadata.uid.clone().unwrap();
    assert_ne!(node_of(new), old_node);

    ops.surge_end("shop", "report-generator", Some(&old_name))
        .await
        .unwrap();
    let d = deployments.get("report-generator").await.unwrap();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert!(!annotations(&d.metadata).contains_key(SURGE_ANNOTATION));
    assert!(ops.surged_deployments().await.unwrap().is_empty());
    // The ReplicaSet deletes the old pod (lowest deletion cost), not the newer one it would
    // otherwise pick.
    until("the old pod is gone", 120, || async {
        (!ops.pod_exists("shop", &old_name, &old_uid).await.unwrap()).then_some(())
    })
    .await;
    let left = live_pods(&c, "shop", "report-generator").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].metadata.uid.as_deref(), Some(new_uid.as_str()));
    // Idempotent once the annotation is gone, and with the old pod gone.
    ops.surge_end("shop", "report-generator", Some(&old_name))
        .await
        .unwrap();
    let d = deployments.get("report-generator").await.unwrap();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(1));
    ops.uncordon(&old_node).await.unwrap();
    // A surge of a missing Deployment names it.
    let e = ops
        .surge_start("shop", "nope", "run-1", "n")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Deployment shop/nope"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn pending_pods_are_the_unscheduled_ones_with_the_schedulers_reason() {
    let (sim, ops) = dce().await;
    assert_eq!(ops.pending_pods().await.unwrap(), vec![]);
    let pods: Api<Pod> = Api::namespaced(client(&sim), "shop");
    let p: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nowhere", "namespace": "shop"},
        "spec": {"nodeSelector": {"disk": "nvme"}, "containers": [{"name": "main", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let pending = until("the scheduler gives up on the pod", 120, || async {
        let pending = ops.pending_pods().await.unwrap();
        pending
            .first()
            .is_some_and(|p| p.pending_reason.is_some())
            .then_some(pending)
    })
    .await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let p = &pending[0];
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "nowhere"));
    assert_eq!(p.phase, "Pending");
    assert_eq!(p.node, None);
    assert!(p.pending_since.is_some());
    let reason = p.pending_reason.clone().unwrap();
    assert!(reason.contains("0/9 nodes are available"), "{reason}");
    // No controller: kubectl drain would refuse it without --force.
    assert_eq!(p.controller, None);
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test(start_paused = true)]
async fn the_lease_lock_is_exclusive_until_it_expires() {
    let (_sim, ops) = dce().await;
    let (ns, name) = ("kube-system", "theseus-lock");
    let start = tokio::time::Instant::now();
    let now = || t0() + chrono::Duration::from_std(start.elapsed()).unwrap();
    assert_eq!(ops.lease(ns, name).await.unwrap(), None);

    assert_eq!(
        ops.acquire_lease(ns, name, "run-a", 15, now())
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    let l = ops.lease(ns, name).await.unwrap().unwrap();
    assert_eq!(l.holder.as_deref(), Some("run-a"));
    assert_eq!(l.duration_seconds, Some(15));
    assert_eq!(l.renew_time.as_deref(), Some("2025-01-01T00:00:00.000000Z"));

    tokio::time::sleep(Duration::from_secs(5)).await;
    match ops
        .acquire_lease(ns, name, "run-b", 15, now())
        .await
        .unwrap()
    {
        LeaseOutcome::HeldBy {
            holder,
            renewed_at,
            expires_in_seconds,
        } => {
            assert_eq!(holder, "run-a");
            assert_eq!(renewed_at.as_deref(), Some("2025-01-01T00:00:00.000000Z"));
            assert_eq!(expires_in_seconds, 10);
        }
        other => panic!("run-b must be refused: {other:?}"),
    }
    // The holder renews; a non-holder cannot.
    ops.renew_lease(ns, name, "run-a", now()).await.unwrap();
    let l = ops.lease(ns, name).await.unwrap().unwrap();
    assert_eq!(l.renew_time.as_deref(), Some("2025-01-01T00:00:05.000000Z"));
    let e = ops.renew_lease(ns, name, "run-b", now()).await.unwrap_err();
    assert!(
        matches!(&e, OpsError::LeaseLost { holder: Some(h), .. } if h == "run-a"),
        "{e:?}"
    );
    // Releasing someone else's lease does nothing.
    ops.release_lease(ns, name, "run-b").await.unwrap();
    assert!(ops.lease(ns, name).await.unwrap().is_some());
    // Annotations for the operator, by the holder only.
    let notes = BTreeMap::from([("theseus.io/run".to_string(), "run-a".to_string())]);
    ops.annotate_lease(ns, name, "run-a", &notes).await.unwrap();
    assert_eq!(
        ops.lease(ns, name).await.unwrap().unwrap().annotations,
        notes
    );
    assert!(matches!(
        ops.annotate_lease(ns, name, "run-b", &notes).await,
        Err(OpsError::LeaseLost { .. })
    ));

    // run-a stops renewing: 15 s after its last renewal run-b takes over.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(matches!(
        ops.acquire_lease(ns, name, "run-b", 15, now())
            .await
            .unwrap(),
        LeaseOutcome::HeldBy {
            expires_in_seconds: 1,
            ..
        }
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ops.acquire_lease(ns, name, "run-b", 15, now())
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        ops.lease(ns, name)
            .await
            .unwrap()
            .unwrap()
            .holder
            .as_deref(),
        Some("run-b")
    );
    let e = ops.renew_lease(ns, name, "run-a", now()).await.unwrap_err();
    assert!(
        matches!(&e, OpsError::LeaseLost { holder: Some(h), .. } if h == "run-b"),
        "{e:?}"
    );
    assert!(e.to_string().contains("kube-system/theseus-lock"), "{e}");
    // run-a's release leaves run-b's lease; run-b's removes it.
    ops.release_lease(ns, name, "run-a").await.unwrap();
    assert!(ops.lease(ns, name).await.unwrap().is_some());
    ops.release_lease(ns, name, "run-b").await.unwrap();
    assert_eq!(ops.lease(ns, name).await.unwrap(), None);
    ops.release_lease(ns, name, "run-b").await.unwrap();
    let e = ops.renew_lease(ns, name, "run-b", now()).await.unwrap_err();
    assert!(
        matches!(e, OpsError::LeaseLost { holder: None, .. }),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_runs_racing_for_the_lease_get_one_winner() {
    let (_sim, ops) = dce().await;
    for round in 0..3 {
        let name = format!("race-{round}");
        let (a, b) = tokio::join!(
            ops.acquire_lease("kube-system", &name, "run-a", 30, t0()),
            ops.acquire_lease("kube-system", &name, "run-b", 30, t0()),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let winner = ops
            .lease("kube-system", &name)
            .await
            .unwrap()
            .unwrap()
            .holder
            .unwrap();
        let (won, lost) = if winner == "run-a" { (a, b) } else { (b, a) };
        assert_eq!(won, LeaseOutcome::Acquired, "round {round}");
        assert!(
            matches!(&lost, LeaseOutcome::HeldBy { holder, .. } if *holder == winner),
            "round {round}: {lost:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    let mut config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    config.default_retry = false;
    let ops = Ops::new(kube::Client::try_from(config).unwrap());
    let e = ops.nodes().await.unwrap_err();
    assert!(matches!(e, OpsError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("list Nodes"), "{e}");
}

// ---- select_for_drain: kubectl drain's filter

fn pod(name: &str) -> PodState {
    PodState {
        namespace: "ns".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: Some("n1".into()),
        phase: "Running".into(),
        ready: true,
        deleting: false,
        mirror: false,
        controller: Some(OwnerRef {
            kind: "ReplicaSet".into(),
            name: "web-5d4f".into(),
        }),
        empty_dir: false,
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        termination_grace_seconds: Some(30),
        pending_since: None,
        pending_reason: None,
    }
}

fn owned_by(kind: &str, mut p: PodState) -> PodState {
    p.controller = Some(OwnerRef {
        kind: kind.into(),
        name: "owner".into(),
    });
    p
}

fn bare(mut p: PodState) -> PodState {
    p.controller = None;
    p
}

fn with_empty_dir(mut p: PodState) -> PodState {
    p.empty_dir = true;
    p
}

fn in_phase(phase: &str, mut p: PodState) -> PodState {
    p.phase = phase.into();
    p
}

/// What select_for_drain did with a pod, with the reason for skipped and refused ones.
fn bucket(pod: &PodState, opts: &DrainOptions) -> (&'static str, String) {
    let s = select_for_drain(std::slice::from_ref(pod), opts);
    let total = s.evict.len() + s.delete_terminal.len() + s.skipped.len() + s.refused.len();
    assert!(total <= 1, "{pod:?} in several buckets: {s:#?}");
    if !s.evict.is_empty() {
        ("evict", String::new())
    } else if !s.delete_terminal.is_empty() {
        ("delete", String::new())
    } else if let Some((_, why)) = s.skipped.first() {
        ("skip", why.clone())
    } else if let Some((_, why)) = s.refused.first() {
        ("refuse", why.clone())
    } else {
        ("absent", String::new())
    }
}

#[test]
fn select_for_drain_follows_kubectl_drain() {
    let none = DrainOptions::default();
    let ds = DrainOptions {
        ignore_daemon_sets: true,
        ..none.clone()
    };
    let emptydir = DrainOptions {
        delete_empty_dir_data: true,
        ..none.clone()
    };
    let force = DrainOptions {
        force: true,
        ..none.clone()
    };
    let all = DrainOptions {
        ignore_daemon_sets: true,
        delete_empty_dir_data: true,
        force: true,
        pod_selector: None,
    };
    let selector = DrainOptions {
        pod_selector: Some(BTreeMap::from([("app".to_string(), "db".to_string())])),
        ..all.clone()
    };
    let mut deleting = pod("going");
    deleting.deleting = true;
    let mut mirror = owned_by("Node", pod("etcd-n1"));
    mirror.mirror = true;
    let mut db = pod("db");
    db.labels = BTreeMap::from([("app".to_string(), "db".to_string())]);

    const DS: &str = "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets)";
    const LOCAL: &str = "cannot delete Pods with local storage (use --delete-emptydir-data)";
    const BARE: &str = "cannot delete Pods that declare no controller (use --force)";
    let table: Vec<(&str, PodState, &DrainOptions, &str, &str)> = vec![
        ("replicated pod", pod("web"), &none, "evict", ""),
        (
            "StatefulSet pod",
            owned_by("StatefulSet", pod("db-0")),
            &none,
            "evict",
            "",
        ),
        ("Job pod", owned_by("Job", pod("batch")), &none, "evict", ""),
        (
            "DaemonSet pod",
            owned_by("DaemonSet", pod("agent")),
            &none,
            "refuse",
            DS,
        ),
        (
            "DaemonSet pod, --ignore-daemonsets",
            owned_by("DaemonSet", pod("agent")),
            &ds,
            "skip",
            "DaemonSet",
        ),
        (
            "DaemonSet pod, --force only",
            owned_by("DaemonSet", pod("agent")),
            &force,
            "refuse",
            DS,
        ),
        (
            "finished DaemonSet pod",
            in_phase("Succeeded", owned_by("DaemonSet", pod("agent"))),
            &none,
            "delete",
            "",
        ),
        ("mirror pod", mirror.clone(), &none, "skip", "mirror"),
        ("mirror pod, every flag", mirror, &all, "skip", "mirror"),
        ("bare pod", bare(pod("tool")), &none, "refuse", BARE),
        ("bare pod, --force", bare(pod("tool")), &force, "evict", ""),
        (
            "emptyDir pod",
            with_empty_dir(pod("cache")),
            &none,
            "refuse",
            LOCAL,
        ),
        (
            "emptyDir pod, --delete-emptydir-data",
            with_empty_dir(pod("cache")),
            &emptydir,
            "evict",
            "",
        ),
        (
            "bare emptyDir pod: local storage is checked first",
            with_empty_dir(bare(pod("x"))),
            &none,
            "refuse",
            LOCAL,
        ),
        (
            "bare emptyDir pod, --delete-emptydir-data",
            with_empty_dir(bare(pod("x"))),
            &emptydir,
            "refuse",
            BARE,
        ),
        (
            "bare emptyDir pod, both flags",
            with_empty_dir(bare(pod("x"))),
            &all,
            "evict",
            "",
        ),
        (
            "Succeeded bare pod",
            in_phase("Succeeded", bare(pod("done"))),
            &none,
            "delete",
            "",
        ),
        (
            "Failed bare pod",
            in_phase("Failed", bare(pod("crashed"))),
            &none,
            "delete",
            "",
        ),
        (
            "Failed emptyDir pod",
            in_phase("Failed", with_empty_dir(pod("crashed"))),
            &none,
            "delete",
            "",
        ),
        (
            "pending replicated pod",
            in_phase("Pending", pod("starting")),
            &none,
            "evict",
            "",
        ),
        (
            "terminating pod",
            deleting.clone(),
            &none,
            "skip",
            "terminating",
        ),
        (
            "terminating DaemonSet pod",
            owned_by("DaemonSet", deleting),
            &none,
            "skip",
            "terminating",
        ),
        ("not selected", pod("web"), &selector, "absent", ""),
        ("selected", db, &selector, "evict", ""),
    ];
    for (case, p, opts, want, why) in &table {
        let (got, reason) = bucket(p, opts);
        assert_eq!(&got, want, "{case}");
        assert!(reason.contains(why), "{case}: {reason:?} lacks {why:?}");
        if *want == "refuse" {
            assert_eq!(&reason, why, "{case}: kubectl's message");
        }
    }

    // A whole node at once keeps every pod in exactly one list, in order.
    let node: Vec<PodState> = table
        .iter()
        .filter(|(_, _, opts, _, _)| std::ptr::eq(*opts, &none))
        .map(|(_, p, ..)| p.clone())
        .collect();
    let s = select_for_drain(&node, &none);
    assert_eq!(
        s.evict.len() + s.delete_terminal.len() + s.skipped.len() + s.refused.len(),
        node.len()
    );
    let names = |v: &[PodState]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&s.evict), ["web", "db-0", "batch", "starting"]);
    assert_eq!(
        names(&s.delete_terminal),
        ["agent", "done", "crashed", "crashed"]
    );
}

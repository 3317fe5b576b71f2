//! kube-rs conformance suite: an unmodified kube-rs client, in-process over the simulator's router
//! on a paused tokio clock, sees the Kubernetes API semantics it relies on.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, DynamicObject, EvictParams, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::{Value, json};
use theseus_sim::{ApiServer, ServerConfig};

async fn server_with(config: ServerConfig) -> (Arc<ApiServer>, Client) {
    let server = ApiServer::new(config).await;
    let client = Client::new(server.router(), "default");
    (server, client)
}

async fn server() -> (Arc<ApiServer>, Client) {
    server_with(ServerConfig::default()).await
}

fn code(e: &Error) -> u16 {
    match e {
        Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::Api(s) => s.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid test object")
}

fn pod(name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "nginx:1.27"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    from(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec}))
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    from(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}))
}

/// Sets a pod Running and Ready (or not) through the status subresource, as a kubelet would.
async fn set_running(pods: &Api<Pod>, name: &str, ready: bool) {
    let r = if ready { "True" } else { "False" };
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": r}, {"type": "ContainersReady", "status": r}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// A PDB with its status set as the disruption controller would.
async fn pdb(
    client: &Client,
    name: &str,
    selector: Value,
    allowed: i64,
    healthy: i64,
    desired: i64,
) {
    let api: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    api.create(
        &PostParams::default(),
        &from(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name}, "spec": {"minAvailable": desired, "selector": {"matchLabels": selector}}})),
    )
    .await
    .unwrap();
    let status = json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
        "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": healthy}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn dynamic(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

#[tokio::test(start_paused = true)]
async fn crud_on_every_builtin_resource() {
    let (_s, client) = server().await;
    let pod_spec = json!({"containers": [{"name": "c", "image": "nginx:1.27"}]});
    let tmpl = json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec});
    let sel = json!({"matchLabels": {"app": "x"}});
    let cases: Vec<(ApiResource, bool, Value)> = vec![
        (
            dynamic("", "v1", "Namespace", "namespaces"),
            false,
            json!({}),
        ),
        (
            dynamic("", "v1", "Node", "nodes"),
            false,
            json!({"spec": {}}),
        ),
        (
            dynamic("", "v1", "Pod", "pods"),
            true,
            json!({"spec": pod_spec}),
        ),
        (
            dynamic("", "v1", "Service", "services"),
            true,
            json!({"spec": {"ports": [{"port": 80}]}}),
        ),
        (
            dynamic("", "v1", "Endpoints", "endpoints"),
            true,
            json!({"subsets": []}),
        ),
        (
            dynamic("", "v1", "ConfigMap", "configmaps"),
            true,
            json!({"data": {"a": "b"}}),
        ),
        (
            dynamic("", "v1", "Secret", "secrets"),
            true,
            json!({"type": "Opaque"}),
        ),
        (
            dynamic("", "v1", "Event", "events"),
            true,
            json!({"reason": "Test", "involvedObject": {"kind": "Pod", "name": "p"}}),
        ),
        (
            dynamic("", "v1", "ServiceAccount", "serviceaccounts"),
            true,
            json!({}),
        ),
        (
            dynamic("apps", "v1", "Deployment", "deployments"),
            true,
            json!({"spec": {"replicas": 1, "selector": sel, "template": tmpl}}),
        ),
        (
            dynamic("apps", "v1", "ReplicaSet", "replicasets"),
            true,
            json!({"spec": {"replicas": 1, "selector": sel, "template": tmpl}}),
        ),
        (
            dynamic("apps", "v1", "StatefulSet", "statefulsets"),
            true,
            json!({"spec": {"replicas": 1, "serviceName": "x", "selector": sel, "template": tmpl}}),
        ),
        (
            dynamic("apps", "v1", "DaemonSet", "daemonsets"),
            true,
            json!({"spec": {"selector": sel, "template": tmpl}}),
        ),
        (
            dynamic("batch", "v1", "Job", "jobs"),
            true,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}}),
        ),
        (
            dynamic(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            true,
            json!({"spec": {"minAvailable": 1, "selector": sel}}),
        ),
        (
            dynamic("coordination.k8s.io", "v1", "Lease", "leases"),
            true,
            json!({"spec": {"holderIdentity": "a"}}),
        ),
    ];
    for (ar, namespaced, body) in cases {
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "default", &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let mut obj = body.clone();
        obj["apiVersion"] = json!(ar.api_version);
        obj["kind"] = json!(ar.kind);
        obj["metadata"] = json!({"name": "crud-1", "labels": {"t": "crud"}});
        let created = api
            .create(&PostParams::default(), &from(obj))
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", ar.plural));
        let uid = created.metadata.uid.clone().expect("uid set");
        assert!(
            created.metadata.creation_timestamp.is_some(),
            "{}",
            ar.plural
        );
        let rv1: u64 = created
            .metadata
            .resource_version
            .clone()
            .unwrap()
            .parse()
            .unwrap();

        let got = api.get("crud-1").await.unwrap();
        assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));

        let list = api
            .list(&ListParams::default().labels("t=crud"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1, "{}", ar.plural);

        let mut changed = got.clone();
        changed
            .metadata
            .labels
            .get_or_insert_default()
            .insert("u".into(), "1".into());
        let replaced = api
            .replace("crud-1", &PostParams::default(), &changed)
            .await
            .unwrap();
        let rv2: u64 = replaced
            .metadata
            .resource_version
            .clone()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv1, "resourceVersion grows on {}", ar.plural);

        let patched = api
            .patch(
                "crud-1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"p": "q"}}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.metadata.annotations.unwrap()["p"], "q");
        assert_eq!(patched.metadata.labels.unwrap()["u"], "1");

        // Graceful deletion applies to bound pods only; none of these is bound.
        api.delete("crud-1", &DeleteParams::default())
            .await
            .unwrap();
        if ar.plural == "namespaces" {
            // Namespaces wait for the namespace controller: they are Terminating now.
            let ns = api.get("crud-1").await.unwrap();
            assert!(ns.metadata.deletion_timestamp.is_some());
            assert_eq!(ns.data["status"]["phase"], "Terminating");
        } else {
            let e = api.get("crud-1").await.unwrap_err();
            assert_eq!(code(&e), 404, "{}", ar.plural);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn object_metadata_semantics() {
    let (_s, client) = server().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = from(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"generateName": "web-"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "w"}},
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}));
    let d = deps.create(&PostParams::default(), &d).await.unwrap();
    let name = d.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(d.metadata.generation, Some(1));
    // Defaults, as the real server fills them.
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let c = &spec.template.spec.unwrap().containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));

    // A metadata change keeps the generation; a spec change bumps it.
    let d2 = deps
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d2.metadata.generation, Some(1));
    let d3 = deps
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(d3.metadata.generation, Some(2));
    assert_eq!(d3.metadata.uid, d.metadata.uid);
    assert_eq!(
        d3.metadata.creation_timestamp,
        d.metadata.creation_timestamp
    );

    // A client cannot rewrite server-owned metadata.
    let mut forged = d3.clone();
    forged.metadata.uid = Some("forged".into());
    forged.metadata.generation = Some(99);
    let d4 = deps
        .replace(&name, &PostParams::default(), &forged)
        .await
        .unwrap();
    assert_eq!(d4.metadata.uid, d.metadata.uid);
    assert_eq!(d4.metadata.generation, Some(2));

    // The status subresource is the only way to change status.
    let d5 = deps
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(d5.status.and_then(|s| s.replicas), None);
    let d6 = deps
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(d6.status.and_then(|s| s.replicas), Some(7));
    assert_eq!(d6.spec.unwrap().replicas, Some(3));
}

#[tokio::test(start_paused = true)]
async fn stale_updates_conflict() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let a = cms
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    let mut first = a.clone();
    first.data = Some([("k".to_string(), "1".to_string())].into());
    cms.replace("c", &PostParams::default(), &first)
        .await
        .unwrap();
    // `a` still carries the old resourceVersion.
    let mut second = a.clone();
    second.data = Some([("k".to_string(), "2".to_string())].into());
    let e = cms
        .replace("c", &PostParams::default(), &second)
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
    assert_eq!(reason(&e), "Conflict");
    assert!(
        e.to_string().contains("the object has been modified"),
        "{e}"
    );
    // A patch pinned to the old resourceVersion conflicts too.
    let pinned =
        json!({"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"k": "3"}});
    let e = cms
        .patch("c", &PatchParams::default(), &Patch::Merge(pinned))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["k"], "1");
}

/// A status merge patch pinned to a resourceVersion (how the disruption controller writes a
/// budget's status) applies only to that version: a write in between (an eviction's decrement)
/// makes it a 409 and survives.
#[tokio::test(start_paused = true)]
async fn pinned_status_patches_conflict_on_a_newer_version() {
    let (_s, client) = server().await;
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client);
    let pdb: PodDisruptionBudget = from(json!({"apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}}}));
    let a = pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    let pinned = |rv: &str, allowed: i32, disrupted: Value| {
        Patch::Merge(json!({"metadata": {"resourceVersion": rv},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 1,
                "expectedPods": 2, "observedGeneration": 1, "disruptedPods": disrupted}}))
    };
    let b = pdbs
        .patch_status(
            "b",
            &PatchParams::default(),
            &pinned(&rv, 1, json!({"p1": "2026-01-01T00:00:00Z"})),
        )
        .await
        .unwrap();
    let st = b.status.clone().unwrap();
    assert_eq!(st.disruptions_allowed, 1);
    assert_eq!(st.disrupted_pods.unwrap().len(), 1);
    assert_eq!(b.spec, a.spec, "the spec is untouched");
    let b_rv = b.metadata.resource_version.clone().unwrap();
    assert_ne!(b_rv, rv);
    // Someone writes in between (an eviction): the patch pinned to the older version conflicts.
    let c = pdbs
        .patch_status(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"disruptionsAllowed": 0}})),
        )
        .await
        .unwrap();
    let e = pdbs
        .patch_status("b", &PatchParams::default(), &pinned(&b_rv, 1, json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
    let now = pdbs.get("b").await.unwrap();
    assert_eq!(now.status.as_ref().unwrap().disruptions_allowed, 0);
    assert_eq!(now.metadata.resource_version, c.metadata.resource_version);
    // Pinned to the current version it applies; a null removes a disrupted pod.
    let c_rv = c.metadata.resource_version.clone().unwrap();
    let d = pdbs
        .patch_status(
            "b",
            &PatchParams::default(),
            &pinned(&c_rv, 1, json!({"p1": null})),
        )
        .await
        .unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.disruptions_allowed, 1);
    assert!(st.disrupted_pods.unwrap_or_default().is_empty());
}

/// Lease renewals (a merge patch of the spec pinned to a resourceVersion) take a shorter path in
/// the API server: the same answers as any other patch.
#[tokio::test(start_paused = true)]
async fn lease_spec_patches_keep_patch_semantics() {
    let (_s, client) = server().await;
    let ar = dynamic("coordination.k8s.io", "v1", "Lease", "leases");
    let leases: Api<DynamicObject> = Api::namespaced_with(client, "kube-node-lease", &ar);
    let lease: DynamicObject = from(json!({"apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease", "metadata": {"name": "n1", "labels": {"a": "b"}},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}));
    let a = leases.create(&PostParams::default(), &lease).await.unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    let renew = |rv: &str, t: &str| {
        Patch::Merge(json!({"metadata": {"resourceVersion": rv},
            "spec": {"renewTime": t, "leaseDurationSeconds": 41}}))
    };
    let t1 = "2026-01-01T00:00:01.000000Z";
    let b = leases
        .patch("n1", &PatchParams::default(), &renew(&rv, t1))
        .await
        .unwrap();
    let new_rv = b.metadata.resource_version.clone().unwrap();
    assert_ne!(new_rv, rv);
    assert_eq!(b.data["spec"]["renewTime"], t1);
    assert_eq!(b.data["spec"]["leaseDurationSeconds"], 41);
    assert_eq!(
        b.data["spec"]["holderIdentity"], "n1",
        "merged, not replaced"
    );
    assert_eq!(b.metadata.labels, a.metadata.labels);
    assert_eq!(b.metadata.uid, a.metadata.uid);
    assert_eq!(b.metadata.generation, a.metadata.generation);
    // The old resourceVersion conflicts and changes nothing.
    let e = leases
        .patch(
            "n1",
            &PatchParams::default(),
            &renew(&rv, "2026-01-01T00:00:09.000000Z"),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
    let now = leases.get("n1").await.unwrap();
    assert_eq!(now.data["spec"]["renewTime"], t1);
    assert_eq!(
        now.metadata.resource_version.as_deref(),
        Some(new_rv.as_str())
    );
    // Without a resourceVersion, and with other metadata, patches still apply.
    let c = leases
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "n2"}})),
        )
        .await
        .unwrap();
    assert_eq!(c.data["spec"]["holderIdentity"], "n2");
    let d = leases
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"c": "d"}}, "spec": {"renewTime": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.labels.unwrap().get("c").map(String::as_str),
        Some("d")
    );
    assert!(d.data["spec"].get("renewTime").is_none());
    // Still the one Lease.
    let list = leases.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn watch_resumes_from_a_resource_version_and_too_old_is_gone() {
    let (_s, client) = server_with(ServerConfig {
        history_limit: 5,
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let first = cms
        .create(&PostParams::default(), &cm("w0", json!({})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("w1", json!({})))
        .await
        .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "x"}})),
    )
    .await
    .unwrap();
    cms.delete("w0", &DeleteParams::default()).await.unwrap();

    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &rv0)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w1", "MODIFIED w1", "DELETED w0"]);

    // Push the first events out of the 5-event window: watching from rv0 is now 410 Gone.
    for i in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("x{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(s))) => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
        }
        Err(e) => assert_eq!(code(&e), 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // So is a list at that exact revision.
    let e = cms
        .list(
            &ListParams::default()
                .at(&rv0)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 410);
}

#[tokio::test(start_paused = true)]
async fn watch_bookmarks_and_timeout() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let created = cms
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let mut stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            }
            .timeout(200),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    // Nothing changes; after the bookmark interval (60 s of virtual time) a bookmark arrives.
    let ev = stream.try_next().await.unwrap().unwrap();
    match ev {
        WatchEvent::Bookmark(b) => {
            let brv: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(brv >= rv.parse::<u64>().unwrap());
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // The server ends the watch at timeoutSeconds.
    let mut n = 0;
    while let Some(ev) = stream.try_next().await.unwrap() {
        assert!(matches!(ev, WatchEvent::Bookmark(_)));
        n += 1;
        assert!(n < 10, "watch did not time out");
    }
}

#[tokio::test(start_paused = true)]
async fn watch_with_selector_sees_objects_enter_and_leave() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let c = cms
        .create(&PostParams::default(), &cm("s", json!({"tier": "a"})))
        .await
        .unwrap();
    let rv = c.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("tier=b").timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "b"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "c"}}})),
    )
    .await
    .unwrap();
    let kinds: Vec<&str> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(match stream.try_next().await.unwrap().unwrap() {
                WatchEvent::Added(_) => "ADDED",
                WatchEvent::Modified(_) => "MODIFIED",
                WatchEvent::Deleted(_) => "DELETED",
                _ => "OTHER",
            });
        }
        v
    };
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test(start_paused = true)]
async fn label_and_field_selectors() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for (name, labels, node) in [
        ("a", json!({"app": "web", "tier": "front"}), Some("n1")),
        ("b", json!({"app": "web", "tier": "back"}), Some("n2")),
        ("c", json!({"app": "db"}), None),
    ] {
        pods.create(&PostParams::default(), &pod(name, labels, node))
            .await
            .unwrap();
    }
    set_running(&pods, "a", true).await;
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let cases = [
        ("app=web", "", vec!["a", "b"]),
        ("app!=web", "", vec!["c"]),
        ("tier in (front,back)", "", vec!["a", "b"]),
        ("app,tier notin (front)", "", vec!["b", "c"]), // notin matches an absent key
        ("tier", "", vec!["a", "b"]),
        ("!tier", "", vec!["c"]),
        ("", "spec.nodeName=n1", vec!["a"]),
        ("", "spec.nodeName=", vec!["c"]),
        ("", "status.phase=Running", vec!["a"]),
        ("", "status.phase!=Running,metadata.name!=c", vec!["b"]),
        ("app=web", "metadata.name=b", vec!["b"]),
    ];
    for (labels, fields, want) in cases {
        let lp = ListParams::default().labels(labels).fields(fields);
        assert_eq!(
            names(pods.list(&lp).await.unwrap()),
            want,
            "labels {labels:?} fields {fields:?}"
        );
    }
    // Bad selectors are 400s, as are unsupported fields.
    for (labels, fields) in [("a in (b", ""), ("", "spec.foo=bar"), ("", "nonsense")] {
        let e = pods
            .list(&ListParams::default().labels(labels).fields(fields))
            .await
            .unwrap_err();
        assert_eq!(code(&e), 400, "{labels:?} {fields:?}");
    }
    // Nodes: spec.unschedulable, with a missing field meaning false.
    let nodes: Api<Node> = Api::all(client);
    for (n, u) in [("n1", true), ("n2", false)] {
        let mut node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}, "spec": {}});
        if u {
            node["spec"]["unschedulable"] = json!(true);
        }
        nodes
            .create(&PostParams::default(), &from(node))
            .await
            .unwrap();
    }
    let l = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].metadata.name.as_deref(), Some("n2"));
}

#[tokio::test(start_paused = true)]
async fn paging_is_consistent_and_complete() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for i in 0..25 {
        cms.create(
            &PostParams::default(),
            &cm(
                &format!("p{i:02}"),
                json!({"even": (i % 2 == 0).to_string()}),
            ),
        )
        .await
        .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let token = first.metadata.continue_.clone().unwrap();
    // Changes after the first page do not show in later pages: they read the same snapshot.
    cms.delete("p15", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("p99", json!({})))
        .await
        .unwrap();
    let mut all: Vec<String> = first
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let mut token = Some(token);
    let mut remaining = Vec::new();
    while let Some(t) = token {
        let page = cms
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        all.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        remaining.push(page.metadata.remaining_item_count);
        token = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    // Later pages know the remainder from the token: 15 after page 1, 5 after page 2.
    assert_eq!(remaining, [Some(5), None]);
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(all, want);
    // With a selector, the limit counts matching items.
    let evens = cms
        .list(&ListParams::default().labels("even=true").limit(5))
        .await
        .unwrap();
    assert_eq!(evens.items.len(), 5);
    assert!(evens.metadata.continue_.is_some());
    // A malformed token is a 400.
    let e = cms
        .list(&ListParams::default().continue_token("!!"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 400);
}

#[tokio::test(start_paused = true)]
async fn server_side_dry_run_changes_nothing() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let rv = server.store.revision();
    let c = cms.create(&dry, &cm("d", json!({}))).await.unwrap();
    assert_eq!(c.metadata.name.as_deref(), Some("d"));
    assert_eq!(cms.get_opt("d").await.unwrap(), None);
    assert_eq!(server.store.revision(), rv);

    cms.create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap();
    let rv = server.store.revision();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let p = cms
        .patch("d", &pp, &Patch::Merge(json!({"data": {"k": "dry"}})))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["k"], "dry");
    let mut r = cms.get("d").await.unwrap();
    r.data = Some([("k".to_string(), "dry2".to_string())].into());
    cms.replace("d", &dry, &r).await.unwrap();
    cms.delete(
        "d",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(server.store.revision(), rv);
    assert_eq!(cms.get("d").await.unwrap().data.unwrap()["k"], "v");

    // Evictions too.
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("e", json!({}), Some("n1")))
        .await
        .unwrap();
    set_running(&pods, "e", true).await;
    let rv = server.store.revision();
    // kube-rs 5 sends its delete options as `delete_options` (snake case), a field the real API
    // server ignores; the dryRun query parameter is what makes this eviction a dry run.
    let ep = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..Default::default()
        },
        ..Default::default()
    };
    pods.evict("e", &ep).await.unwrap();
    assert_eq!(server.store.revision(), rv);
    assert!(
        pods.get("e")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn graceful_deletion_and_finalizers() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // A bound pod terminates gracefully: it stays until its kubelet confirms (delete, grace 0).
    pods.create(&PostParams::default(), &pod("g", json!({}), Some("n1")))
        .await
        .unwrap();
    set_running(&pods, "g", true).await;
    let res = pods.delete("g", &DeleteParams::default()).await.unwrap();
    let terminating = res.left().expect("the pod, still terminating");
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(pods.get("g").await.is_ok());
    // A shorter grace period shortens it; grace 0 removes it.
    let p = pods
        .delete("g", &DeleteParams::default().grace_period(5))
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(5));
    pods.delete("g", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(code(&pods.get("g").await.unwrap_err()), 404);
    // An unbound pod goes at once.
    pods.create(&PostParams::default(), &pod("u", json!({}), None))
        .await
        .unwrap();
    pods.delete("u", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(&pods.get("u").await.unwrap_err()), 404);

    // Finalizers hold an object until they are removed.
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let held = cms.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(&cms.get("f").await.unwrap_err()), 404);
    // Foreground propagation adds its finalizer.
    cms.create(&PostParams::default(), &cm("fg", json!({})))
        .await
        .unwrap();
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let fg = cms.get("fg").await.unwrap();
    assert_eq!(fg.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    // Preconditions are checked.
    cms.create(&PostParams::default(), &cm("pre", json!({})))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(code(&cms.delete("pre", &dp).await.unwrap_err()), 409);
}

#[tokio::test(start_paused = true)]
async fn eviction_follows_the_disruption_budget_rules() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    for (n, app) in [
        ("none", "free"),
        ("one-a", "one"),
        ("one-b", "one"),
        ("zero", "zero"),
        ("two", "two"),
        ("unready", "ur"),
    ] {
        pods.create(
            &PostParams::default(),
            &pod(n, json!({"app": app}), Some("n1")),
        )
        .await
        .unwrap();
        set_running(&pods, n, n != "unready").await;
    }
    pdb(&client, "one", json!({"app": "one"}), 1, 2, 1).await;
    pdb(&client, "zero", json!({"app": "zero"}), 0, 1, 1).await;
    pdb(&client, "two-a", json!({"app": "two"}), 1, 1, 0).await;
    pdb(&client, "two-b", json!({"app": "two"}), 1, 1, 0).await;
    pdb(&client, "ur", json!({"app": "ur"}), 0, 2, 1).await;
    let ep = EvictParams::default();

    // No PDB: evicted (deleted gracefully).
    pods.evict("none", &ep).await.unwrap();
    assert!(
        pods.get("none")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // One PDB allowing one disruption: the first eviction is recorded and uses it up.
    pods.evict("one-a", &ep).await.unwrap();
    let p = pdbs.get("one").await.unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.disruptions_allowed, 0);
    assert!(st.disrupted_pods.unwrap().contains_key("one-a"));
    let e = pods.evict("one-b", &ep).await.unwrap_err();
    assert_eq!(code(&e), 429);
    assert!(
        e.to_string()
            .contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{e}"
    );
    assert!(
        pods.get("one-b")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // disruptionsAllowed 0: 429 naming the budget.
    let e = pods.evict("zero", &ep).await.unwrap_err();
    assert_eq!(code(&e), 429);
    match &e {
        Error::Api(s) => {
            let causes = s.details.as_ref().unwrap().causes.clone();
            assert_eq!(causes[0].reason, "DisruptionBudget");
            assert_eq!(
                causes[0].message,
                "The disruption budget zero needs 1 healthy pods and has 1 currently"
            );
        }
        _ => unreachable!(),
    }

    // Two PDBs: 500, as the real server refuses.
    let e = pods.evict("two", &ep).await.unwrap_err();
    assert_eq!(code(&e), 500);
    assert!(
        e.to_string().contains("more than one PodDisruptionBudget"),
        "{e}"
    );

    // An unready pod, while the budget is otherwise met, is evicted without using the budget.
    pods.evict("unready", &ep).await.unwrap();
    assert_eq!(
        pdbs.get("ur")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        0
    );

    // A pending pod is not protected.
    pods.create(
        &PostParams::default(),
        &pod("pending", json!({"app": "zero"}), None),
    )
    .await
    .unwrap();
    pods.evict("pending", &ep).await.unwrap();
    assert_eq!(code(&pods.get("pending").await.unwrap_err()), 404);

    // A PDB the controller has not observed yet blocks with "still being processed".
    let fresh = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "fresh"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "fresh"}}}});
    pdbs.create(&PostParams::default(), &from(fresh))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("fresh-pod", json!({"app": "fresh"}), Some("n1")),
    )
    .await
    .unwrap();
    set_running(&pods, "fresh-pod", true).await;
    let e = pods.evict("fresh-pod", &ep).await.unwrap_err();
    assert_eq!(code(&e), 429);

    // Evicting a pod that does not exist is a 404.
    assert_eq!(code(&pods.evict("ghost", &ep).await.unwrap_err()), 404);
}

#[tokio::test(start_paused = true)]
async fn tables_and_partial_object_metadata() {
    let (_s, client) = server().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.4", "osImage": "Ubuntu 22.04.4 LTS"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    nodes
        .create(&PostParams::default(), &from(node))
        .await
        .unwrap();

    let req = http::Request::get("/api/v1/nodes")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(req).await.unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Status", "Roles", "Age", "Version"]);
    assert!(cols.contains(&"Internal-IP") && cols.contains(&"OS-Image"));
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "n1");
    assert_eq!(cells[1], "Ready,SchedulingDisabled");
    assert_eq!(cells[2], "control-plane");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    // kube-rs metadata lists and watches ask for PartialObjectMetadata.
    let meta = nodes.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 1);
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("n1"));
    let one = nodes.get_metadata("n1").await.unwrap();
    assert!(one.metadata.uid.is_some());
    let rv = meta.metadata.resource_version.clone().unwrap();
    let mut w = nodes
        .watch_metadata(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Modified(m) => assert_eq!(m.metadata.labels.unwrap()["x"], "y"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn scale_binding_and_deletecollection() {
    let (_s, client) = server().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = from(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "s"}},
            "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    deps.create(&PostParams::default(), &d).await.unwrap();
    let scale = deps.get_scale("s").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=s"));
    deps.patch_scale(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let d = deps.get("s").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(5));
    assert_eq!(d.metadata.generation, Some(2));
    let e = deps
        .patch_scale(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 422);

    // Binding assigns a node once.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &PostParams::default(),
        &pod("b", json!({"del": "yes"}), None),
    )
    .await
    .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"}, "target": {"kind": "Node", "name": "n7"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/b/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let _: Value = client.request(req).await.unwrap();
    assert_eq!(
        pods.get("b")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("n7")
    );
    let req = http::Request::post("/api/v1/namespaces/default/pods/b/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let e = client.request::<Value>(req).await.unwrap_err();
    assert_eq!(code(&e), 409);

    // deletecollection with a selector.
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for (n, l) in [("k1", "yes"), ("k2", "yes"), ("k3", "no")] {
        cms.create(&PostParams::default(), &cm(n, json!({"del": l})))
            .await
            .unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("del=yes"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["k3"]);
}

#[tokio::test(start_paused = true)]
async fn custom_resources_are_served_from_their_crd() {
    let (_s, client) = server().await;
    let crds = dynamic(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    );
    let crd_api: Api<DynamicObject> = Api::all_with(client.clone(), &crds);
    for (plural, kind, scope) in [
        ("widgets", "Widget", "Namespaced"),
        ("gizmos", "Gizmo", "Cluster"),
    ] {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": scope, "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]}});
        let created = crd_api
            .create(&PostParams::default(), &from(crd))
            .await
            .unwrap();
        assert_eq!(
            created.data["status"]["conditions"][1]["type"],
            "Established"
        );
    }
    let widgets_ar = dynamic("example.com", "v1", "Widget", "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widgets_ar);
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}, "status": {"ok": true}});
    let w = widgets
        .create(&PostParams::default(), &from(w))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create when /status exists"
    );
    let s = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ok": true}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["ok"], true);
    let w2 = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(w2.metadata.generation, Some(2));
    // Strategic merge patch is refused for custom resources, as on a real server.
    let e = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 415);
    // Discovery lists the new group.
    let groups: Value = client
        .request(
            http::Request::get("/apis/example.com/v1")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let names: Vec<&str> = groups["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"widgets")
            && names.contains(&"widgets/status")
            && names.contains(&"gizmos")
    );

    let gizmos: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &dynamic("example.com", "v1", "Gizmo", "gizmos"),
    );
    gizmos.create(&PostParams::default(), &from(json!({"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g1"}}))).await.unwrap();
    assert_eq!(
        gizmos
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Deleting the CRD removes its resources.
    crd_api
        .delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(&widgets.get("w1").await.unwrap_err()), 404);
}

#[tokio::test(start_paused = true)]
async fn errors_are_statuses_with_the_right_codes() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let e = cms.get("missing").await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (404, "NotFound"));
    assert!(
        e.to_string().contains("configmaps \"missing\" not found"),
        "{e}"
    );
    cms.create(&PostParams::default(), &cm("dup", json!({})))
        .await
        .unwrap();
    let e = cms
        .create(&PostParams::default(), &cm("dup", json!({})))
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "AlreadyExists"));
    let e = cms
        .create(&PostParams::default(), &cm("Bad_Name", json!({})))
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (422, "Invalid"));
    // A namespace that does not exist.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let e = other
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 404);

    let raw = |method: &str, path: &str, ct: &str, body: &[u8]| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.to_vec())
            .unwrap()
    };
    let cases: Vec<(http::Request<Vec<u8>>, u16, &str)> = vec![
        (
            raw(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                b"{not json",
            ),
            400,
            "BadRequest",
        ),
        (
            raw(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                b"[1,2]",
            ),
            400,
            "BadRequest",
        ),
        (
            raw(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"k"}}"#,
            ),
            400,
            "BadRequest",
        ),
        (
            raw(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "text/plain",
                b"x",
            ),
            415,
            "UnsupportedMediaType",
        ),
        (
            raw(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/dup",
                "application/xml",
                b"{}",
            ),
            415,
            "UnsupportedMediaType",
        ),
        (
            raw(
                "PUT",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                b"{}",
            ),
            405,
            "MethodNotAllowed",
        ),
        (
            raw("GET", "/api/v1/frobnicators", "application/json", b""),
            404,
            "NotFound",
        ),
        (
            raw("GET", "/apis/nope.io/v1/things", "application/json", b""),
            404,
            "NotFound",
        ),
        (
            raw(
                "GET",
                "/api/v1/namespaces/default/configmaps?limit=abc",
                "application/json",
                b"",
            ),
            400,
            "BadRequest",
        ),
        (
            raw(
                "GET",
                "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=xyz",
                "application/json",
                b"",
            ),
            400,
            "BadRequest",
        ),
    ];
    for (req, want_code, want_reason) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let e = client.request::<Value>(req).await.unwrap_err();
        assert_eq!(
            (code(&e), reason(&e).as_str()),
            (want_code, want_reason),
            "{what}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_matches_what_clients_expect() {
    let (_s, client) = server().await;
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    let ev = core
        .resources
        .iter()
        .find(|r| r.name == "pods/eviction")
        .unwrap();
    assert_eq!(
        (ev.group.as_deref(), ev.version.as_deref()),
        (Some("policy"), Some("v1"))
    );
    let groups = client.list_api_groups().await.unwrap();
    for g in [
        "apps",
        "policy",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "batch",
    ] {
        assert!(groups.groups.iter().any(|x| x.name == g), "{g}");
    }
    // kube-rs discovery walks every group version.
    let d = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(d.has_group("apps"));
    let (ar, caps) = d
        .resolve_gvk(&GroupVersionKind::gvk(
            "policy",
            "v1",
            "PodDisruptionBudget",
        ))
        .unwrap();
    assert_eq!(ar.plural, "poddisruptionbudgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let ns: Api<Namespace> = Api::all(client);
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_hour_of_virtual_time_passes_at_once() {
    let (server, _client) = server().await;
    let before = server.clock.now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!((server.clock.now() - before).num_seconds(), 3600);
}

#[tokio::test(start_paused = true)]
async fn the_kubelet_stand_in_confirms_graceful_deletions_after_the_grace_period() {
    use theseus_sim::kubelet::{TerminationPolicy, spawn_termination_confirmer};
    let (server, client) = server().await;
    spawn_termination_confirmer(server.clone(), TerminationPolicy { exit_after: None });
    let pods: Api<Pod> = Api::default_namespaced(client);
    for n in ["slow", "shortened"] {
        pods.create(&PostParams::default(), &pod(n, json!({}), Some("n1")))
            .await
            .unwrap();
        set_running(&pods, n, true).await;
        pods.delete(n, &DeleteParams::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A second delete shortens the grace period to 5 s.
    pods.delete("shortened", &DeleteParams::default().grace_period(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(code(&pods.get("shortened").await.unwrap_err()), 404);
    assert!(pods.get("slow").await.is_ok(), "30 s have not passed");
    tokio::time::sleep(Duration::from_secs(23)).await;
    assert_eq!(code(&pods.get("slow").await.unwrap_err()), 404);
}

//! Acceptance tests: real kubectl 1.33 against the simulator served over loopback HTTP.
//!
//! Needs kubectl v1.33: run `scripts/fetch-kubectl` once (or set THESEUS_KUBECTL). Without it
//! these tests fail, unless THESEUS_SKIP_KUBECTL=1. Each test has its own simulator loaded with
//! the small scenario (see `util::SMALL_SCENARIO`), so they run in parallel.

mod util;

use util::{Out, Sim};

macro_rules! sim {
    () => {
        match Sim::start().await {
            Some(s) => s,
            None => return,
        }
    };
}

const WEB_POD_1: &str = "web-7d4b9c-abcde"; // on worker-1
const WEB_POD_2: &str = "web-7d4b9c-fghij"; // on worker-2

async fn jsonpath(sim: &Sim, args: &[&str], path: &str) -> String {
    let expr = format!("jsonpath={path}");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", &expr]);
    sim.kubectl(&all).await.ok().text().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_discovery() {
    let sim = sim!();
    sim.kubectl(&["version"])
        .await
        .ok()
        .stdout_has(&["Client Version: v1.33.", "Server Version: v1.33.4"]);
    let out = sim.kubectl(&["api-resources"]).await;
    out.ok();
    let t = out.table();
    let row = t.row("NAME", "poddisruptionbudgets");
    assert_eq!(
        row[1..],
        ["pdb", "policy/v1", "true", "PodDisruptionBudget"],
        "{out}"
    );
    assert_eq!(
        t.row("NAME", "nodes")[1..],
        ["no", "v1", "false", "Node"],
        "{out}"
    );
    // Short names and categories resolve through discovery.
    sim.kubectl(&["get", "po", "-n", "kube-system", "-o", "name"])
        .await
        .ok()
        .stdout_has(&["pod/node-exporter-cp-1"]);
    let all = sim.kubectl(&["get", "all", "-A"]).await;
    all.ok().stdout_has(&[
        "pod/web-7d4b9c-abcde",
        "deployment.apps/web",
        "replicaset.apps/web-7d4b9c",
        "daemonset.apps/node-exporter",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_cordon_uncordon() {
    let sim = sim!();
    let out = sim.kubectl(&["get", "nodes"]).await;
    out.ok();
    let t = out.table();
    assert_eq!(
        t.header,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    assert_eq!(t.names(), ["cp-1", "worker-1", "worker-2"], "{out}");
    assert_eq!(t.cell("cp-1", "ROLES"), "control-plane");
    assert_eq!(t.cell("worker-1", "ROLES"), "<none>");
    assert_eq!(t.cell("worker-1", "STATUS"), "Ready");
    assert_eq!(t.cell("worker-1", "VERSION"), "v1.33.4");

    sim.kubectl(&["cordon", "worker-1"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 cordoned"]);
    let out = sim.kubectl(&["get", "nodes"]).await;
    let t = out.ok().table();
    assert_eq!(
        t.cell("worker-1", "STATUS"),
        "Ready,SchedulingDisabled",
        "{out}"
    );
    assert_eq!(t.cell("worker-2", "STATUS"), "Ready", "{out}");
    assert_eq!(
        jsonpath(&sim, &["get", "node", "worker-1"], "{.spec.unschedulable}").await,
        "true"
    );
    // The server-side field selector on spec.unschedulable.
    let out = sim
        .kubectl(&[
            "get",
            "nodes",
            "--field-selector",
            "spec.unschedulable=true",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok().text(), "node/worker-1", "{out}");
    // Cordoning twice is a no-op that says so.
    sim.kubectl(&["cordon", "worker-1"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 already cordoned"]);

    sim.kubectl(&["uncordon", "worker-1"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 uncordoned"]);
    let out = sim.kubectl(&["get", "nodes"]).await;
    assert!(!out.ok().stdout.contains("SchedulingDisabled"), "{out}");
    assert_eq!(
        jsonpath(&sim, &["get", "node", "worker-1"], "{.spec.unschedulable}").await,
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_wide() {
    let sim = sim!();
    let out = sim.kubectl(&["get", "nodes", "-o", "wide"]).await;
    out.ok();
    let t = out.table();
    assert_eq!(
        t.header,
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ],
        "{out}"
    );
    assert_eq!(t.cell("worker-1", "INTERNAL-IP"), "10.0.0.11");
    assert_eq!(t.cell("cp-1", "INTERNAL-IP"), "10.0.0.10");
    assert_eq!(t.cell("worker-1", "EXTERNAL-IP"), "<none>");
    assert_eq!(t.cell("worker-2", "OS-IMAGE"), "CentOS Linux 7 (Core)");
    assert_eq!(
        t.cell("worker-2", "KERNEL-VERSION"),
        "3.10.0-1160.el7.x86_64"
    );
    assert_eq!(
        t.cell("worker-2", "CONTAINER-RUNTIME"),
        "containerd://1.7.27"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_all_namespaces_wide() {
    let sim = sim!();
    let out = sim.kubectl(&["get", "pods", "-A", "-o", "wide"]).await;
    out.ok();
    let t = out.table();
    assert_eq!(
        t.header,
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{out}"
    );
    assert_eq!(t.rows.len(), 5, "{out}");
    let web = t.row("NAME", WEB_POD_1);
    let col = |c: &str| web[t.col(c)].as_str();
    assert_eq!(col("NAMESPACE"), "default");
    assert_eq!(col("READY"), "1/1");
    assert_eq!(col("STATUS"), "Running");
    assert_eq!(col("RESTARTS"), "0");
    assert_eq!(col("IP"), "10.244.1.10");
    assert_eq!(col("NODE"), "worker-1");
    assert_eq!(col("NOMINATED NODE"), "<none>");
    let ds = t.row("NAME", "node-exporter-cp-1");
    assert_eq!(ds[t.col("NAMESPACE")], "kube-system");
    assert_eq!(ds[t.col("NODE")], "cp-1");

    // The same through a server-side field selector, as kubectl drain lists a node's pods.
    let out = sim
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=worker-2",
            "-o",
            "name",
        ])
        .await;
    let mut names: Vec<&str> = out.ok().stdout.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["pod/node-exporter-worker-2", "pod/web-7d4b9c-fghij"],
        "{out}"
    );
    // And a label selector.
    let out = sim
        .kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
        .await;
    assert_eq!(out.ok().stdout.lines().count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_node() {
    let sim = sim!();
    let out = sim.kubectl(&["describe", "node", "worker-1"]).await;
    out.ok().stdout_has(&[
        "Name:               worker-1",
        "Roles:              <none>",
        "kubernetes.io/hostname=worker-1",
        "topology.kubernetes.io/zone=zone-a",
        "Taints:             <none>",
        "Unschedulable:      false",
        "InternalIP:  10.0.0.11",
        "Hostname:    worker-1",
        "Kernel Version:             3.10.0-1160.el7.x86_64",
        "OS Image:                   CentOS Linux 7 (Core)",
        "Container Runtime Version:  containerd://1.7.27",
        "Kubelet Version:            v1.33.4",
        "PodCIDR:                      10.244.1.0/24",
        "Non-terminated Pods:          (2 in total)",
        WEB_POD_1,
        "node-exporter-worker-1",
        "Allocated resources:",
    ]);
    // Capacity and allocatable as the scenario gives them.
    let s = &out.stdout;
    let cap = s.find("Capacity:").expect("a Capacity section");
    let alloc = s.find("Allocatable:").expect("an Allocatable section");
    assert!(
        s[cap..alloc].contains("memory:  32Gi") && s[alloc..].contains("memory:  31Gi"),
        "{out}"
    );
    assert!(!s.contains(WEB_POD_2), "{out}");

    // Cordoning shows up in describe too. (The node.kubernetes.io/unschedulable taint would
    // come from the node lifecycle controller, which the simulator does not run.)
    sim.kubectl(&["cordon", "worker-1"]).await.ok();
    sim.kubectl(&["describe", "node", "worker-1"])
        .await
        .ok()
        .stdout_has(&["Unschedulable:      true"]);
    sim.kubectl(&["describe", "node", "cp-1"])
        .await
        .ok()
        .stdout_has(&[
            "Roles:              control-plane",
            "Taints:             node-role.kubernetes.io/control-plane:NoSchedule",
        ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_taint_nodes() {
    let sim = sim!();
    sim.kubectl(&["label", "node", "worker-1", "disk=ssd"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 labeled"]);
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "node", "worker-1"],
            "{.metadata.labels.disk}"
        )
        .await,
        "ssd"
    );
    let out = sim
        .kubectl(&["get", "nodes", "-l", "disk=ssd", "-o", "name"])
        .await;
    assert_eq!(out.ok().text(), "node/worker-1", "{out}");
    // kubectl refuses to change a label without --overwrite.
    sim.kubectl(&["label", "node", "worker-1", "disk=hdd"])
        .await
        .fails()
        .stderr_has(&["'disk' already has a value (ssd), and --overwrite is false"]);
    sim.kubectl(&["label", "node", "worker-1", "disk=hdd", "--overwrite"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 labeled"]);
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "node", "worker-1"],
            "{.metadata.labels.disk}"
        )
        .await,
        "hdd"
    );
    sim.kubectl(&["label", "node", "worker-1", "disk-"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 unlabeled"]);
    let labels = jsonpath(&sim, &["get", "node", "worker-1"], "{.metadata.labels}").await;
    assert!(
        !labels.contains("disk") && labels.contains("kubernetes.io/hostname"),
        "{labels}"
    );

    sim.kubectl(&["taint", "node", "worker-1", "dedicated=batch:NoSchedule"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 tainted"]);
    let taints = jsonpath(&sim, &["get", "node", "worker-1"], "{.spec.taints}").await;
    let taints: serde_json::Value = serde_json::from_str(&taints).expect("taints as JSON");
    assert_eq!(
        taints,
        serde_json::json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}])
    );
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "node", "worker-1"],
            "{.spec.taints[?(@.key==\"dedicated\")].effect}"
        )
        .await,
        "NoSchedule"
    );
    // A second taint with the same key and another effect is added, not replaced (kubectl puts
    // new taints first and sends the whole list: taints have no merge key).
    sim.kubectl(&["taint", "node", "worker-1", "dedicated=batch:NoExecute"])
        .await
        .ok();
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "node", "worker-1"],
            "{.spec.taints[*].effect}"
        )
        .await,
        "NoExecute NoSchedule"
    );
    // The same key and effect again needs --overwrite.
    sim.kubectl(&["taint", "node", "worker-1", "dedicated=other:NoSchedule"])
        .await
        .fails()
        .stderr_has(&[
            "already has dedicated taint(s) with same effect(s) and --overwrite is false",
        ]);
    sim.kubectl(&["taint", "node", "worker-1", "dedicated-"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 untainted"]);
    assert_eq!(
        jsonpath(&sim, &["get", "node", "worker-1"], "{.spec.taints}").await,
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_rollout_restart() {
    let sim = sim!();
    let gen0 = jsonpath(&sim, &["get", "deploy", "web"], "{.metadata.generation}").await;
    sim.kubectl(&["scale", "deployment", "web", "--replicas=3"])
        .await
        .ok()
        .stdout_has(&["deployment.apps/web scaled"]);
    assert_eq!(
        jsonpath(&sim, &["get", "deploy", "web"], "{.spec.replicas}").await,
        "3"
    );
    let gen1 = jsonpath(&sim, &["get", "deploy", "web"], "{.metadata.generation}").await;
    assert_eq!(
        gen1.parse::<i64>().unwrap(),
        gen0.parse::<i64>().unwrap() + 1,
        "a spec change bumps the generation"
    );
    // --current-replicas is a precondition kubectl checks against the scale subresource.
    sim.kubectl(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=2",
        "--replicas=5",
    ])
    .await
    .fails()
    .stderr_has(&["Expected replicas to be 2, was 3"]);
    sim.kubectl(&["scale", "rs", "web-7d4b9c", "--replicas=1"])
        .await
        .ok()
        .stdout_has(&["replicaset.apps/web-7d4b9c scaled"]);

    sim.kubectl(&["rollout", "restart", "deployment", "web"])
        .await
        .ok()
        .stdout_has(&["deployment.apps/web restarted"]);
    let at = jsonpath(
        &sim,
        &["get", "deploy", "web"],
        "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    )
    .await;
    assert!(
        at.len() >= 20 && at.contains('T'),
        "restartedAt should be an RFC 3339 time, got {at:?}"
    );
    let gen2 = jsonpath(&sim, &["get", "deploy", "web"], "{.metadata.generation}").await;
    assert_eq!(
        gen2.parse::<i64>().unwrap(),
        gen1.parse::<i64>().unwrap() + 1
    );
    // The rest of the template survived the strategic merge patch.
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[*].image}"
        )
        .await,
        "nginx:1.27"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pod() {
    let sim = sim!();
    // kubectl waits until the pod is gone: the termination confirmer finishes it.
    sim.kubectl(&["delete", "pod", WEB_POD_1])
        .await
        .ok()
        .stdout_has(&[&format!("pod \"{WEB_POD_1}\" deleted")]);
    sim.kubectl(&["get", "pod", WEB_POD_1])
        .await
        .fails()
        .stderr_has(&[&format!(
            "Error from server (NotFound): pods \"{WEB_POD_1}\" not found"
        )]);
    // Nothing recreates it: there is no ReplicaSet controller.
    let out = sim.kubectl(&["get", "pods", "-o", "name"]).await;
    assert_eq!(out.ok().text(), format!("pod/{WEB_POD_2}"), "{out}");
    sim.kubectl(&["delete", "pod", "nope"])
        .await
        .fails()
        .stderr_has(&["Error from server (NotFound): pods \"nope\" not found"]);
    sim.kubectl(&["delete", "pod", "nope", "--ignore-not-found"])
        .await
        .ok();
    // Immediate deletion.
    sim.kubectl(&["delete", "pod", WEB_POD_2, "--grace-period=0", "--force"])
        .await
        .ok()
        .stdout_has(&[&format!("pod \"{WEB_POD_2}\" force deleted")]);
    let out = sim.kubectl(&["get", "pods"]).await;
    out.ok();
    assert!(
        out.stderr
            .contains("No resources found in default namespace."),
        "{out}"
    );
}

const APPLY_V1: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: demo, tier: config}
data:
  mode: fast
  level: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: nginx:1.27
        ports: [{containerPort: 80}]
      - name: sidecar
        image: busybox:1.36
        command: [sleep, infinity]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_create_configure_unchanged() {
    let sim = sim!();
    let file = sim.write_file("app.yaml", APPLY_V1);
    sim.kubectl(&["apply", "-f", &file])
        .await
        .ok()
        .stdout_has(&["configmap/settings created", "deployment.apps/api created"]);
    let last = jsonpath(
        &sim,
        &["get", "cm", "settings"],
        "{.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    )
    .await;
    assert!(last.contains("\"mode\":\"fast\""), "{last}");

    sim.kubectl(&["apply", "-f", &file])
        .await
        .ok()
        .stdout_has(&[
            "configmap/settings unchanged",
            "deployment.apps/api unchanged",
        ]);

    // Change a value, drop a key and a label, change one container's image: a three-way
    // strategic merge patch, which must merge the containers list by name.
    let v2 = APPLY_V1
        .replace("mode: fast", "mode: safe")
        .replace("  level: \"1\"\n", "")
        .replace("labels: {app: demo, tier: config}", "labels: {app: demo}")
        .replace("image: nginx:1.27", "image: nginx:1.28");
    let file = sim.write_file("app.yaml", &v2);
    sim.kubectl(&["apply", "-f", &file])
        .await
        .ok()
        .stdout_has(&[
            "configmap/settings configured",
            "deployment.apps/api configured",
        ]);
    let data = jsonpath(&sim, &["get", "cm", "settings"], "{.data}").await;
    assert_eq!(data, r#"{"mode":"safe"}"#);
    let labels = jsonpath(&sim, &["get", "cm", "settings"], "{.metadata.labels}").await;
    assert_eq!(labels, r#"{"app":"demo"}"#);
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "deploy", "api"],
            "{range .spec.template.spec.containers[*]}{.name}={.image} {end}"
        )
        .await,
        "api=nginx:1.28 sidecar=busybox:1.36"
    );
    sim.kubectl(&["apply", "-f", &file])
        .await
        .ok()
        .stdout_has(&[
            "configmap/settings unchanged",
            "deployment.apps/api unchanged",
        ]);

    // Server-side dry run and diff go through the same paths without changing anything.
    sim.kubectl(&["apply", "-f", &file, "--dry-run=server"])
        .await
        .ok()
        .stdout_has(&["configmap/settings unchanged (server dry run)"]);
    // kubectl apply from stdin, into another namespace given on the command line.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {k: v}\n";
    sim.kubectl_with_stdin(&["apply", "-n", "kube-public", "-f", "-"], Some(cm))
        .await
        .ok()
        .stdout_has(&["configmap/other created"]);
    assert_eq!(
        jsonpath(
            &sim,
            &["get", "cm", "other", "-n", "kube-public"],
            "{.data.k}"
        )
        .await,
        "v"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pdb() {
    let sim = sim!();
    let out = sim.kubectl(&["get", "pdb"]).await;
    out.ok();
    let t = out.table();
    assert_eq!(
        t.header,
        [
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(t.cell("web", "MIN AVAILABLE"), "1");
    assert_eq!(t.cell("web", "MAX UNAVAILABLE"), "N/A");
    assert_eq!(t.cell("web", "ALLOWED DISRUPTIONS"), "1");
    sim.kubectl(&["describe", "pdb", "web"])
        .await
        .ok()
        .stdout_has(&["Min available:  1", "Allowed disruptions:  1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_controller_owned_pods() {
    let sim = sim!();
    let out = sim
        .kubectl(&["drain", "worker-1", "--ignore-daemonsets", "--timeout=60s"])
        .await;
    out.ok()
        .stdout_has(&[
            "node/worker-1 cordoned",
            &format!("evicting pod default/{WEB_POD_1}"),
            &format!("pod/{WEB_POD_1} evicted"),
            "node/worker-1 drained",
        ])
        .stderr_has(&[
            "Warning: ignoring DaemonSet-managed Pods: kube-system/node-exporter-worker-1",
        ]);
    // The evicted pod is gone (drain waited for it); the DaemonSet pod stays.
    let out = sim
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=worker-1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok().text(), "pod/node-exporter-worker-1", "{out}");
    sim.kubectl(&["get", "pod", WEB_POD_1]).await.fails();
    let t = sim.kubectl(&["get", "nodes"]).await.ok().table();
    assert_eq!(t.cell("worker-1", "STATUS"), "Ready,SchedulingDisabled");
    // The eviction consumed the PDB's one allowed disruption.
    assert_eq!(
        jsonpath(&sim, &["get", "pdb", "web"], "{.status.disruptionsAllowed}").await,
        "0"
    );
    // Draining again finds nothing to evict.
    sim.kubectl(&["drain", "worker-1", "--ignore-daemonsets", "--timeout=30s"])
        .await
        .ok()
        .stdout_has(&["node/worker-1 already cordoned", "node/worker-1 drained"]);
}

const BARE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: bare
  namespace: default
spec:
  nodeName: cp-1
  containers: [{name: main, image: "nginx:1.27"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_unmanaged_pods_without_force() {
    let sim = sim!();
    let file = sim.write_file("bare.yaml", BARE_POD);
    sim.kubectl(&["apply", "-f", &file])
        .await
        .ok()
        .stdout_has(&["pod/bare created"]);

    // Without --ignore-daemonsets and --force both filters object (kubectl 1.33's wording: the
    // older "not managed by ReplicationController, ReplicaSet, Job, DaemonSet or StatefulSet"
    // message is gone).
    let out = sim.kubectl(&["drain", "cp-1", "--timeout=30s"]).await;
    out.fails()
        .stdout_has(&["node/cp-1 cordoned"])
        .stderr_has(&[
            "cannot delete",
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/node-exporter-cp-1",
            "cannot delete Pods that declare no controller (use --force to override): default/bare",
        ]);
    let out = sim
        .kubectl(&["drain", "cp-1", "--ignore-daemonsets", "--timeout=30s"])
        .await;
    out.fails().stderr_has(&[
        "error: unable to drain node \"cp-1\"",
        "cannot delete Pods that declare no controller (use --force to override): default/bare",
    ]);
    assert!(!out.stdout.contains("evicting pod"), "{out}");
    sim.kubectl(&["get", "pod", "bare"]).await.ok();

    let out = sim
        .kubectl(&[
            "drain",
            "cp-1",
            "--ignore-daemonsets",
            "--force",
            "--timeout=60s",
        ])
        .await;
    out.ok()
        .stdout_has(&[
            "node/cp-1 already cordoned",
            "evicting pod default/bare",
            "pod/bare evicted",
            "node/cp-1 drained",
        ])
        // kubectl joins its warnings in map order, which varies from run to run.
        .stderr_has(&[
            "Warning: ",
            "deleting Pods that declare no controller: default/bare",
            "ignoring DaemonSet-managed Pods: kube-system/node-exporter-cp-1",
        ]);
    sim.kubectl(&["get", "pod", "bare"])
        .await
        .fails()
        .stderr_has(&["pods \"bare\" not found"]);
}

/// `kubectl drain` retries a 429 from the eviction API every 5 s until its timeout.
fn assert_blocked_by_pdb(out: &Out, timeout: &str) {
    out.fails()
        .stdout_has(&[&format!("evicting pod default/{WEB_POD_1}")])
        .stderr_has(&[
            &format!("error when evicting pods/\"{WEB_POD_1}\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."),
            &format!("global timeout reached: {timeout}"),
            "error: unable to drain node \"worker-1\"",
        ]);
    assert!(!out.stdout.contains("drained"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_blocked_by_pdb_with_no_disruptions_allowed() {
    let sim = sim!();
    sim.kubectl(&[
        "patch",
        "pdb",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"disruptionsAllowed":0}}"#,
    ])
    .await
    .ok()
    .stdout_has(&["poddisruptionbudget.policy/web patched"]);
    let t = sim.kubectl(&["get", "pdb", "web"]).await.ok().table();
    assert_eq!(t.cell("web", "ALLOWED DISRUPTIONS"), "0");

    let started = std::time::Instant::now();
    let out = sim
        .kubectl(&["drain", "worker-1", "--ignore-daemonsets", "--timeout=12s"])
        .await;
    assert_blocked_by_pdb(&out, "12s");
    assert!(
        out.stderr
            .matches("Cannot evict pod as it would violate the pod's disruption budget")
            .count()
            >= 2,
        "kubectl should have retried:\n{out}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
    // Nothing was evicted; the node stays cordoned.
    let t = sim
        .kubectl(&["get", "pods", "-o", "wide"])
        .await
        .ok()
        .table();
    assert_eq!(t.cell(WEB_POD_1, "STATUS"), "Running");
    assert_eq!(t.cell(WEB_POD_1, "NODE"), "worker-1");
    let t = sim.kubectl(&["get", "nodes"]).await.ok().table();
    assert_eq!(t.cell("worker-1", "STATUS"), "Ready,SchedulingDisabled");
}

// Not covered here: a drain blocked because the PDB's status.observedGeneration lags its
// generation. kube-apiserver answers that 429 with `Retry-After: 10`, which client-go honours
// inside the eviction request itself (up to 10 times) before kubectl drain sees the error, so
// such a test would run for well over a minute. The kube-rs conformance suite covers the rule.

/// Runbook 002 with real kubectl against the living CKA lab: a drain refuses the unmanaged pod,
/// a drain of a node with only controller-owned pods moves them, and nothing moves back after
/// uncordon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cka_lab_drains_like_runbook_002() {
    let Some(sim) = Sim::living(include_str!("../../../scenarios/cka-002-lab.yaml")).await else {
        return;
    };
    let out = sim
        .kubectl(&["drain", "node01", "--ignore-daemonsets", "--timeout=30s"])
        .await;
    out.fails().stderr_has(&[
        "cannot delete Pods that declare no controller",
        "default/hr-app",
    ]);
    // The refused drain left node01 cordoned; hr-app keeps running there.
    sim.kubectl(&["get", "nodes"])
        .await
        .ok()
        .stdout_has(&["SchedulingDisabled"]);
    let hr = sim.kubectl(&["get", "pod", "hr-app", "-o", "wide"]).await;
    hr.ok().stdout_has(&["Running", "node01"]);
    sim.kubectl(&["uncordon", "node01"]).await.ok();

    // The control plane holds only controller-owned pods (and DaemonSet pods): the drain completes.
    sim.kubectl(&[
        "drain",
        "controlplane",
        "--ignore-daemonsets",
        "--timeout=60s",
    ])
    .await
    .ok()
    .stdout_has(&["evicting pod default/blue-", "drained"]);
    // The evicted pods come back Running on node01.
    let mut on_node01 = false;
    for _ in 0..60 {
        let t = sim
            .kubectl(&["get", "pods", "-l", "app=blue", "-o", "wide"])
            .await;
        let text = t.ok().text().to_string();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        if rows.len() == 3
            && rows
                .iter()
                .all(|r| r.contains("Running") && r.contains("node01"))
        {
            on_node01 = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(on_node01, "blue runs on node01 after the drain");
    sim.kubectl(&["uncordon", "controlplane"]).await.ok();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let t = sim
        .kubectl(&["get", "pods", "-l", "app=blue", "-o", "wide"])
        .await;
    assert!(
        !t.ok().text().contains("controlplane"),
        "no pod moves back by itself:\n{t}"
    );
}

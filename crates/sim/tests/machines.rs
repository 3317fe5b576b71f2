//! Machines and the kubelet fleet on a paused clock: boot and registration, leases, the pod
//! lifecycle, graceful termination, power loss, reimage, failure modes, static pods and the HTTP
//! control API. The tests play the scheduler (bind) and the node lifecycle controller (marking
//! pods not ready) through the Cluster API where they need them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use theseus_sim::cluster::Cluster;
use theseus_sim::kubelet::{
    COMPLETE_ANNOTATION, CRASH_ANNOTATION, EXIT_ANNOTATION, KubeletConfig, STARTUP_ANNOTATION,
    spawn_kubelets,
};
use theseus_sim::machines::{
    FailureMode, MachineSpec, MachineStatus, Machines, PowerState, Reimage,
};
use theseus_sim::rest::DeleteOptions;
use theseus_sim::{ApiServer, ServerConfig};
use tokio::time::sleep;

struct Sim {
    server: Arc<ApiServer>,
    c: Cluster,
    m: Machines,
}

async fn sim() -> Sim {
    let server = ApiServer::new(ServerConfig {
        start_time: chrono::DateTime::from_timestamp(1_767_225_600, 0), // 2026-01-01
        ..Default::default()
    })
    .await;
    let c = Cluster::new(server.clone()).unwrap();
    let m = Machines::new(c.clone(), 42);
    spawn_kubelets(c.clone(), m.clone(), KubeletConfig::default());
    Sim { server, c, m }
}

/// A worker that boots in exactly 30 s and reimages in 120 s.
fn spec(name: &str) -> MachineSpec {
    MachineSpec {
        boot_seconds: 30.0,
        reimage_seconds: 120.0,
        jitter: 0.0,
        ..MachineSpec::new(name)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

impl Sim {
    async fn node(&self, name: &str) -> Option<Value> {
        self.c
            .get(&self.c.res.nodes, "", name)
            .await
            .ok()
            .map(|o| o.value.to_value())
    }

    async fn pod(&self, name: &str) -> Option<Value> {
        self.pod_in("default", name).await
    }

    async fn pod_in(&self, ns: &str, name: &str) -> Option<Value> {
        self.c
            .get(&self.c.res.pods, ns, name)
            .await
            .ok()
            .map(|o| o.value.to_value())
    }

    async fn lease_renew_time(&self, node: &str) -> String {
        let l = self
            .c
            .get(&self.c.res.leases, "kube-node-lease", node)
            .await
            .expect("the node has a lease");
        l.value["spec"]["renewTime"].as_str().unwrap().to_string()
    }

    /// Adds a machine and lets it boot.
    async fn up(&self, s: MachineSpec) -> MachineStatus {
        let boot = s.boot_seconds;
        self.m.add_machine(s).unwrap();
        sleep(secs(boot + 0.5)).await;
        let name = self.m.list().last().unwrap().name.clone();
        let st = self.m.get(&name).unwrap();
        assert_eq!(st.power, PowerState::On);
        st
    }

    /// Creates a pod and binds it to `node`, as the scheduler would.
    async fn run_pod(&self, name: &str, node: &str, annotations: Value, grace: Option<i64>) {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
        if let Some(g) = grace {
            p["spec"]["terminationGracePeriodSeconds"] = json!(g);
        }
        self.c.create(&self.c.res.pods, p).await.unwrap();
        self.c.bind("default", name, node).await.unwrap();
    }

    fn running(&self, name: &str) -> (bool, bool) {
        let r = self
            .m
            .running_view()
            .get("default", name)
            .expect("the pod is in the running view");
        (r.running, r.ready)
    }

    async fn delete_pod(&self, name: &str) {
        self.c
            .delete(&self.c.res.pods, "default", name, &DeleteOptions::default())
            .await
            .unwrap();
    }
}

fn cond<'a>(obj: &'a Value, t: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

fn cond_status(obj: &Value, t: &str) -> String {
    cond(obj, t)["status"].as_str().unwrap_or("").to_string()
}

#[tokio::test(start_paused = true)]
async fn a_machine_boots_and_registers_a_ready_node() {
    let s = sim().await;
    let st =
        s.m.add_machine(MachineSpec {
            zone: Some("zone-a".into()),
            ..spec("w-1")
        })
        .unwrap();
    assert_eq!(st.power, PowerState::Booting);
    assert_eq!(st.internal_ip, "10.0.0.10");
    sleep(secs(29.0)).await;
    assert!(s.node("w-1").await.is_none(), "still booting");
    assert_eq!(s.m.get("w-1").unwrap().power, PowerState::Booting);
    sleep(secs(1.5)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::On);
    assert_eq!(st.boots, 1);
    let n = s.node("w-1").await.expect("registered");
    assert_eq!(cond_status(&n, "Ready"), "True");
    assert_eq!(cond(&n, "Ready")["reason"], "KubeletReady");
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(cond_status(&n, t), "False", "{t}");
        assert!(cond(&n, t)["lastHeartbeatTime"].is_string());
    }
    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "w-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    let info = &n["status"]["nodeInfo"];
    assert_eq!(info["osImage"], "CentOS Linux 7 (Core)");
    assert_eq!(info["kernelVersion"], "3.10.0-1160.el7.x86_64");
    assert_eq!(info["kubeletVersion"], "v1.33.4");
    assert_eq!(info["containerRuntimeVersion"], "containerd://1.7.27");
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["bootID"], json!(st.boot_id));
    assert_eq!(info["machineID"], json!(st.machine_id));
    assert!(!st.boot_id.is_empty());
    assert_eq!(
        n["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.10"},
            {"type": "Hostname", "address": "w-1"}])
    );
    assert_eq!(n["status"]["capacity"]["pods"], "110");
    assert_eq!(n["status"]["allocatable"]["cpu"], "8");
    assert_eq!(n["spec"]["podCIDR"], "10.244.0.0/24");
    assert_eq!(
        n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        10250
    );
    // The Node is a valid core/v1 Node for typed clients.
    let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(n.clone()).unwrap();
    assert_eq!(typed.status.unwrap().node_info.unwrap().boot_id, st.boot_id);
    let lease =
        s.c.get(&s.c.res.leases, "kube-node-lease", "w-1")
            .await
            .unwrap();
    assert_eq!(lease.value["spec"]["holderIdentity"].as_str(), Some("w-1"));
    assert_eq!(
        lease.value["spec"]["leaseDurationSeconds"].as_i64(),
        Some(40)
    );
    assert_eq!(
        lease.value["metadata"]["ownerReferences"][0]["uid"],
        n["metadata"]["uid"]
    );
}

#[tokio::test(start_paused = true)]
async fn lease_renewals_advance_every_ten_seconds() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    let mut last = s.lease_renew_time("w-1").await;
    for _ in 0..3 {
        sleep(secs(10.0)).await;
        let now = s.lease_renew_time("w-1").await;
        assert!(now > last, "{now} after {last}");
        last = now;
    }
    // The node status is reposted at least every 5 minutes even without a change.
    let first = s.node("w-1").await.unwrap();
    let rv = first["metadata"]["resourceVersion"].clone();
    sleep(secs(60.0)).await;
    let unchanged = s.node("w-1").await.unwrap();
    assert_eq!(
        unchanged["metadata"]["resourceVersion"], rv,
        "nothing to report"
    );
    sleep(secs(241.0)).await;
    let later = s.node("w-1").await.unwrap();
    assert_ne!(
        cond(&later, "Ready")["lastHeartbeatTime"],
        cond(&first, "Ready")["lastHeartbeatTime"]
    );
    assert_eq!(
        cond(&later, "Ready")["lastTransitionTime"],
        cond(&first, "Ready")["lastTransitionTime"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_bound_pod_goes_pending_running_ready_after_its_startup_delay() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    s.run_pod("web-1", "w-1", json!({STARTUP_ANNOTATION: "5"}), None)
        .await;
    sleep(secs(0.5)).await;
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    assert_eq!(cond_status(&p, "PodScheduled"), "True");
    assert_eq!(cond_status(&p, "Initialized"), "True");
    assert_eq!(cond_status(&p, "ContainersReady"), "False");
    assert_eq!(cond_status(&p, "Ready"), "False");
    assert_eq!(p["status"]["hostIP"], "10.0.0.10");
    assert_eq!(s.running("web-1"), (false, false));

    sleep(secs(1.0)).await; // image pulled after 1 s
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.244.0."), "{ip}");
    assert_eq!(p["status"]["podIPs"], json!([{"ip": ip}]));
    assert!(p["status"]["startTime"].is_string());
    let cs = &p["status"]["containerStatuses"][0];
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert_eq!(cs["started"], true);
    assert_eq!(cs["ready"], false);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cond_status(&p, "Ready"), "False");
    assert_eq!(s.running("web-1"), (true, false));

    sleep(secs(3.0)).await; // 4.5 s after binding
    assert_eq!(
        cond_status(&s.pod("web-1").await.unwrap(), "Ready"),
        "False"
    );
    sleep(secs(1.0)).await; // 5.5 s
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(cond_status(&p, "Ready"), "True");
    assert_eq!(cond_status(&p, "ContainersReady"), "True");
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(s.running("web-1"), (true, true));
    let view = s.m.running_view().get("default", "web-1").unwrap();
    assert_eq!(view.ip.as_deref(), Some(ip.as_str()));
    assert_eq!(view.node, "w-1");

    // A second pod gets another address; the config default start-up is 2 s.
    s.run_pod("web-2", "w-1", json!({}), None).await;
    sleep(secs(2.5)).await;
    let p2 = s.pod("web-2").await.unwrap();
    assert_eq!(cond_status(&p2, "Ready"), "True");
    assert_ne!(p2["status"]["podIP"], json!(ip));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_runs_until_its_containers_exit() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    s.run_pod("slow", "w-1", json!({EXIT_ANNOTATION: "3"}), Some(30))
        .await;
    s.run_pod("quick", "w-1", json!({EXIT_ANNOTATION: "0"}), Some(30))
        .await;
    s.run_pod("capped", "w-1", json!({EXIT_ANNOTATION: "100"}), Some(5))
        .await;
    sleep(secs(3.0)).await;
    for p in ["slow", "quick", "capped"] {
        assert_eq!(s.running(p), (true, true), "{p}");
        s.delete_pod(p).await;
    }
    sleep(secs(0.5)).await;
    assert!(
        s.pod("quick").await.is_none(),
        "exit-seconds 0: gone at once"
    );
    assert!(s.m.running_view().get("default", "quick").is_none());
    sleep(secs(2.0)).await; // 2.5 s after the deletion
    let p = s.pod("slow").await.expect("still terminating");
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(cond_status(&p, "Ready"), "True");
    assert_eq!(s.running("slow"), (true, true));
    sleep(secs(1.0)).await; // 3.5 s
    assert!(
        s.pod("slow").await.is_none(),
        "gone once its containers exited"
    );
    assert!(s.pod("capped").await.is_some());
    sleep(secs(2.0)).await; // 5.5 s: the grace period caps the exit delay
    assert!(s.pod("capped").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn power_off_stops_the_lease_and_kills_the_pods_then_they_restart_at_boot() {
    let s = sim().await;
    let before = s.up(spec("w-1")).await;
    s.run_pod("web-1", "w-1", json!({}), None).await;
    s.run_pod("gone-while-off", "w-1", json!({}), Some(30))
        .await;
    sleep(secs(3.0)).await;
    let ip = s.pod("web-1").await.unwrap()["status"]["podIP"].clone();
    assert_eq!(s.running("web-1"), (true, true));

    let st = s.m.power_off("w-1").unwrap();
    assert_eq!(st.power, PowerState::Off);
    sleep(secs(0.1)).await;
    assert_eq!(s.running("web-1"), (false, false), "dead from that instant");
    // ... but the API still says Running and Ready until the node lifecycle controller acts.
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(cond_status(&p, "Ready"), "True");
    assert!(s.node("w-1").await.is_some(), "the Node is not deleted");

    // Deleted while the machine is off: nobody confirms it.
    s.delete_pod("gone-while-off").await;
    let renew = s.lease_renew_time("w-1").await;
    sleep(secs(60.0)).await;
    assert_eq!(s.lease_renew_time("w-1").await, renew, "no renewal");
    // The node lifecycle controller's check: renewTime + leaseDurationSeconds is past.
    let renewed = chrono::DateTime::parse_from_rfc3339(&renew).unwrap();
    assert!(renewed + chrono::Duration::seconds(40) < s.server.clock.now());
    assert!(s.pod("gone-while-off").await.is_some(), "still terminating");

    // Play the node lifecycle controller: mark the pod not ready.
    s.c.merge_patch(
        &s.c.res.pods,
        "default",
        "web-1",
        Some("status"),
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    )
    .await
    .unwrap();

    s.m.power_on("w-1").unwrap();
    sleep(secs(30.5)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::On);
    assert_ne!(st.boot_id, before.boot_id);
    let n = s.node("w-1").await.unwrap();
    assert_eq!(n["status"]["nodeInfo"]["bootID"], json!(st.boot_id));
    assert!(s.lease_renew_time("w-1").await > renew);
    assert!(s.pod("gone-while-off").await.is_none(), "confirmed at boot");
    sleep(secs(3.0)).await;
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(cond_status(&p, "Ready"), "True");
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Unknown");
    assert_eq!(p["status"]["podIP"], ip, "its sandbox address is kept");
    assert_eq!(s.running("web-1"), (true, true));
}

#[tokio::test(start_paused = true)]
async fn reimage_brings_the_node_back_with_the_new_os_same_name_and_ip() {
    let s = sim().await;
    let before = s.up(spec("w-1")).await;
    s.run_pod("web-1", "w-1", json!({}), None).await;
    sleep(secs(3.0)).await;
    let uid = s.node("w-1").await.unwrap()["metadata"]["uid"].clone();

    let st =
        s.m.reimage(
            "w-1",
            Reimage::new("Ubuntu 22.04.4 LTS", "5.15.0-119-generic", "v1.34.0"),
        )
        .unwrap();
    assert_eq!(st.power, PowerState::Off, "powered off first");
    assert_eq!(st.operation.as_deref(), Some("Reimaging"));
    sleep(secs(0.1)).await;
    assert_eq!(s.running("web-1"), (false, false));
    // Powering on during the reimage does not interrupt it.
    s.m.power_on("w-1").unwrap();
    sleep(secs(119.0)).await;
    assert_eq!(s.m.get("w-1").unwrap().power, PowerState::Off);
    sleep(secs(1.0)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::Booting);
    assert_eq!(st.os_image, "Ubuntu 22.04.4 LTS");
    assert!(st.operation.is_none());
    sleep(secs(30.5)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::On);
    let n = s.node("w-1").await.unwrap();
    assert_eq!(n["metadata"]["uid"], uid, "the same Node object");
    assert_eq!(cond_status(&n, "Ready"), "True");
    let info = &n["status"]["nodeInfo"];
    assert_eq!(info["osImage"], "Ubuntu 22.04.4 LTS");
    assert_eq!(info["kernelVersion"], "5.15.0-119-generic");
    assert_eq!(info["kubeletVersion"], "v1.34.0");
    assert_ne!(info["bootID"], json!(before.boot_id));
    assert_ne!(info["machineID"], json!(before.machine_id));
    assert_eq!(info["systemUUID"], json!(before.system_uuid));
    assert_eq!(n["status"]["addresses"][0]["address"], "10.0.0.10");
    sleep(secs(3.0)).await;
    assert_eq!(s.running("web-1"), (true, true));
}

#[tokio::test(start_paused = true)]
async fn a_machine_that_never_boots_stays_booting() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    s.m.set_failure("w-1", FailureMode::NeverBoots).unwrap();
    s.m.power_off("w-1").unwrap();
    s.m.power_on("w-1").unwrap();
    let renew = s.lease_renew_time("w-1").await;
    sleep(secs(3600.0)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::Booting);
    assert_eq!(st.boots, 1);
    assert_eq!(s.lease_renew_time("w-1").await, renew);
    // Repaired: the next power cycle boots.
    s.m.set_failure("w-1", FailureMode::None).unwrap();
    s.m.power_off("w-1").unwrap();
    s.m.power_on("w-1").unwrap();
    sleep(secs(31.0)).await;
    assert_eq!(s.m.get("w-1").unwrap().power, PowerState::On);
    assert!(s.lease_renew_time("w-1").await > renew);
}

#[tokio::test(start_paused = true)]
async fn a_machine_can_come_back_not_ready() {
    let s = sim().await;
    s.up(MachineSpec {
        failure: FailureMode::NotReady,
        ..spec("w-1")
    })
    .await;
    let n = s.node("w-1").await.expect("registers anyway");
    assert_eq!(cond_status(&n, "Ready"), "False");
    assert_eq!(cond(&n, "Ready")["reason"], "KubeletNotReady");
    let renew = s.lease_renew_time("w-1").await;
    s.run_pod("web-1", "w-1", json!({}), None).await;
    sleep(secs(20.0)).await;
    assert!(
        s.lease_renew_time("w-1").await > renew,
        "the lease is renewed"
    );
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(p["status"]["phase"], "Pending", "no pod network");
    assert_eq!(s.running("web-1"), (false, false));
    // The network plugin recovers.
    s.m.set_failure("w-1", FailureMode::None).unwrap();
    sleep(secs(0.5)).await;
    let n = s.node("w-1").await.unwrap();
    assert_eq!(cond_status(&n, "Ready"), "True");
    sleep(secs(2.0)).await;
    assert_eq!(s.running("web-1"), (true, true));
    assert_eq!(s.pod("web-1").await.unwrap()["status"]["phase"], "Running");
}

#[tokio::test(start_paused = true)]
async fn a_failed_reimage_comes_back_with_the_old_os() {
    let s = sim().await;
    let before = s
        .up(MachineSpec {
            failure: FailureMode::ReimageFails,
            ..spec("w-1")
        })
        .await;
    s.m.reimage(
        "w-1",
        Reimage::new("Ubuntu 22.04.4 LTS", "5.15.0-119-generic", "v1.34.0"),
    )
    .unwrap();
    sleep(secs(151.0)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::On);
    assert_eq!(st.os_image, "CentOS Linux 7 (Core)");
    let n = s.node("w-1").await.unwrap();
    assert_eq!(cond_status(&n, "Ready"), "True");
    assert_eq!(n["status"]["nodeInfo"]["osImage"], "CentOS Linux 7 (Core)");
    assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.33.4");
    assert_ne!(n["status"]["nodeInfo"]["bootID"], json!(before.boot_id));
}

#[tokio::test(start_paused = true)]
async fn a_control_plane_machine_publishes_mirror_pods() {
    let s = sim().await;
    s.up(MachineSpec {
        boot_seconds: 30.0,
        reimage_seconds: 120.0,
        jitter: 0.0,
        ..MachineSpec::control_plane("cp-1")
    })
    .await;
    sleep(secs(3.0)).await;
    let n = s.node("cp-1").await.unwrap();
    assert_eq!(
        n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert_eq!(
        n["spec"]["taints"],
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    );
    for (component, image) in [
        ("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.33.4"),
        (
            "kube-controller-manager",
            "registry.k8s.io/kube-controller-manager:v1.33.4",
        ),
        ("kube-scheduler", "registry.k8s.io/kube-scheduler:v1.33.4"),
        ("etcd", "registry.k8s.io/etcd:3.5.21-0"),
    ] {
        let p = s
            .pod_in("kube-system", &format!("{component}-cp-1"))
            .await
            .unwrap_or_else(|| panic!("{component} mirror pod"));
        assert!(
            p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
            "{component}"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["uid"],
            n["metadata"]["uid"]
        );
        assert_eq!(p["spec"]["containers"][0]["image"], image);
        assert_eq!(p["spec"]["nodeName"], "cp-1");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(cond_status(&p, "Ready"), "True");
        assert_eq!(p["status"]["podIP"], "10.0.0.10", "host network");
    }
    // A mirror pod deleted by hand is published again.
    s.c.delete(
        &s.c.res.pods,
        "kube-system",
        "kube-scheduler-cp-1",
        &DeleteOptions {
            grace_period: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    sleep(secs(2.0)).await;
    assert!(
        s.pod_in("kube-system", "kube-scheduler-cp-1")
            .await
            .is_some()
    );

    // After a reimage to a new kubelet, the control-plane pods run the new version.
    let old_uid = s
        .pod_in("kube-system", "kube-apiserver-cp-1")
        .await
        .unwrap()["metadata"]["uid"]
        .clone();
    s.m.reimage(
        "cp-1",
        Reimage::new("Ubuntu 22.04.4 LTS", "5.15.0-119-generic", "v1.34.0"),
    )
    .unwrap();
    sleep(secs(155.0)).await;
    let api = s
        .pod_in("kube-system", "kube-apiserver-cp-1")
        .await
        .unwrap();
    assert_eq!(
        api["spec"]["containers"][0]["image"],
        "registry.k8s.io/kube-apiserver:v1.34.0"
    );
    assert_ne!(api["metadata"]["uid"], old_uid);
    assert_eq!(cond_status(&api, "Ready"), "True");
    let etcd = s.pod_in("kube-system", "etcd-cp-1").await.unwrap();
    assert_eq!(
        etcd["spec"]["containers"][0]["image"],
        "registry.k8s.io/etcd:3.5.21-0"
    );
    assert_eq!(
        etcd["status"]["containerStatuses"][0]["restartCount"], 1,
        "the same static pod, restarted by the reboot"
    );
}

#[tokio::test(start_paused = true)]
async fn remove_node_deletes_the_node_and_the_next_boot_registers_it_again() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    let uid = s.node("w-1").await.unwrap()["metadata"]["uid"].clone();
    s.m.remove_node("w-1").await.unwrap();
    assert!(s.node("w-1").await.is_none());
    sleep(secs(60.0)).await;
    assert!(
        s.node("w-1").await.is_none(),
        "a running kubelet does not re-register"
    );
    s.m.power_off("w-1").unwrap();
    s.m.power_on("w-1").unwrap();
    sleep(secs(30.5)).await;
    let n = s.node("w-1").await.expect("registered again at boot");
    assert_ne!(n["metadata"]["uid"], uid);
    assert_eq!(cond_status(&n, "Ready"), "True");
    let lease =
        s.c.get(&s.c.res.leases, "kube-node-lease", "w-1")
            .await
            .unwrap();
    assert_eq!(
        lease.value["metadata"]["ownerReferences"][0]["uid"], n["metadata"]["uid"],
        "the Lease belongs to the new Node"
    );
    assert!(matches!(
        s.m.remove_node("nope").await,
        Err(theseus_sim::machines::MachineError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn action_counters_count_power_offs_reimages_and_node_removals() {
    let s = sim().await;
    let st = s.up(spec("w-1")).await;
    assert_eq!((st.power_offs, st.reimages, st.node_removals), (0, 0, 0));

    // A power-off of a running machine counts; a second one on an Off machine does not.
    s.m.power_off("w-1").unwrap();
    s.m.power_off("w-1").unwrap();
    assert_eq!(s.m.get("w-1").unwrap().power_offs, 1);

    // remove-node counts only when it deleted a Node.
    s.m.remove_node("w-1").await.unwrap();
    assert!(s.node("w-1").await.is_none());
    s.m.remove_node("w-1").await.unwrap();
    assert_eq!(s.m.get("w-1").unwrap().node_removals, 1);

    // An accepted reimage counts (its implied power-off does not); a refused one does not.
    let r = Reimage::new("Ubuntu 22.04.4 LTS", "5.15.0-119-generic", "v1.34.0");
    s.m.reimage("w-1", r.clone()).unwrap();
    assert!(
        s.m.reimage("w-1", r.clone()).is_err(),
        "one reimage at a time"
    );
    assert!(
        s.m.reimage("w-1", Reimage::new("", "", "")).is_err(),
        "invalid"
    );
    sleep(secs(120.0 + 30.5)).await;
    let st = s.m.get("w-1").unwrap();
    assert_eq!(st.power, PowerState::On);
    assert!(s.node("w-1").await.is_some(), "registered again at boot");
    assert_eq!((st.power_offs, st.reimages, st.node_removals), (1, 1, 1));

    // A reimage of a running machine does not count as a power-off.
    s.m.reimage("w-1", r).unwrap();
    let st = s.m.get("w-1").unwrap();
    assert_eq!((st.power_offs, st.reimages, st.node_removals), (1, 2, 1));

    // The control API serializes them in camelCase.
    let (code, body) =
        s.m.handle("GET", &["sim", "v1", "machines", "w-1"], b"")
            .await;
    assert_eq!(code, 200);
    assert_eq!(body["reimages"], 2);
    assert_eq!(body["powerOffs"], 1);
    assert_eq!(body["nodeRemovals"], 1);
    let (code, body) =
        s.m.handle(
            "POST",
            &["sim", "v1", "machines", "w-1", "remove-node"],
            b"",
        )
        .await;
    assert_eq!((code, body["nodeRemovals"].as_i64()), (200, Some(2)));
    let (code, body) =
        s.m.handle("POST", &["sim", "v1", "machines", "nope", "power-off"], b"")
            .await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test(start_paused = true)]
async fn the_kubelet_restores_readiness_that_others_overwrote() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    s.run_pod("web-1", "w-1", json!({}), None).await;
    sleep(secs(3.0)).await;
    s.c.merge_patch(
        &s.c.res.pods,
        "default",
        "web-1",
        Some("status"),
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"},
            {"type": "DisruptionTarget", "status": "True", "reason": "Test"}]}}),
    )
    .await
    .unwrap();
    sleep(secs(0.1)).await;
    let p = s.pod("web-1").await.unwrap();
    assert_eq!(cond_status(&p, "Ready"), "True");
    assert_eq!(
        cond_status(&p, "DisruptionTarget"),
        "True",
        "others' conditions kept"
    );
}

#[tokio::test(start_paused = true)]
async fn crashing_containers_restart_with_back_off() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    s.run_pod("crashy", "w-1", json!({CRASH_ANNOTATION: "20"}), None)
        .await;
    sleep(secs(3.0)).await;
    assert_eq!(s.running("crashy"), (true, true));
    // Started at 1 s, crashes at 21 s and restarts at once.
    sleep(secs(18.5)).await;
    let p = s.pod("crashy").await.unwrap();
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert!(cs["state"]["running"].is_object());
    assert_eq!(s.running("crashy"), (true, false));
    // Second crash at 41 s: back-off 10 s.
    sleep(secs(20.0)).await;
    let p = s.pod("crashy").await.unwrap();
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 2);
    assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(s.running("crashy"), (false, false));
    sleep(secs(10.0)).await;
    assert!(s.running("crashy").0);
}

#[tokio::test(start_paused = true)]
async fn pods_that_must_not_restart_complete_or_fail() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    for (name, ann) in [
        ("job", json!({COMPLETE_ANNOTATION: "30"})),
        ("once", json!({})),
    ] {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": {"restartPolicy": "Never",
                "containers": [{"name": "app", "image": "busybox:1.36"}]}});
        s.c.create(&s.c.res.pods, p).await.unwrap();
        s.c.bind("default", name, "w-1").await.unwrap();
    }
    sleep(secs(3.0)).await;
    assert_eq!(s.running("job"), (true, true));
    sleep(secs(30.0)).await;
    let job = s.pod("job").await.unwrap();
    assert_eq!(job["status"]["phase"], "Succeeded");
    assert_eq!(
        job["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(cond(&job, "Ready")["reason"], "PodCompleted");
    assert_eq!(s.running("job"), (false, false));
    // A reboot kills the other one, and restartPolicy Never keeps it dead.
    s.m.power_off("w-1").unwrap();
    s.m.power_on("w-1").unwrap();
    sleep(secs(31.0)).await;
    let once = s.pod("once").await.unwrap();
    assert_eq!(once["status"]["phase"], "Failed");
    assert_eq!(
        once["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        255
    );
    assert_eq!(s.pod("job").await.unwrap()["status"]["phase"], "Succeeded");
    // A terminal phase set by someone else (pod GC) is final: the kubelet stops the pod.
    s.run_pod("orphan", "w-1", json!({}), None).await;
    sleep(secs(3.0)).await;
    s.c.merge_patch(
        &s.c.res.pods,
        "default",
        "orphan",
        Some("status"),
        json!({"status": {"phase": "Failed", "reason": "PodGC"}}),
    )
    .await
    .unwrap();
    sleep(secs(15.0)).await;
    assert_eq!(s.pod("orphan").await.unwrap()["status"]["phase"], "Failed");
    assert_eq!(s.running("orphan"), (false, false));
}

#[tokio::test(start_paused = true)]
async fn machines_already_on_adopt_their_running_pods() {
    let s = sim().await;
    // A scenario-loaded pod already running on cp-1.
    s.server
        .create_internal(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "w-1", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2025-12-31T00:00:00Z"}}}]}}))
        .await
        .unwrap();
    s.m.add_machine(MachineSpec {
        power: Some(PowerState::On),
        ..spec("w-1")
    })
    .unwrap();
    // And one on a node no machine stands for: not the fleet's.
    s.server
        .create_internal(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "elsewhere", "namespace": "default"},
            "spec": {"nodeName": "unmanaged", "containers": [{"name": "app", "image": "x:1"}]},
            "status": {"phase": "Running"}}))
        .await
        .unwrap();
    sleep(secs(0.5)).await;
    assert!(s.m.running_view().get("default", "elsewhere").is_none());
    assert!(s.node("w-1").await.is_some(), "registers without booting");
    assert_eq!(s.running("web-1"), (true, true));
    let v = s.m.running_view().get("default", "web-1").unwrap();
    assert_eq!(v.ip.as_deref(), Some("10.244.0.7"));
    // A new pod does not reuse the adopted address.
    for i in 0..8 {
        s.run_pod(&format!("p-{i}"), "w-1", json!({}), None).await;
    }
    sleep(secs(3.0)).await;
    for i in 0..8 {
        let p = s.pod(&format!("p-{i}")).await.unwrap();
        assert_ne!(p["status"]["podIP"], "10.244.0.7");
    }
    assert_eq!(
        s.pod("web-1").await.unwrap()["status"]["containerStatuses"][0]["restartCount"],
        0
    );
}

#[tokio::test(start_paused = true)]
async fn the_http_control_api() {
    let s = sim().await;
    s.up(spec("w-1")).await;
    let (code, body) = s.m.handle("GET", &["sim", "v1", "machines"], b"").await;
    assert_eq!(code, 200);
    assert_eq!(body["items"][0]["name"], "w-1");
    assert_eq!(body["items"][0]["power"], "On");
    assert_eq!(body["items"][0]["internalIP"], "10.0.0.10");

    let (code, body) =
        s.m.handle("GET", &["sim", "v1", "machines", "w-1"], b"")
            .await;
    assert_eq!(code, 200);
    assert_eq!(body["osImage"], "CentOS Linux 7 (Core)");
    assert_eq!(body["kubeletVersion"], "v1.33.4");
    assert!(body["since"].is_string());
    let (code, body) =
        s.m.handle("GET", &["sim", "v1", "machines", "nope"], b"")
            .await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");

    let add = serde_json::to_vec(&json!({"name": "w-2", "bootSeconds": 5, "jitter": 0})).unwrap();
    let (code, body) = s.m.handle("POST", &["sim", "v1", "machines"], &add).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["power"], "Booting");
    assert_eq!(body["internalIP"], "10.0.0.11");
    let (code, _) = s.m.handle("POST", &["sim", "v1", "machines"], &add).await;
    assert_eq!(code, 409);
    sleep(secs(5.5)).await;
    assert!(s.node("w-2").await.is_some());

    let path = |a: &'static str| vec!["sim", "v1", "machines", "w-2", a];
    let (code, body) = s.m.handle("POST", &path("power-off"), b"").await;
    assert_eq!((code, body["power"].as_str()), (200, Some("Off")));
    let (code, body) = s.m.handle("POST", &path("power-on"), b"").await;
    assert_eq!((code, body["power"].as_str()), (200, Some("Booting")));
    let reimage = serde_json::to_vec(&json!({"osImage": "Ubuntu 22.04.4 LTS",
        "kernelVersion": "5.15.0-119-generic", "kubeletVersion": "v1.34.0"}))
    .unwrap();
    let (code, body) = s.m.handle("POST", &path("reimage"), &reimage).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["operation"], "Reimaging");
    assert_eq!(body["reimage"]["osImage"], "Ubuntu 22.04.4 LTS");
    let (code, _) = s.m.handle("POST", &path("reimage"), &reimage).await;
    assert_eq!(code, 409, "one reimage at a time");
    let (code, _) = s.m.handle("POST", &path("reimage"), b"{not json").await;
    assert_eq!(code, 400);
    let (code, body) =
        s.m.handle("POST", &path("failure"), br#"{"failure": "NotReady"}"#)
            .await;
    assert_eq!((code, body["failure"].as_str()), (200, Some("NotReady")));
    let (code, _) = s.m.handle("POST", &path("explode"), b"").await;
    assert_eq!(code, 404);
    let (code, _) = s.m.handle("DELETE", &path("power-off"), b"").await;
    assert_eq!(code, 405);
    let (code, _) = s.m.handle("GET", &["api", "v1", "nodes"], b"").await;
    assert_eq!(code, 404);

    let (code, body) = s.m.handle("POST", &path("remove-node"), b"").await;
    assert_eq!(code, 200, "{body}");
    assert!(s.node("w-2").await.is_none());
    let back: MachineStatus = serde_json::from_value(body).unwrap();
    assert_eq!(back.name, "w-2");
    sleep(secs(300.0 * 1.1 + 6.0)).await;
    let (_, body) =
        s.m.handle("GET", &["sim", "v1", "machines", "w-2"], b"")
            .await;
    assert_eq!(body["power"], "On");
    assert_eq!(body["kubeletVersion"], "v1.34.0");
    let n = s
        .node("w-2")
        .await
        .expect("registered again after the reimage");
    assert_eq!(cond_status(&n, "Ready"), "False", "NotReady failure mode");
}

#[tokio::test(start_paused = true)]
async fn a_fleet_of_machines_runs_its_pods() {
    let s = sim().await;
    for i in 0..50 {
        s.m.add_machine(MachineSpec {
            power: Some(PowerState::On),
            ..spec(&format!("n-{i:03}"))
        })
        .unwrap();
    }
    sleep(secs(1.0)).await;
    for i in 0..1000 {
        s.run_pod(
            &format!("p-{i:04}"),
            &format!("n-{:03}", i % 50),
            json!({}),
            None,
        )
        .await;
    }
    sleep(secs(3.0)).await;
    let view = s.m.running_view().snapshot();
    assert_eq!(view.len(), 1000);
    assert!(view.values().all(|r| r.running && r.ready));
    let ips: std::collections::BTreeSet<_> = view.values().map(|r| r.ip.clone()).collect();
    assert_eq!(ips.len(), 1000, "unique pod IPs");
    let (nodes, _) = s.c.list(&s.c.res.nodes, None).await.unwrap();
    assert_eq!(nodes.len(), 50);
    // Deterministic: the same seed gives the same boot ids.
    let again = sim().await;
    again
        .m
        .add_machine(MachineSpec {
            power: Some(PowerState::On),
            ..spec("n-000")
        })
        .unwrap();
    assert_eq!(
        again.m.get("n-000").unwrap().boot_id,
        s.m.get("n-000").unwrap().boot_id
    );
}

/// 5,000 nodes and 150,000 pods: `cargo test --release -p theseus-sim --test machines -- --ignored`.
#[tokio::test(start_paused = true)]
#[ignore = "scale run, minutes in debug builds"]
async fn scale_5000_nodes_150000_pods() {
    let s = sim().await;
    let wall = std::time::Instant::now();
    for i in 0..5000 {
        s.m.add_machine(MachineSpec {
            power: Some(PowerState::On),
            ..spec(&format!("n-{i:04}"))
        })
        .unwrap();
    }
    sleep(secs(1.0)).await;
    eprintln!("5000 nodes registered: {:?}", wall.elapsed());
    for i in 0..150_000 {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p-{i:06}"), "namespace": "default"},
            "spec": {"nodeName": format!("n-{:04}", i % 5000),
                "containers": [{"name": "app", "image": "nginx:1.27"}]}});
        s.c.create(&s.c.res.pods, p).await.unwrap();
        if i % 100 == 0 {
            // As any writer must: let the informers keep up with the watch history.
            tokio::task::yield_now().await;
        }
    }
    eprintln!("150000 pods created: {:?}", wall.elapsed());
    sleep(secs(5.0)).await;
    eprintln!("5 s later: {:?}", wall.elapsed());
    let view = s.m.running_view().snapshot();
    assert_eq!(view.len(), 150_000);
    assert!(view.values().all(|r| r.running && r.ready));
    sleep(secs(60.0)).await;
    eprintln!("one more minute of heartbeats: {:?}", wall.elapsed());
    for i in 0..100 {
        s.m.power_off(&format!("n-{i:04}")).unwrap();
    }
    sleep(secs(1.0)).await;
    let down =
        s.m.running_view()
            .read()
            .values()
            .filter(|r| !r.running)
            .count();
    assert_eq!(down, 3000);
    eprintln!("100 machines off: {:?}", wall.elapsed());
}

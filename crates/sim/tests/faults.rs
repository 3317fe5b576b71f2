//! Fault injection end to end, in-process on virtual time: API errors and latency seen by a
//! kube-rs client, dropped watches, slow kubelets, a machine crash at a time, and the control API.

use std::time::Duration;

use axum::body::Body;
use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, WatchParams};
use serde_json::{Value, json};
use theseus_sim::faults::FaultSpec;
use theseus_sim::scenario::Scenario;
use theseus_sim::sim::Simulation;
use tower::ServiceExt;

fn scenario(faults: &str) -> String {
    format!(
        r#"
apiVersion: sim.theseus.io/v1alpha1
kind: Scenario
seed: 5
timing: {{bootSeconds: 30, reimageSeconds: 60, jitterSeconds: 0, podStartupSeconds: 5, podExitSeconds: 1}}
nodePools:
- {{name: workers, count: 3, namePattern: "w{{index}}", ipStart: 10.1.0.1}}
workloads:
- {{kind: Deployment, name: web, replicas: 3, cpu: 100m, antiAffinity: hostname}}
faults:
{faults}
"#
    )
}

async fn start(faults: &str) -> Simulation {
    let s = Scenario::parse("test", &scenario(faults)).unwrap();
    let e = s.expand("test").unwrap();
    let sim = Simulation::start(&e).await.unwrap();
    sim.wait_steady(Duration::from_secs(600)).await.unwrap();
    sim
}

fn spec(yaml: &str) -> FaultSpec {
    FaultSpec::from_json(&serde_yaml::from_str::<Value>(yaml).unwrap()).unwrap()
}

async fn control(sim: &Simulation, method: &str, body: &str) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri("/sim/v1/faults")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = sim.router().oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn api_errors_hit_clients_but_not_the_control_plane() {
    // Half of all pod lists fail with 503, and each takes 2 s; the cluster still settles, since
    // the simulated control plane does not go through the HTTP layer.
    let sim = start("- {kind: ApiError, verbs: [list], resources: [pods], rate: 0.5, code: 503, latencySeconds: 2}").await;
    let client = Client::new(sim.router(), "default");
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..40 {
        let t = tokio::time::Instant::now();
        match pods.list(&ListParams::default()).await {
            Ok(l) => {
                ok += 1;
                assert_eq!(l.items.len(), 3);
            }
            Err(kube::Error::Api(s)) => {
                failed += 1;
                assert_eq!(s.code, 503);
                assert_eq!(s.reason, "ServiceUnavailable");
                assert!(s.message.contains("injected fault"), "{}", s.message);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert!(t.elapsed() >= Duration::from_secs(2), "latency is added");
    }
    assert!(ok > 5 && failed > 5, "{ok} succeeded, {failed} failed");
    // Other resources are untouched, and without delay.
    let t = tokio::time::Instant::now();
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    assert!(t.elapsed() < Duration::from_secs(1));

    let (code, listed) = control(&sim, "GET", "").await;
    assert_eq!(code, 200);
    assert_eq!(listed["faults"][0]["kind"], "ApiError");
    assert_eq!(listed["faults"][0]["fired"], json!(failed));
    // Cleared: every list succeeds.
    let (code, cleared) = control(&sim, "DELETE", "").await;
    assert_eq!((code, cleared["cleared"].clone()), (200, json!(1)));
    for _ in 0..10 {
        pods.list(&ListParams::default()).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_asks_the_client_to_retry_after_a_second() {
    let sim = start("  []").await;
    sim.add_fault(spec(
        "{kind: ApiError, verbs: [get], resources: [nodes], code: 429}",
    ))
    .unwrap();
    let req = Request::builder()
        .uri("/api/v1/nodes/w1")
        .body(Body::empty())
        .unwrap();
    let resp = sim.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_watches_end_and_clients_can_watch_again() {
    let sim = start("- {kind: WatchDrop, resources: [pods], afterSeconds: 30}").await;
    let pods: Api<Pod> = Api::all(Client::new(sim.router(), "default"));
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .unwrap()
        .boxed();
    while stream.next().await.is_some() {}
    let lived = start.elapsed();
    assert!(
        lived >= Duration::from_secs(30) && lived < Duration::from_secs(40),
        "the watch ended after {lived:?}, not after the fault's 30 s"
    );
    // Node watches are not affected: they run until their own timeout.
    let nodes: Api<Node> = Api::all(Client::new(sim.router(), "default"));
    let start = tokio::time::Instant::now();
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    while stream.next().await.is_some() {}
    assert!(start.elapsed() >= Duration::from_secs(60));
}

async fn ready_pod_on(sim: &Simulation, node: &str) -> bool {
    let (pods, _) = sim.cluster.list(&sim.cluster.res.pods, None).await.unwrap();
    pods.iter().any(|p| {
        p.value["spec"]["nodeName"] == node
            && p.value["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    })
}

#[tokio::test(start_paused = true)]
async fn a_slow_kubelet_starts_its_pods_later() {
    let sim = start("- {kind: SlowKubelet, nodes: [w2], extraStartupSeconds: 60}").await;
    // Restart every pod: on w1 and w3 they are Ready after the 5 s start-up, on w2 a minute later.
    let (pods, _) = sim.cluster.list(&sim.cluster.res.pods, None).await.unwrap();
    for p in &pods {
        let (ns, name) = theseus_sim::cluster::ns_name(&p.value);
        sim.cluster
            .delete(&sim.cluster.res.pods, ns, name, &Default::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(ready_pod_on(&sim, "w1").await && ready_pod_on(&sim, "w3").await);
    assert!(!ready_pod_on(&sim, "w2").await, "w2's kubelet is slow");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(ready_pod_on(&sim, "w2").await);
}

fn node_ready(v: &Value) -> Option<String> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

#[tokio::test(start_paused = true)]
async fn a_machine_crashes_at_its_time_and_boots_again() {
    let sim = start("- {kind: MachineCrash, machine: w3, atSeconds: 600, downSeconds: 300}").await;
    let node = |sim: &Simulation| {
        let c = sim.cluster.clone();
        async move {
            let n = c.get(&c.res.nodes, "", "w3").await.unwrap();
            node_ready(&n.value.to_value())
        }
    };
    assert_eq!(node(&sim).await.as_deref(), Some("True"));
    // wait_steady took some of the 600 s; by 700 s after start the crash is 40+ s old.
    tokio::time::sleep(Duration::from_secs(700)).await;
    assert_eq!(
        sim.machines.get("w3").unwrap().power,
        theseus_sim::machines::PowerState::Off
    );
    assert_eq!(node(&sim).await.as_deref(), Some("Unknown"));
    // Down for 300 s, then it boots (30 s) and its kubelet reports Ready again.
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(node(&sim).await.as_deref(), Some("True"));
    let (_, listed) = control(&sim, "GET", "").await;
    assert_eq!(listed["faults"][0]["fired"], json!(1));
}

#[tokio::test(start_paused = true)]
async fn bad_faults_are_refused_with_the_reason() {
    let sim = start("  []").await;
    for (body, want) in [
        ("{", "not JSON"),
        (
            r#"{"kind": "ApiError", "code": 418}"#,
            "code must be 429, 500 or 503",
        ),
        (
            r#"{"kind": "MachineCrash", "machine": "w9", "atSeconds": 1}"#,
            "machine \"w9\" does not exist",
        ),
        (r#"{"kind": "Volcano"}"#, "unknown variant"),
    ] {
        let (code, status) = control(&sim, "POST", body).await;
        assert_eq!(code, 400, "{body}");
        let msg = status["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let (code, created) = control(
        &sim,
        "POST",
        r#"{"kind": "SlowKubelet", "extraStartupSeconds": 5}"#,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(created["faults"].as_array().map(Vec::len), Some(1));
    // A scenario with a bad fault does not expand, and names the entry.
    let bad = Scenario::parse(
        "test",
        &scenario("- {kind: MachineCrash, machine: nope, atSeconds: 5}"),
    )
    .unwrap();
    let err = bad.expand("test").unwrap_err().to_string();
    assert!(err.contains("faults[0].machine"), "{err}");
}

//! Property test: random methods, paths, queries, headers and bodies never panic the API server,
//! never hang it, and always get a valid Status or object back.

use std::sync::Arc;

use axum::body::Body;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use theseus_sim::{ApiServer, ServerConfig, scenario};
use tower::ServiceExt;

const SEGMENTS: &[&str] = &[
    "api",
    "apis",
    "v1",
    "apps",
    "policy",
    "namespaces",
    "default",
    "kube-system",
    "nowhere",
    "pods",
    "nodes",
    "deployments",
    "configmaps",
    "poddisruptionbudgets",
    "customresourcedefinitions",
    "apiextensions.k8s.io",
    "status",
    "scale",
    "eviction",
    "binding",
    "finalize",
    "watch",
    "web",
    "worker-1",
    "web-7d4b9c-abcde",
    "%zz",
    "..",
    "x y",
    "version",
    "healthz",
    "openapi",
    "",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "application/json; charset=utf-8",
    "",
];
const ACCEPTS: &[&str] = &[
    "application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
    "application/json;as=PartialObjectMetadata;v=v1beta1;g=meta.k8s.io",
    "application/vnd.kubernetes.protobuf",
    "*/*",
    "",
    "garbage;;;=",
];
const QUERY_KEYS: &[&str] = &[
    "watch",
    "limit",
    "continue",
    "labelSelector",
    "fieldSelector",
    "resourceVersion",
    "resourceVersionMatch",
    "dryRun",
    "timeoutSeconds",
    "gracePeriodSeconds",
    "propagationPolicy",
    "allowWatchBookmarks",
    "includeObject",
    "fieldManager",
    "sendInitialEvents",
];

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9]{0,8}".prop_map(Value::from),
    ];
    let object = (
        prop::sample::select(vec![
            "v1",
            "apps/v1",
            "policy/v1",
            "example.com/v1",
            "",
            "v2",
        ]),
        prop::sample::select(vec![
            "Pod",
            "Node",
            "ConfigMap",
            "Deployment",
            "Eviction",
            "Scale",
            "Binding",
            "DeleteOptions",
            "Widget",
            "",
        ]),
        prop::option::of("[a-z0-9.-]{0,12}"),
        prop::collection::btree_map("[a-z]{1,8}", json_value.clone(), 0..4),
        prop::collection::btree_map("[a-zA-Z]{1,8}", json_value, 0..4),
    )
        .prop_map(|(av, kind, name, spec, extra)| {
            let mut o = serde_json::json!({"apiVersion": av, "kind": kind,
                "metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec});
            for (k, v) in extra {
                o[k] = v;
            }
            serde_json::to_vec(&o).unwrap_or_default()
        });
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..64),
        object,
        Just(br#"[{"op":"replace","path":"/spec/unschedulable","value":true}]"#.to_vec()),
        Just(br#"{"spec":{"unschedulable":true},"metadata":{"$patch":"replace"}}"#.to_vec()),
    ]
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    content_type: &'static str,
    accept: &'static str,
    body: Vec<u8>,
}

/// Mostly well-formed resource paths (so requests reach the verbs), some random segments.
fn path_strategy() -> impl Strategy<Value = String> {
    let structured = (
        prop::sample::select(vec![
            ("/api/v1", "pods"),
            ("/api/v1", "nodes"),
            ("/api/v1", "namespaces"),
            ("/api/v1", "configmaps"),
            ("/api/v1", "services"),
            ("/api/v1", "events"),
            ("/apis/apps/v1", "deployments"),
            ("/apis/apps/v1", "replicasets"),
            ("/apis/apps/v1", "daemonsets"),
            ("/apis/apps/v1", "statefulsets"),
            ("/apis/policy/v1", "poddisruptionbudgets"),
            ("/apis/coordination.k8s.io/v1", "leases"),
            ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
            ("/apis/batch/v1", "jobs"),
            ("/apis/apps/v1", "pods"),
        ]),
        prop::option::weighted(
            0.7,
            prop::sample::select(vec!["default", "kube-system", "nowhere"]),
        ),
        prop::option::of(prop::sample::select(vec![
            "web",
            "worker-1",
            "web-7d4b9c-abcde",
            "node-exporter-worker-2",
            "default",
            "fresh",
            "Bad_Name",
        ])),
        prop::option::of(prop::sample::select(vec![
            "status", "scale", "eviction", "binding", "finalize", "bogus",
        ])),
    )
        .prop_map(|((gv, res), ns, name, sub)| {
            (
                gv,
                ns.filter(|_| !matches!(res, "nodes" | "namespaces" | "customresourcedefinitions")),
                res,
                name,
                sub,
            )
        });
    let structured = structured.prop_map(|(gv, ns, res, name, sub)| {
        let mut p = gv.to_string();
        if let Some(ns) = ns {
            p += &format!("/namespaces/{ns}");
        }
        p += &format!("/{res}");
        if let Some(n) = name {
            p += &format!("/{n}");
            if let Some(s) = sub {
                p += &format!("/{s}");
            }
        }
        p
    });
    let random = prop::collection::vec(prop::sample::select(SEGMENTS), 0..8)
        .prop_map(|segs| format!("/{}", segs.join("/")));
    prop_oneof![4 => structured, 1 => random]
}

fn req_strategy() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(METHODS),
        path_strategy(),
        prop::collection::vec(
            (
                prop::sample::select(QUERY_KEYS),
                prop_oneof![
                    "[ -~]{0,12}",
                    Just("1".to_string()),
                    Just("true".to_string()),
                    Just("All".to_string())
                ],
            ),
            0..4,
        ),
        prop::sample::select(CONTENT_TYPES),
        prop::sample::select(ACCEPTS),
        body_strategy(),
    )
        .prop_map(|(method, path, query, content_type, accept, body)| Req {
            method,
            path,
            query,
            content_type,
            accept,
            body,
        })
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn check(
    server: &Arc<ApiServer>,
    r: &Req,
    seen: &std::cell::RefCell<std::collections::BTreeMap<u16, usize>>,
) -> Result<(), TestCaseError> {
    let mut uri = r.path.clone();
    // Keep watches short: the paused clock advances to their timeout at once.
    let q: Vec<String> = r
        .query
        .iter()
        .map(|(k, v)| {
            if *k == "timeoutSeconds" {
                format!("{k}=5")
            } else {
                format!("{k}={}", encode(v))
            }
        })
        .collect();
    if !q.is_empty() {
        uri = format!("{uri}?{}", q.join("&"));
    }
    let mut b = http::Request::builder().method(r.method).uri(&uri);
    if !r.content_type.is_empty() {
        b = b.header("content-type", r.content_type);
    }
    if !r.accept.is_empty() {
        b = b.header("accept", r.accept);
    }
    let Ok(req) = b.body(Body::from(r.body.clone())) else {
        return Ok(()); // not a valid HTTP request: nothing to send
    };
    let resp = server
        .router()
        .oneshot(req)
        .await
        .map_err(|e| TestCaseError::fail(format!("service error: {e}")))?;
    let status = resp.status().as_u16();
    *seen.borrow_mut().entry(status).or_default() += 1;
    prop_assert!((200..600).contains(&status), "status {status}");
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(4000),
        axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024),
    )
    .await
    .map_err(|_| TestCaseError::fail(format!("{} {uri}: the body never ended", r.method)))?
    .map_err(|e| TestCaseError::fail(format!("body: {e}")))?;
    if r.path.starts_with("/healthz")
        || r.path.starts_with("/readyz")
        || r.path.starts_with("/livez")
    {
        return Ok(());
    }
    // Either one JSON document or a stream of JSON lines (watch).
    let docs: Vec<Value> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => vec![v],
        Err(_) => body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(serde_json::from_slice::<Value>)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                TestCaseError::fail(format!(
                    "{} {uri} -> {status}: body is not JSON ({e}): {:?}",
                    r.method,
                    String::from_utf8_lossy(&body)
                ))
            })?,
    };
    if r.method == "HEAD" {
        return Ok(()); // HEAD answers carry no body
    }
    prop_assert!(
        !docs.is_empty() || status < 300,
        "{} {} -> {}: empty body",
        r.method,
        uri,
        status
    );
    if status >= 400 {
        let s = &docs[0];
        prop_assert_eq!(
            &s["kind"],
            "Status",
            "{} {} -> {}: {}",
            r.method,
            uri,
            status,
            s
        );
        prop_assert_eq!(s["code"].as_u64(), Some(status as u64), "{}", s);
        prop_assert!(
            s["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            s
        );
    } else {
        for d in &docs {
            prop_assert!(d.is_object(), "{} {} -> {}: {}", r.method, uri, status, d);
        }
    }
    Ok(())
}

#[test]
fn random_requests_always_get_a_status_or_an_object() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let server = ApiServer::new(ServerConfig::default()).await;
        let text = include_str!("../scenarios/small.yaml");
        scenario::load(
            &server,
            scenario::parse_manifests("small.yaml", text).unwrap(),
        )
        .await
        .unwrap();
        server
    });
    let cases = std::env::var("THESEUS_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::new());
    runner
        .run(&req_strategy(), |r| rt.block_on(check(&server, &r, &seen)))
        .unwrap();
    // The generator must reach the API, not only the 404 path.
    let seen = seen.into_inner();
    eprintln!("status codes seen: {seen:?}");
    let ok = seen.range(200..300).map(|(_, n)| n).sum::<usize>();
    let client_errors: Vec<u16> = seen.range(400..500).map(|(c, _)| *c).collect();
    assert!(ok > 0 && client_errors.len() >= 4, "too narrow: {seen:?}");
}

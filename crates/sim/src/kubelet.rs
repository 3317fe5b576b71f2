//! The part of a kubelet that the API server alone cannot provide: confirming that a pod which
//! was deleted gracefully has stopped, so that it leaves the store (`delete` with grace 0, as the
//! real kubelet does once its containers exit). The full kubelet model (pod start-up, readiness,
//! heartbeats) builds on this.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::rest::{self, DeleteOptions};
use crate::server::ApiServer;
use crate::store::{EventType, ListOptions, Precondition};

/// How long a terminating pod's containers take to exit after SIGTERM, capped by the pod's grace
/// period: `None` means they never exit early and run the full grace period.
#[derive(Clone, Copy, Debug)]
pub struct TerminationPolicy {
    pub exit_after: Option<Duration>,
}

impl Default for TerminationPolicy {
    fn default() -> Self {
        TerminationPolicy {
            exit_after: Some(Duration::from_secs(1)),
        }
    }
}

/// Watches pods and confirms each graceful deletion once its containers have exited.
/// Runs until the store's watch ends; returns its task.
pub fn spawn_termination_confirmer(
    server: Arc<ApiServer>,
    policy: TerminationPolicy,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(pods) = server.registry.lookup("", "v1", "pods") else {
            return;
        };
        loop {
            let Ok(snapshot) = server
                .store
                .list(&pods.key(), &ListOptions::default())
                .await
            else {
                return;
            };
            // Pods whose confirmation is already scheduled: uid -> grace period it was scheduled for.
            let mut scheduled = std::collections::HashMap::new();
            for p in &snapshot.items {
                schedule(&server, &pods, &p.value, policy, &mut scheduled);
            }
            let Ok(mut stream) = server
                .store
                .watch(&pods.key(), None, snapshot.revision)
                .await
            else {
                return;
            };
            while let Some(batch) = stream.next().await {
                let Ok(events) = batch else { break }; // fell behind: re-list
                for ev in events {
                    match ev.kind {
                        EventType::Modified => {
                            schedule(&server, &pods, &ev.object.value, policy, &mut scheduled)
                        }
                        EventType::Deleted => {
                            if let Some(uid) = ev
                                .object
                                .value
                                .pointer("/metadata/uid")
                                .and_then(Value::as_str)
                            {
                                scheduled.remove(uid);
                            }
                        }
                        EventType::Added => {}
                    }
                }
            }
        }
    })
}

fn schedule(
    server: &Arc<ApiServer>,
    pods: &crate::registry::ResourceInfo,
    pod: &Value,
    policy: TerminationPolicy,
    scheduled: &mut std::collections::HashMap<String, i64>,
) {
    let Some(grace) = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .filter(|g| *g > 0)
    else {
        return;
    };
    let full = Duration::from_secs(grace as u64);
    let wait = policy.exit_after.map_or(full, |e| e.min(full));
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(u) = &uid {
        if scheduled.get(u).is_some_and(|g| *g <= grace) {
            return; // already scheduled at least as early
        }
        scheduled.insert(u.clone(), grace);
    }
    let server = server.clone();
    let pods = pods.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let opts = DeleteOptions {
            grace_period: Some(0),
            precondition: Precondition {
                resource_version: None,
                uid,
            },
            ..Default::default()
        };
        // NotFound or a uid mismatch means someone else finished it: nothing to do.
        let _ = rest::delete(&server, &pods, Some(&ns), &name, &opts).await;
    });
}

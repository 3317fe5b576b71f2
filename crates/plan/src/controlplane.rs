//! Control plane and etcd: the primary node, the endpoint handoff, quorum arithmetic.

use theseus_model::plan::{ControlPlanePlan, EtcdPlan, FindingCode, ObjectRef, Severity, Wave};
use theseus_model::snapshot::{COMPONENT_ETCD, endpoint_host};

use crate::findings::Findings;
use crate::index::Index;
use crate::select::Selected;
use crate::util::{FxHashSet, list_names};

fn wave_of(waves: &[Wave], node: &str) -> Option<u32> {
    waves
        .iter()
        .rev()
        .find(|w| w.nodes.iter().any(|n| n == node))
        .map(|w| w.index)
}

fn waves_of(waves: &[Wave], node: &str) -> Vec<u32> {
    waves
        .iter()
        .filter(|w| w.nodes.iter().any(|n| n == node))
        .map(|w| w.index)
        .collect()
}

fn wave_list(w: &[u32]) -> String {
    match w {
        [] => "no wave".to_string(),
        [one] => format!("wave {one}"),
        many => format!(
            "waves {}",
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Control-plane findings and summary.
pub fn control_plane(
    idx: &Index<'_>,
    sel: &Selected,
    waves: &[Wave],
    in_place_upgrade: bool,
    out: &mut Findings,
) -> ControlPlanePlan {
    let snap = idx.snap;
    let cp = &snap.control_plane;
    let names: Vec<String> = sel
        .all_control_plane
        .iter()
        .map(|&n| snap.nodes[n as usize].name.clone())
        .collect();
    let selected: FxHashSet<&str> = sel
        .all()
        .map(|n| snap.nodes[n as usize].name.as_str())
        .collect();
    let mut plan = ControlPlanePlan {
        nodes: names.clone(),
        primary: sel.primary.as_ref().map(|(p, _)| p.clone()),
        primary_source: sel.primary.as_ref().map(|(_, s)| s.describe().to_string()),
        control_plane_endpoint: cp
            .kubeadm
            .as_ref()
            .and_then(|k| k.control_plane_endpoint.clone()),
        cluster_info_server: cp.cluster_info_server.clone(),
        ..Default::default()
    };

    if let Some((primary, source)) = &sel.primary {
        let mut source_text = source.describe().to_string();
        if let Some(cm) = cp.inventory.as_ref().and_then(|i| i.config_map.as_ref())
            && *source == theseus_model::snapshot::PrimarySource::Inventory
        {
            source_text = format!("first of kube_control_plane in {cm}");
        }
        let msg = if selected.contains(primary.as_str()) {
            format!(
                "primary control-plane node: {primary} ({source_text}); it is migrated last, in {}",
                wave_list(&waves_of(waves, primary))
            )
        } else {
            format!("primary control-plane node: {primary} ({source_text}); it is not selected")
        };
        out.add(
            Severity::Info,
            FindingCode::PrimaryControlPlane,
            msg,
            vec![ObjectRef::node(primary)],
            "",
        );
    }

    // Endpoint handoff.
    let endpoints: Vec<(&str, &str)> = [
        (
            "controlPlaneEndpoint",
            plan.control_plane_endpoint.as_deref(),
        ),
        (
            "the cluster-info server",
            plan.cluster_info_server.as_deref(),
        ),
    ]
    .into_iter()
    .filter_map(|(what, e)| e.map(|e| (what, e)))
    .collect();
    let mut named: Vec<(String, &str, &str)> = Vec::new();
    for (what, e) in &endpoints {
        let host = endpoint_host(e);
        if let Some(node) = snap.nodes.iter().find(|n| n.has_address(host)) {
            named.push((node.name.clone(), what, e));
        }
    }
    if let Some((node, _, _)) = named.first() {
        plan.endpoint_node = Some(node.clone());
    }
    let taken: Vec<&(String, &str, &str)> = named
        .iter()
        .filter(|(n, _, _)| selected.contains(n.as_str()))
        .collect();
    if let Some((node, _, _)) = taken.first() {
        let others: Vec<&String> = names.iter().filter(|n| *n != node).collect();
        let what: Vec<String> = taken
            .iter()
            .filter(|(n, _, _)| n == node)
            .map(|(_, w, e)| format!("{w} {e}"))
            .collect();
        let wave = wave_of(waves, node);
        let wave_text = wave.map_or_else(|| "its wave".to_string(), |w| format!("wave {w}"));
        let all_waves = wave_list(&waves_of(waves, node));
        let verb = if what.len() == 1 { "points" } else { "point" };
        if others.is_empty() {
            out.add(
                Severity::Warning,
                FindingCode::ControlPlaneDowntime,
                format!(
                    "{} {verb} at {node}, the only control-plane node: the API server is unreachable during {all_waves}; running pods keep serving, but nothing can be scheduled or changed",
                    what.join(" and ")
                ),
                vec![ObjectRef::node(node)],
                "add a second control-plane node first, or run in a maintenance window",
            );
        } else if in_place_upgrade {
            out.add(
                Severity::Info,
                FindingCode::EndpointHandoffRequired,
                format!(
                    "{} {verb} at {node}, whose API server restarts during {all_waves}: clients of the endpoint see a short outage",
                    what.join(" and ")
                ),
                vec![ObjectRef::node(node)],
                "a load balancer or VIP in front of the API servers avoids it",
            );
        } else {
            plan.endpoint_handoff = true;
            let next = others[0];
            let next_ip = snap
                .node(next)
                .and_then(|n| n.ips().next().map(str::to_string))
                .unwrap_or_else(|| next.clone());
            out.add(
                Severity::Warning,
                FindingCode::EndpointHandoffRequired,
                format!(
                    "{} {verb} at {node}, which {wave_text} takes down: kubelets, kube-proxy and joining nodes that use it lose the API server",
                    what.join(" and ")
                ),
                vec![
                    ObjectRef::node(node),
                    ObjectRef::namespaced("ConfigMap", "kube-system", "kubeadm-config"),
                    ObjectRef::namespaced("ConfigMap", "kube-public", "cluster-info"),
                ],
                format!(
                    "before {wave_text}, repoint controlPlaneEndpoint (kube-system/kubeadm-config), the cluster-info server (kube-public/cluster-info) and kubeconfigs to {next} ({next_ip}), as runbook 000 does for master1; or put a load balancer or VIP in front of the API servers"
                ),
            );
        }
    } else if sel.all_control_plane.len() == 1
        && let Some(&only) = sel.control_plane.first()
    {
        let node = &snap.nodes[only as usize].name;
        out.add(
                Severity::Warning,
                FindingCode::ControlPlaneDowntime,
                format!(
                    "{node} is the only control-plane node: the API server is unavailable during {}; running pods keep serving, but nothing can be scheduled or changed",
                    wave_list(&waves_of(waves, node))
                ),
                vec![ObjectRef::node(node)],
                "add a second control-plane node first, or run in a maintenance window",
            );
    }

    plan.etcd = etcd(idx, sel, waves, &selected, out);
    plan
}

fn etcd(
    idx: &Index<'_>,
    sel: &Selected,
    waves: &[Wave],
    selected: &FxHashSet<&str>,
    out: &mut Findings,
) -> Option<EtcdPlan> {
    let snap = idx.snap;
    let cp = &snap.control_plane;
    // (member name, node name if on a node, healthy)
    let mut members: Vec<(String, Option<String>, bool)> = Vec::new();
    let source;
    if let Some(e) = snap.etcd.as_ref().filter(|e| !e.members.is_empty()) {
        source = "etcd";
        for m in e.members.iter().filter(|m| !m.is_learner) {
            let node = m.node.clone().or_else(|| {
                snap.nodes
                    .iter()
                    .find(|n| {
                        n.name == m.name
                            || m.peer_urls.iter().any(|u| n.has_address(endpoint_host(u)))
                    })
                    .map(|n| n.name.clone())
            });
            members.push((m.name.clone(), node, m.healthy));
        }
    } else if cp.components.iter().any(|c| c.component == COMPONENT_ETCD) {
        source = "staticPods";
        let mut seen = FxHashSet::default();
        for c in cp
            .components
            .iter()
            .filter(|c| c.component == COMPONENT_ETCD)
        {
            if seen.insert(c.node.clone()) {
                members.push((c.node.clone(), Some(c.node.clone()), true));
            }
        }
    } else if let Some(inv) = cp.inventory.as_ref().filter(|i| !i.etcd.is_empty()) {
        source = "inventory";
        for h in &inv.etcd {
            members.push((h.clone(), Some(h.clone()), true));
        }
    } else if let Some(k) = cp
        .kubeadm
        .as_ref()
        .filter(|k| !k.external_etcd_endpoints.is_empty())
    {
        source = "external";
        for e in &k.external_etcd_endpoints {
            let host = endpoint_host(e);
            let node = snap
                .nodes
                .iter()
                .find(|n| n.has_address(host))
                .map(|n| n.name.clone());
            members.push((e.clone(), node, true));
        }
    } else {
        return None;
    }
    let _ = sel;
    let n = members.len() as u32;
    let healthy = members.iter().filter(|m| m.2).count() as u32;
    let quorum = n / 2 + 1;
    let tolerated = healthy.saturating_sub(quorum);
    let taken: Vec<&(String, Option<String>, bool)> = members
        .iter()
        .filter(|m| m.1.as_deref().is_some_and(|node| selected.contains(node)))
        .collect();
    let during = if taken.is_empty() {
        tolerated
    } else {
        // One member down (or removed and re-added) at a time.
        healthy
            .saturating_sub(1)
            .saturating_sub(quorum.min(n.saturating_sub(1) / 2 + 1))
    };
    let objects: Vec<ObjectRef> = taken
        .iter()
        .filter_map(|m| m.1.as_deref().map(ObjectRef::node))
        .collect();
    let member_names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    out.add(
        Severity::Info,
        FindingCode::EtcdQuorum,
        format!(
            "etcd has {n} voting member{} ({}; {healthy} healthy): quorum {quorum}, tolerates {tolerated} failure{} now; {}",
            if n == 1 { "" } else { "s" },
            list_names(&member_names, 5),
            if tolerated == 1 { "" } else { "s" },
            if taken.is_empty() {
                "the migration takes no member down".to_string()
            } else {
                format!(
                    "the migration takes its members down one at a time, and while one is down etcd tolerates {during} further failure{}",
                    if during == 1 { "" } else { "s" }
                )
            }
        ),
        objects.clone(),
        "",
    );
    if healthy < quorum {
        out.add(
            Severity::Error,
            FindingCode::EtcdQuorumAtRisk,
            format!(
                "etcd has lost quorum already: {healthy} of {n} members healthy, {quorum} needed"
            ),
            objects.clone(),
            "restore etcd before migrating (runbook 002: etcdctl snapshot restore)",
        );
    } else if !taken.is_empty() && n >= 2 && healthy.saturating_sub(1) < (n - 1) / 2 + 1 {
        let unhealthy: Vec<&str> = members
            .iter()
            .filter(|m| !m.2)
            .map(|m| m.0.as_str())
            .collect();
        out.add(
            Severity::Error,
            FindingCode::EtcdQuorumAtRisk,
            format!(
                "taking an etcd member down loses quorum: {healthy} of {n} members healthy, {quorum} needed (unhealthy: {})",
                if unhealthy.is_empty() { "none".to_string() } else { unhealthy.join(", ") }
            ),
            objects.clone(),
            "repair or replace the unhealthy members first, or add a member before migrating",
        );
    } else if !taken.is_empty() && n <= 2 {
        let first = taken.first().and_then(|m| m.1.clone()).unwrap_or_default();
        out.add(
            Severity::Warning,
            FindingCode::EtcdNoFaultTolerance,
            format!(
                "etcd has {n} member{}: while {first} is down, {}",
                if n == 1 { "" } else { "s" },
                if n == 1 {
                    "etcd, and with it the API server, is unavailable"
                } else {
                    "etcd has no quorum margin at all"
                }
            ),
            objects,
            "run three etcd members (or five) so that one can be down safely",
        );
    }
    let _ = waves;
    Some(EtcdPlan {
        members: n,
        healthy,
        quorum,
        tolerated_failures: tolerated,
        tolerated_failures_during_migration: during,
        source: source.to_string(),
    })
}

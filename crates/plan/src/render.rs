//! The human report, shaped like `kubeadm upgrade plan`: components current → target, the
//! upgrade path, nodes by wave, findings grouped by severity, the estimated duration.

use theseus_model::plan::{Plan, Severity, WaveKind};

use crate::util::{format_seconds, list_names, plural};

/// Left-aligned columns separated by three spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                let pad = width[i] - c.chars().count() + 3;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The plan as text for people.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let op = plan.operation.map_or("no operation", |o| o.as_str());
    out.push_str(&format!(
        "[plan] Migration {:?}: {op}, {}\n",
        plan.migration,
        plan.strategy.as_str()
    ));
    let c = &plan.cluster;
    out.push_str(&format!(
        "[plan] Cluster: {}, {} ({} control-plane), {}, {}\n",
        c.kubernetes_version.as_deref().unwrap_or("version unknown"),
        plural(c.nodes as usize, "node"),
        c.control_plane_nodes,
        plural(c.pods as usize, "pod"),
        plural(c.pod_disruption_budgets as usize, "PodDisruptionBudget")
    ));
    let s = &plan.selection;
    out.push_str(&format!(
        "[plan] Selected: {} ({} control-plane, {}); worker waves of at most {}\n",
        plural(s.nodes as usize, "node"),
        s.control_plane,
        plural(s.workers as usize, "worker"),
        plural(s.max_wave_size as usize, "node")
    ));
    if !s.skipped.is_empty() {
        out.push_str(&format!(
            "[plan] Skipped (already at target): {}\n",
            list_names(&s.skipped, 8)
        ));
    }
    let cp = &plan.control_plane;
    if let Some(p) = &cp.primary {
        out.push_str(&format!(
            "[plan] Primary control-plane node: {p} ({})\n",
            cp.primary_source.as_deref().unwrap_or("")
        ));
    }
    if let Some(e) = &cp.control_plane_endpoint {
        out.push_str(&format!(
            "[plan] controlPlaneEndpoint: {e}{}\n",
            if cp.endpoint_handoff {
                format!(
                    " (on {}: handoff needed)",
                    cp.endpoint_node.as_deref().unwrap_or("a migrated node")
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(etcd) = &cp.etcd {
        out.push_str(&format!(
            "[plan] etcd: {} members, quorum {}, tolerates {} failure(s), {} while one member is down\n",
            etcd.members, etcd.quorum, etcd.tolerated_failures, etcd.tolerated_failures_during_migration
        ));
    }
    out.push('\n');

    if !plan.components.is_empty() {
        out.push_str("Components that change:\n");
        let rows: Vec<Vec<String>> = plan
            .components
            .iter()
            .map(|c| vec![c.component.clone(), c.current.clone(), c.target.clone()])
            .collect();
        out.push_str(&table(&["COMPONENT", "CURRENT", "TARGET"], &rows));
        out.push('\n');
    }

    if !plan.upgrade_path.is_empty() {
        out.push_str("Upgrade path (one minor version at a time):\n");
        for h in &plan.upgrade_path {
            out.push_str(&format!(
                "  hop {}: {} -> {}{}\n",
                h.hop,
                h.from,
                h.to,
                if h.workers { " (workers too)" } else { "" }
            ));
            for step in &h.steps {
                out.push_str(&format!("    - {step}\n"));
            }
        }
        out.push('\n');
    }

    out.push_str("Nodes by wave:\n");
    if plan.waves.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = plan
            .waves
            .iter()
            .map(|w| {
                let mut nodes = list_names(&w.nodes, 6);
                if w.primary {
                    nodes.push_str(" (primary)");
                }
                vec![
                    w.index.to_string(),
                    match w.kind {
                        WaveKind::ControlPlane => "control-plane".to_string(),
                        WaveKind::Workers => "workers".to_string(),
                    },
                    w.target_version.clone().unwrap_or_else(|| "-".into()),
                    nodes,
                    w.evicted_pods.to_string(),
                    w.surge_pods.to_string(),
                    w.drain_rounds.to_string(),
                    format_seconds(w.estimated_seconds),
                    if w.blocked {
                        "BLOCKED".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "WAVE", "KIND", "TARGET", "NODES", "EVICTED", "SURGE", "ROUNDS", "ESTIMATE", "",
            ],
            &rows,
        ));
    }
    out.push('\n');

    out.push_str("Findings:\n");
    if plan.findings.is_empty() {
        out.push_str("  none\n");
    }
    for sev in [Severity::Error, Severity::Warning, Severity::Info] {
        let list: Vec<_> = plan.findings_of(sev).collect();
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("{} ({}):\n", sev.label(), list.len()));
        for f in list {
            let code = serde_json::to_value(f.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let wave = match f.wave {
                Some(w) if !f.message.contains(&format!("wave {w}")) => format!(" (wave {w})"),
                _ => String::new(),
            };
            out.push_str(&format!("  [{code}] {}{wave}\n", f.message));
            if !f.objects.is_empty() {
                let objs: Vec<String> = f.objects.iter().map(ToString::to_string).collect();
                out.push_str(&format!("      objects: {}\n", list_names(&objs, 6)));
            }
            if let Some(h) = &f.hint {
                out.push_str(&format!("      fix: {h}\n"));
            }
        }
    }
    out.push('\n');

    let e = &plan.estimate;
    let why = if e.min_worker_waves_bound == "pdb" {
        "one PodDisruptionBudget's drain rounds one after another".to_string()
    } else {
        format!(
            "at least {} bound by {}",
            plural(e.min_worker_waves as usize, "worker wave"),
            e.min_worker_waves_bound
        )
    };
    out.push_str(&format!(
        "Estimated duration: {} (lower bound {}: {why})\n",
        format_seconds(e.total_seconds),
        format_seconds(e.lower_bound_seconds),
    ));
    if let Some(w) = e.maintenance_windows {
        out.push_str(&format!("Maintenance windows needed: {w}\n"));
    }
    out.push('\n');
    let errors = plan.findings_of(Severity::Error).count();
    if errors > 0 {
        out.push_str(&format!(
            "The plan is blocked by {}: fix {} and plan again.\n",
            plural(errors, "error"),
            if errors == 1 { "it" } else { "them" }
        ));
    } else {
        out.push_str("The plan can run. Apply it with: theseus apply -f <migration.yaml>\n");
    }
    out
}

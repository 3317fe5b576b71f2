//! Parsing and validation of a `Migration`, with errors that name the field, its line and its
//! column.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use thiserror::Error;

use super::locate::locate;
use super::types::*;
use crate::API_VERSION;
use crate::selector::{LabelSelector, SelectorOperator};

/// One step of a field path: a map key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    /// A map key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Formats a path as `spec.probes[1].url`.
pub fn format_path(path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => {
                s.push_str(&format!("[{i}]"));
            }
        }
    }
    s
}

/// Parses `spec.probes[1].url` into segments.
fn parse_path(path: &str) -> Vec<PathSeg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(PathSeg::Key(key.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some((idx, after)) = stripped.split_once(']') else {
                break;
            };
            if let Ok(i) = idx.parse() {
                segs.push(PathSeg::Index(i));
            }
            rest = after;
        }
    }
    segs
}

/// One problem in a migration spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// Field path, e.g. `spec.strategy.maxUnavailable` (empty for the whole document).
    pub path: String,
    /// 1-based line of the field in the source, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column of the field in the source, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong, and what is expected.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "line {l}, column {c}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A migration spec that cannot be used: every problem found, each naming its field. Nothing was
/// touched (exit code 2 in the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct SpecError {
    /// The problems, in document order where known.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid Migration spec ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl SpecError {
    /// The problems in the `file:line:column: path: message` form of compilers, one a line.
    pub fn render(&self, file: &str) -> String {
        let mut out = String::new();
        for e in &self.errors {
            let at = match (e.line, e.column) {
                (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
                _ => file.to_string(),
            };
            if e.path.is_empty() {
                out.push_str(&format!("{at}: {}\n", e.message));
            } else {
                out.push_str(&format!("{at}: {}: {}\n", e.path, e.message));
            }
        }
        out
    }

    fn single(path: String, line: Option<usize>, column: Option<usize>, message: String) -> Self {
        SpecError {
            errors: vec![FieldError {
                path,
                line,
                column,
                message,
            }],
        }
    }
}

/// Turns a serde_yaml error into a [`FieldError`]: serde_yaml writes `path: message at line L
/// column C`; unknown fields are reported at their parent, so their name is appended.
fn from_serde(err: &serde_yaml::Error) -> FieldError {
    let mut text = err.to_string();
    let (line, column) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            text = text.replacen(&suffix, "", 1);
            (Some(loc.line()), Some(loc.column()))
        }
        None => (None, None),
    };
    let (mut path, message) = match text.split_once(": ") {
        Some((p, m))
            if !p.is_empty()
                && !p.contains(char::is_whitespace)
                && !p.contains('`')
                && p.chars().next().is_some_and(|c| c.is_alphabetic()) =>
        {
            (p.to_string(), m.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
    }
    let message = message.replace(
        "invalid type: unit value",
        "missing value (the key has no value)",
    );
    FieldError {
        path,
        line,
        column,
        message,
    }
}

/// Collects semantic problems with their paths.
struct Problems {
    list: Vec<(Vec<PathSeg>, String)>,
}

impl Problems {
    fn add(&mut self, path: &[&str], message: impl Into<String>) {
        self.list.push((
            path.iter()
                .map(|p| PathSeg::Key((*p).to_string()))
                .collect(),
            message.into(),
        ));
    }

    fn add_path(&mut self, path: Vec<PathSeg>, message: impl Into<String>) {
        self.list.push((path, message.into()));
    }
}

fn key(s: &str) -> PathSeg {
    PathSeg::Key(s.to_string())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_selector(p: &mut Problems, base: &[PathSeg], sel: &LabelSelector) {
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let mut path = base.to_vec();
        path.extend([key("matchExpressions"), PathSeg::Index(i)]);
        if req.key.is_empty() {
            let mut kp = path.clone();
            kp.push(key("key"));
            p.add_path(kp, "must not be empty");
        }
        let needs_values = matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values && req.values.is_empty() {
            let mut vp = path.clone();
            vp.push(key("operator"));
            p.add_path(
                vp,
                format!("{:?} needs at least one value in `values`", req.operator),
            );
        }
        if !needs_values && !req.values.is_empty() {
            let mut vp = path.clone();
            vp.push(key("values"));
            p.add_path(
                vp,
                format!("must be empty with operator {:?}", req.operator),
            );
        }
    }
}

fn check_percent_or_count(p: &mut Problems, path: &[&str], v: MaxUnavailable) {
    match v {
        MaxUnavailable::Count(0) => p.add(path, "must be at least 1 node (0 would never start)"),
        MaxUnavailable::Percent(0) => p.add(path, "must be more than 0%"),
        MaxUnavailable::Percent(n) if n > 100 => p.add(
            path,
            format!("\"{n}%\" is more than 100%: use a percentage from 1% to 100%"),
        ),
        _ => {}
    }
}

impl Migration {
    /// Parses and validates a migration spec. On error, every problem found is reported with its
    /// field path, line and column.
    pub fn from_yaml(source: &str) -> Result<Migration, SpecError> {
        if source.trim().is_empty() {
            return Err(SpecError::single(
                String::new(),
                None,
                None,
                "the spec is empty: expected a document with apiVersion: theseus.io/v1alpha1 and kind: Migration".into(),
            ));
        }
        let migration: Migration = match serde_yaml::from_str(source) {
            Ok(m) => m,
            Err(e) => {
                let mut fe = from_serde(&e);
                if fe.line.is_none()
                    && !fe.path.is_empty()
                    && let Some((l, c)) = locate(source, &parse_path(&fe.path))
                {
                    fe.line = Some(l);
                    fe.column = Some(c);
                }
                return Err(SpecError { errors: vec![fe] });
            }
        };
        let problems = migration.problems();
        if problems.is_empty() {
            return Ok(migration);
        }
        let mut errors: Vec<FieldError> = problems
            .into_iter()
            .map(|(path, message)| {
                let loc = locate(source, &path);
                FieldError {
                    path: format_path(&path),
                    line: loc.map(|l| l.0),
                    column: loc.map(|l| l.1),
                    message,
                }
            })
            .collect();
        errors.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
        Err(SpecError { errors })
    }

    /// Checks a migration that was built in code (no source text, so no line and column).
    pub fn validate(&self) -> Result<(), SpecError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(SpecError {
            errors: problems
                .into_iter()
                .map(|(path, message)| FieldError {
                    path: format_path(&path),
                    line: None,
                    column: None,
                    message,
                })
                .collect(),
        })
    }

    /// Semantic checks: everything serde cannot see.
    fn problems(&self) -> Vec<(Vec<PathSeg>, String)> {
        let mut p = Problems { list: Vec::new() };
        if self.api_version != API_VERSION {
            p.add(
                &["apiVersion"],
                format!("must be {API_VERSION:?}, got {:?}", self.api_version),
            );
        }
        if self.kind != MIGRATION_KIND {
            p.add(
                &["kind"],
                format!("must be \"Migration\", got {:?}", self.kind),
            );
        }
        if !is_dns_label(&self.metadata.name) {
            p.add(
                &["metadata", "name"],
                format!(
                    "{:?} is not a valid name: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
                    self.metadata.name
                ),
            );
        }
        let spec = &self.spec;
        self.check_operation(&mut p);
        check_nodes(&mut p, &spec.nodes);
        check_strategy(&mut p, &spec.strategy);
        let d = &spec.drain;
        if d.grace_period_seconds < -1 {
            p.add(
                &["spec", "drain", "gracePeriodSeconds"],
                format!(
                    "must be -1 (the pod's own) or more, got {}",
                    d.grace_period_seconds
                ),
            );
        }
        if d.timeout.0 == 0 {
            p.add(
                &["spec", "drain", "timeout"],
                "must be more than 0s: theseus never waits without a limit",
            );
        }
        if let Some(sel) = d.pod_selector.as_deref() {
            if sel.trim().is_empty() {
                p.add(
                    &["spec", "drain", "podSelector"],
                    "must not be empty (omit it to drain every pod)",
                );
            } else if let Err(e) = LabelSelector::parse(sel) {
                p.add(&["spec", "drain", "podSelector"], e);
            }
        }
        check_probes(&mut p, &spec.probes);
        let t = &spec.timeouts;
        for (name, v) in [
            ("nodeAction", Some(t.node_action)),
            ("nodeReady", Some(t.node_ready)),
            ("podsReady", Some(t.pods_ready)),
            ("wave", t.wave),
        ] {
            if v.is_some_and(|v| v.0 == 0) {
                p.add(
                    &["spec", "timeouts", name],
                    "must be more than 0s: theseus never waits without a limit",
                );
            }
        }
        if let Some(provider) = &spec.provider {
            check_provider(&mut p, provider);
        }
        if let Some(w) = &spec.maintenance_window {
            if w.start == w.end {
                p.add(
                    &["spec", "maintenanceWindow", "end"],
                    format!("equals start ({}): the window would be empty", w.start),
                );
            }
            if w.timezone.trim().is_empty() {
                p.add(
                    &["spec", "maintenanceWindow", "timezone"],
                    "must not be empty (e.g. UTC, Europe/Berlin)",
                );
            }
        }
        p.list
    }

    fn check_operation(&self, p: &mut Problems) {
        let op = &self.spec.operation;
        let kinds = op.kinds();
        match kinds.len() {
            0 => p.add(
                &["spec", "operation"],
                "no operation given: set exactly one of osMigration, upgrade, maintenance, controlPlaneRelocation",
            ),
            1 => {}
            _ => {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                p.add(
                    &["spec", "operation", kinds[1].as_str()],
                    format!(
                        "only one operation per migration, got {}: run them as separate migrations",
                        names.join(" and ")
                    ),
                );
            }
        }
        if let Some(os) = &op.os_migration
            && os.target_os_image.trim().is_empty()
        {
            p.add(
                    &["spec", "operation", "osMigration", "targetOsImage"],
                    "must not be empty: the OS image the nodes report afterwards, e.g. \"Ubuntu 22.04.4 LTS\"",
                );
        }
        if let Some(up) = &op.upgrade {
            let mut prev: Option<&crate::KubeVersion> = None;
            for (i, v) in up.path.iter().enumerate() {
                let path = vec![
                    key("spec"),
                    key("operation"),
                    key("upgrade"),
                    key("path"),
                    PathSeg::Index(i),
                ];
                if let Some(prev) = prev
                    && prev.minors_to(v) != 1
                {
                    p.add_path(
                            path.clone(),
                            format!("{v} must be exactly one minor version after {prev}: the control plane moves one minor at a time"),
                        );
                }
                if v.minors_to(&up.target_version) <= 0 {
                    p.add_path(
                        path,
                        format!(
                            "{v} is not before the target {}: list only intermediate versions",
                            up.target_version
                        ),
                    );
                }
                prev = Some(v);
            }
            if let (Some(last), true) = (up.path.last(), !up.path.is_empty())
                && last.minors_to(&up.target_version) > 1
            {
                p.add(
                        &["spec", "operation", "upgrade", "path"],
                        format!(
                            "ends at {last}, more than one minor before the target {}: list every intermediate minor or none",
                            up.target_version
                        ),
                    );
            }
        }
        if let Some(m) = &op.maintenance
            && m.action.trim().is_empty()
        {
            p.add(
                &["spec", "operation", "maintenance", "action"],
                "must not be empty: the action the provider performs, e.g. reboot",
            );
        }
        if let Some(r) = &op.control_plane_relocation {
            if r.moves.is_empty() {
                p.add(
                    &["spec", "operation", "controlPlaneRelocation", "moves"],
                    "must list at least one move (from: old host, to: new host)",
                );
            }
            let mut seen = BTreeSet::new();
            for (i, m) in r.moves.iter().enumerate() {
                let base = [
                    key("spec"),
                    key("operation"),
                    key("controlPlaneRelocation"),
                    key("moves"),
                    PathSeg::Index(i),
                ];
                for (field, value) in [("from", &m.from), ("to", &m.to)] {
                    let mut path = base.to_vec();
                    path.push(key(field));
                    if value.trim().is_empty() {
                        p.add_path(path, "must not be empty");
                    } else if !seen.insert(value.clone()) {
                        p.add_path(path, format!("{value:?} appears in more than one move"));
                    }
                }
            }
        }
    }
}

fn check_nodes(p: &mut Problems, nodes: &NodeSelection) {
    if let Some(names) = &nodes.names {
        if names.is_empty() {
            p.add(
                &["spec", "nodes", "names"],
                "is empty, so no node would be selected: list node names or omit the field",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, n) in names.iter().enumerate() {
            let path = vec![key("spec"), key("nodes"), key("names"), PathSeg::Index(i)];
            if n.trim().is_empty() {
                p.add_path(path, "must not be empty");
            } else if !seen.insert(n) {
                p.add_path(path, format!("{n:?} is listed twice"));
            }
        }
        for (i, n) in nodes.exclude.iter().enumerate() {
            if names.contains(n) {
                p.add_path(
                    vec![key("spec"), key("nodes"), key("exclude"), PathSeg::Index(i)],
                    format!("{n:?} is both in names and in exclude"),
                );
            }
        }
    }
    if let Some(roles) = &nodes.roles {
        if roles.is_empty() {
            p.add(
                &["spec", "nodes", "roles"],
                "is empty, so no node would be selected: list roles (control-plane, worker, ...) or omit the field",
            );
        }
        for (i, r) in roles.iter().enumerate() {
            if r.trim().is_empty() {
                p.add_path(
                    vec![key("spec"), key("nodes"), key("roles"), PathSeg::Index(i)],
                    "must not be empty",
                );
            }
        }
    }
    if let Some(sel) = &nodes.selector {
        check_selector(p, &[key("spec"), key("nodes"), key("selector")], sel);
    }
}

fn check_strategy(p: &mut Problems, s: &Strategy) {
    check_percent_or_count(
        p,
        &["spec", "strategy", "maxUnavailable"],
        s.max_unavailable,
    );
    if let Some(cap) = s.max_unavailable_cap {
        if s.max_unavailable != MaxUnavailable::Auto {
            p.add(
                &["spec", "strategy", "maxUnavailableCap"],
                format!(
                    "only applies to maxUnavailable: auto (maxUnavailable is {}, which is already a limit)",
                    s.max_unavailable
                ),
            );
        } else if cap == MaxUnavailable::Auto {
            p.add(
                &["spec", "strategy", "maxUnavailableCap"],
                "must be a number of nodes or a percentage, not auto",
            );
        } else {
            check_percent_or_count(p, &["spec", "strategy", "maxUnavailableCap"], cap);
        }
    }
}

fn check_probes(p: &mut Problems, probes: &[Probe]) {
    let mut names = BTreeSet::new();
    for (i, probe) in probes.iter().enumerate() {
        let base = vec![key("spec"), key("probes"), PathSeg::Index(i)];
        let at = |field: &str| {
            let mut v = base.clone();
            v.push(key(field));
            v
        };
        let below = |block: &str, field: &str| {
            let mut v = at(block);
            v.push(key(field));
            v
        };
        if probe.name.trim().is_empty() {
            p.add_path(at("name"), "must not be empty");
        } else if !names.insert(probe.name.clone()) {
            p.add_path(
                at("name"),
                format!("{:?} is used by another probe", probe.name),
            );
        }
        let kinds = [
            probe.http.is_some(),
            probe.tcp.is_some(),
            probe.service.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            p.add_path(
                if kinds == 0 { base.clone() } else { at("tcp") },
                format!("needs exactly one of http, tcp, service (got {kinds})"),
            );
        }
        if let Some(h) = &probe.http {
            let https = h.url.starts_with("https://");
            if !(https || h.url.starts_with("http://")) {
                p.add_path(
                    below("http", "url"),
                    format!("{:?} is not an http:// or https:// URL", h.url),
                );
            }
            if h.ca_file.is_some() && !https {
                p.add_path(below("http", "caFile"), "only applies to an https:// URL");
            }
            if h.insecure_skip_tls_verify && !https {
                p.add_path(
                    below("http", "insecureSkipTlsVerify"),
                    "only applies to an https:// URL",
                );
            }
            if h.ca_file.is_some() && h.insecure_skip_tls_verify {
                p.add_path(
                    below("http", "insecureSkipTlsVerify"),
                    "give either caFile or insecureSkipTlsVerify, not both",
                );
            }
            if h.ca_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
                p.add_path(below("http", "caFile"), "must not be empty");
            }
        }
        if let Some(t) = &probe.tcp
            && !t.address.contains(':')
        {
            p.add_path(
                below("tcp", "address"),
                format!("{:?} must be host:port", t.address),
            );
        }
        if probe.interval.0 == 0 {
            p.add_path(at("interval"), "must be at least 1s");
        }
        if probe.timeout.0 == 0 {
            p.add_path(at("timeout"), "must be at least 1s");
        }
        if probe.failure_threshold == 0 {
            p.add_path(at("failureThreshold"), "must be at least 1");
        }
    }
}

fn check_provider(p: &mut Problems, provider: &Provider) {
    let blocks = [
        (ProviderType::Command, "command", provider.command.is_some()),
        (ProviderType::Ssh, "ssh", provider.ssh.is_some()),
        (ProviderType::Ansible, "ansible", provider.ansible.is_some()),
        (ProviderType::Kubean, "kubean", provider.kubean.is_some()),
    ];
    for (kind, name, present) in blocks {
        if kind == provider.kind && !present {
            p.add(
                &["spec", "provider", "type"],
                format!("is {name}, so the `{name}` settings block is required"),
            );
        }
        if kind != provider.kind && present {
            p.add(
                &["spec", "provider", name],
                format!(
                    "is set but the provider type is {}: remove it or change the type",
                    provider.kind.as_str()
                ),
            );
        }
    }
    if provider.expected_action_duration.is_some_and(|d| d.0 == 0) {
        p.add(
            &["spec", "provider", "expectedActionDuration"],
            "must be more than 0s",
        );
    }
    if let Some(c) = &provider.command
        && (c.run.is_empty() || c.run[0].trim().is_empty())
    {
        p.add(
            &["spec", "provider", "command", "run"],
            "must name a program",
        );
    }
    if let Some(s) = &provider.ssh
        && s.run.is_empty()
    {
        p.add(
            &["spec", "provider", "ssh", "run"],
            "must name a remote command",
        );
    }
    if let Some(a) = &provider.ansible
        && a.playbook.trim().is_empty()
    {
        p.add(
            &["spec", "provider", "ansible", "playbook"],
            "must not be empty",
        );
    }
    if let Some(k) = &provider.kubean
        && k.cluster.trim().is_empty()
    {
        p.add(
            &["spec", "provider", "kubean", "cluster"],
            "must name the clusters.kubean.io object",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let p = parse_path("spec.probes[1].url");
        assert_eq!(
            p,
            vec![key("spec"), key("probes"), PathSeg::Index(1), key("url")]
        );
        assert_eq!(format_path(&p), "spec.probes[1].url");
    }
}

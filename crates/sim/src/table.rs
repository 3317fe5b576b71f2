//! meta.k8s.io/v1 Table rendering for `kubectl get`: column definitions and row cells computed the way
//! kube-apiserver 1.33 does it (pkg/printers/internalversion, the REST default table convertor, and the
//! apiextensions custom-resource convertor). The server always prints with `Wide: true`, so rows carry
//! the priority-1 cells as well; kubectl hides those columns unless `-o wide`.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
/// Go's zero `time.Time` (0001-01-01T00:00:00Z) as Unix seconds; Kubernetes treats it as "unset".
const GO_ZERO_UNIX: i64 = -62_135_596_800;
const CREATED_AT: &str = "Name,Created At@";
const CONTAINERS: &str = "+Containers,+Images";

/// The printer's columns, comma-separated. A leading `+` marks priority 1 (`-o wide`); a trailing
/// `#` marks type integer and `@` date (everything else is a string); an empty entry expands to the
/// wide Containers and Images columns.
fn spec(group: &str, resource: &str) -> String {
    let s = match (group, resource) {
        ("", "nodes") => {
            "Name,Status,Roles,Age,Version,+Internal-IP,+External-IP,+OS-Image,+Kernel-Version,+Container-Runtime"
        }
        ("", "pods") => "Name,Ready,Status,Restarts,Age,+IP,+Node,+Nominated Node,+Readiness Gates",
        ("", "namespaces") => "Name,Status,Age",
        ("", "services") => "Name,Type,Cluster-IP,External-IP,Port(s),Age,+Selector",
        ("", "endpoints") => "Name,Endpoints,Age",
        ("", "configmaps") => "Name,Data,Age",
        ("", "secrets") => "Name,Type,Data,Age",
        ("", "serviceaccounts") => "Name,Secrets,Age",
        ("" | "events.k8s.io", "events") => {
            "Last Seen,Type,Reason,Object,+Subobject,+Source,Message,+First Seen,+Count,+Name"
        }
        ("coordination.k8s.io", "leases") => "Name,Holder,Age",
        ("apps", "deployments") => "Name,Ready,Up-to-date,Available,Age,,+Selector",
        ("apps", "replicasets") => "Name,Desired#,Current#,Ready#,Age,,+Selector",
        ("apps", "statefulsets") => "Name,Ready,Age,",
        ("apps", "daemonsets") => {
            "Name,Desired#,Current#,Ready#,Up-to-date#,Available#,Node Selector,Age,,+Selector"
        }
        ("policy", "poddisruptionbudgets") => {
            "Name,Min Available,Max Unavailable,Allowed Disruptions#,Age"
        }
        ("batch", "jobs") => "Name,Status,Completions,Duration,Age,,+Selector",
        // Built-in kinds without a printer get the REST default table convertor.
        ("apiextensions.k8s.io", "customresourcedefinitions")
        | ("rbac.authorization.k8s.io", "roles" | "clusterroles")
        | ("", "limitranges") => CREATED_AT,
        _ => "Name,Age",
    };
    s.split(',')
        .map(|c| if c.is_empty() { CONTAINERS } else { c })
        .collect::<Vec<_>>()
        .join(",")
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// TableColumnDefinition JSON objects: {"name","type","format","description","priority"}; priority 0 = shown by default, 1 = only with -o wide.
pub fn columns(group: &str, resource: &str) -> Vec<Value> {
    let spec = spec(group, resource);
    let mut cols = Vec::new();
    for c in spec.split(',') {
        let (name, priority) = c.strip_prefix('+').map_or((c, 0), |n| (n, 1));
        let (name, ty) = match name.chars().last() {
            Some('#') => (&name[..name.len() - 1], "integer"),
            Some('@') => (&name[..name.len() - 1], "date"),
            _ => (name, "string"),
        };
        let (format, desc) = match name {
            "Name" => ("name", NAME_DESC),
            "Age" | "Created At" => ("", AGE_DESC),
            "Containers" => ("", "Names of each container in the template."),
            "Images" => ("", "Images referenced by each container in the template."),
            _ => ("", ""),
        };
        cols.push(column(name, ty, format, desc, priority));
    }
    cols
}

/// The cells of one row, same order as columns(); strings, integers.
pub fn cells(group: &str, resource: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = spec(group, resource);
    let s = |path: &[&str]| Value::from(st(obj, path));
    let i = |path: &[&str]| Value::from(int(obj, path));
    let tmpl = &["spec", "template", "spec"];
    let mut row = vec![name(obj)];
    match (group, resource) {
        ("", "nodes") => row = node(obj, now),
        ("", "pods") => row = pod(obj, now),
        ("", "namespaces") => row.push(or(st(obj, &["status", "phase"]), "Active").into()),
        ("", "services") => row = service(obj, now),
        ("", "endpoints") => row.push(endpoints(obj).into()),
        ("", "configmaps") => row.push((len(obj, &["data"]) + len(obj, &["binaryData"])).into()),
        ("", "secrets") => {
            row.push(or(st(obj, &["type"]), "Opaque").into());
            row.push(len(obj, &["data"]).into());
        }
        ("", "serviceaccounts") => row.push(len(obj, &["secrets"]).into()),
        ("" | "events.k8s.io", "events") => row = event(obj, now),
        ("coordination.k8s.io", "leases") => row.push(s(&["spec", "holderIdentity"])),
        ("apps", "deployments") => {
            row.extend([ready(obj), i(&["status", "updatedReplicas"])]);
            row.extend([i(&["status", "availableReplicas"]), age(obj, now)]);
            row.extend(layout(obj, tmpl));
            let sel = selector_string(at(obj, &["spec", "selector"]));
            row.push(sel.unwrap_or_else(|| "<invalid>".into()).into());
        }
        ("apps", "replicasets") => {
            row.extend([desired(obj).into(), i(&["status", "replicas"])]);
            row.extend([i(&["status", "readyReplicas"]), age(obj, now)]);
            row.extend(layout(obj, tmpl));
            row.push(format_selector(at(obj, &["spec", "selector"])).into());
        }
        ("apps", "statefulsets") => {
            row.extend([ready(obj), age(obj, now)]);
            row.extend(layout(obj, tmpl));
        }
        ("apps", "daemonsets") => {
            let counts = "desiredNumberScheduled currentNumberScheduled numberReady updatedNumberScheduled numberAvailable";
            row.extend(counts.split(' ').map(|f| i(&["status", f])));
            row.push(format_labels(at(obj, &["spec", "template", "spec", "nodeSelector"])).into());
            row.push(age(obj, now));
            row.extend(layout(obj, tmpl));
            row.push(format_selector(at(obj, &["spec", "selector"])).into());
        }
        ("policy", "poddisruptionbudgets") => {
            for f in ["minAvailable", "maxUnavailable"] {
                row.push(match at(obj, &["spec", f]) {
                    Some(Value::String(s)) => s.as_str().into(),
                    Some(v @ Value::Number(_)) => num(v).to_string().into(),
                    _ => "N/A".into(),
                });
            }
            row.push(i(&["status", "disruptionsAllowed"]));
        }
        ("batch", "jobs") => row = job(obj, now),
        _ if spec == CREATED_AT => {
            let created = ts(obj, &["metadata", "creationTimestamp"]);
            let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
            row.push(
                created
                    .map_or_else(|| "0001-01-01T00:00:00Z".into(), rfc3339)
                    .into(),
            );
        }
        _ => {}
    }
    // Printers that end in Age without wide columns leave it to here.
    let width = spec.split(',').count();
    if row.len() + 1 == width && spec.ends_with(",Age") {
        row.push(age(obj, now));
    }
    row.resize(width, Value::Null);
    row
}

/// For custom resources: columns and cells from a CRD version's `additionalPrinterColumns`; NAME is
/// always first. Like the apiextensions server, an empty list means the default NAME, AGE columns;
/// otherwise the CRD's columns are used as given (no AGE is appended).
pub fn crd_columns(printer_columns: &[Value]) -> Vec<Value> {
    let mut cols = vec![column("Name", "string", "name", NAME_DESC, 0)];
    if printer_columns.is_empty() {
        cols.push(column("Age", "date", "", AGE_DESC, 0));
    }
    for c in printer_columns {
        let path = st(c, &["jsonPath"]);
        let desc = match st(c, &["description"]) {
            "" => format!("Custom resource definition column (in JSONPath format): {path}"),
            d => d.to_string(),
        };
        let (name, ty, fmt) = (st(c, &["name"]), st(c, &["type"]), st(c, &["format"]));
        cols.push(column(name, ty, fmt, &desc, int(c, &["priority"])));
    }
    cols
}

/// Row cells for a custom resource, matching `crd_columns(printer_columns)`.
pub fn crd_cells(printer_columns: &[Value], obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut row = vec![name(obj)];
    if printer_columns.is_empty() {
        row.push(age(obj, now));
    }
    for c in printer_columns {
        let found = parse_path(st(c, &["jsonPath"])).and_then(|steps| eval(obj, &steps));
        let cell = match (found, st(c, &["type"])) {
            (None | Some(Value::Null), _) => Value::Null,
            (Some(v), "string") => go_text(v).map_or(Value::Null, Value::String),
            (Some(v @ Value::Number(_)), "integer") => num(v).into(),
            (Some(Value::Number(n)), "number") => n.as_f64().map_or(Value::Null, Value::from),
            (Some(Value::Bool(b)), "boolean") => (*b).into(),
            (Some(Value::String(s)), "date") => match s.as_str() {
                "" | "null" => "<unknown>".into(),
                s => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => since(Some(t.with_timezone(&Utc)).filter(not_zero), now).into(),
                    Err(_) => "<invalid>".into(),
                },
            },
            _ => Value::Null,
        };
        row.push(cell);
    }
    row
}

/// apimachinery `duration.HumanDuration`: ~2-3 significant figures ("119s", "3m10s", "70m", "7h59m",
/// "47h", "2d1h", "729d", "2y1d", "9y"); "0s" for a skew of up to -2s, "<invalid>" below that.
pub fn human_duration(d: Duration) -> String {
    // Go durations are int64 nanoseconds and time.Sub saturates at those bounds.
    let ns = Duration::nanoseconds;
    let secs = d.clamp(ns(i64::MIN), ns(i64::MAX)).num_seconds();
    let (mins, hours) = (secs / 60, secs / 3600);
    let (days, years) = (hours / 24, hours / 24 / 365);
    let two = |a: String, b: i64, unit: &str| if b == 0 { a } else { format!("{a}{b}{unit}") };
    match () {
        _ if secs < -1 => "<invalid>".into(),
        _ if secs < 0 => "0s".into(),
        _ if secs < 120 => format!("{secs}s"),
        _ if mins < 10 => two(format!("{mins}m"), secs % 60, "s"),
        _ if mins < 180 => format!("{mins}m"),
        _ if hours < 8 => two(format!("{hours}h"), mins % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => two(format!("{days}d"), hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 => two(format!("{years}y"), days % 365, "d"),
        _ => format!("{years}y"),
    }
}

// ---- field access -------------------------------------------------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.as_object()?.get(*k))
}
/// Like `at`, but only yields objects (a Go pointer-to-struct that is set).
fn obj_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    at(v, path).filter(|v| v.is_object())
}
fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}
fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}
fn num(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}
fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).map_or(0, num)
}
fn boolean(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}
fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}
fn len(v: &Value, path: &[&str]) -> i64 {
    let n = match at(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}
/// The strings at `field` of each element of the list at `path` (`field` empty: the elements).
fn strs<'a>(v: &'a Value, path: &[&str], field: &[&str]) -> Vec<&'a str> {
    list(v, path)
        .iter()
        .map(|e| at(e, field).and_then(Value::as_str).unwrap_or(""))
        .collect()
}
fn none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}
fn entries(m: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    m.and_then(Value::as_object).into_iter().flatten()
}
fn not_zero(t: &DateTime<Utc>) -> bool {
    t.timestamp() != GO_ZERO_UNIX || t.timestamp_subsec_nanos() != 0
}
/// A metav1.Time field; `None` for missing, unparseable, or Go's zero time.
fn ts(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(at(v, path)?.as_str()?).ok()?;
    Some(t.with_timezone(&Utc)).filter(not_zero)
}
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))
}
fn name(obj: &Value) -> Value {
    st(obj, &["metadata", "name"]).into()
}
fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    since(ts(obj, &["metadata", "creationTimestamp"]), now).into()
}
fn deleting(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}
/// "ready/desired" replicas.
fn ready(obj: &Value) -> Value {
    format!(
        "{}/{}",
        int(obj, &["status", "readyReplicas"]),
        desired(obj)
    )
    .into()
}
/// `spec.replicas`, which API defaulting sets to 1.
fn desired(obj: &Value) -> i64 {
    at(obj, &["spec", "replicas"])
        .filter(|v| v.is_number())
        .map_or(1, num)
}
/// The first element of the list at `path` whose `type` is `ty` (conditions, addresses).
fn by_type<'a>(obj: &'a Value, path: &[&str], ty: &str) -> Option<&'a Value> {
    list(obj, path).iter().find(|c| st(c, &["type"]) == ty)
}
fn cond_true(obj: &Value, path: &[&str], ty: &str) -> bool {
    by_type(obj, path, ty).is_some_and(|c| st(c, &["status"]) == "True")
}

// ---- formatting helpers -------------------------------------------------------------------------

/// `layoutContainerCells`: comma-joined container names and images of a pod spec.
fn layout(obj: &Value, pod_spec: &[&str]) -> [Value; 2] {
    let spec = at(obj, pod_spec).unwrap_or(&Value::Null);
    let join = |f: &str| strs(spec, &["containers"], &[f]).join(",");
    [join("name").into(), join("image").into()]
}

/// `labels.FormatLabels`: "k=v" sorted by key, comma-joined; "<none>" when empty.
fn format_labels(m: Option<&Value>) -> String {
    let mut pairs: Vec<_> = entries(m).collect();
    pairs.sort_by_key(|p| p.0);
    let pairs: Vec<_> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    none(pairs.join(","))
}

/// `LabelSelectorAsSelector(...).String()`; `None` if the selector is invalid.
fn selector_string(sel: Option<&Value>) -> Option<String> {
    let sel = match sel {
        None | Some(Value::Null) => return Some(String::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return None,
    };
    let mut reqs = Vec::new();
    for (k, v) in entries(at(sel, &["matchLabels"])) {
        reqs.push((k.clone(), format!("{k}={}", v.as_str()?)));
    }
    for e in list(sel, &["matchExpressions"]) {
        let key = st(e, &["key"]).to_string();
        let mut values = strs(e, &["values"], &[]);
        values.sort_unstable();
        let text = match (st(e, &["operator"]), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.clone(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`.
fn format_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        None => "<error>".into(),
        Some(s) if s.is_empty() => "<none>".into(),
        Some(s) => s,
    }
}

// ---- printers -----------------------------------------------------------------------------------

fn node(n: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = list(n, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| st(c, &["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if st(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if boolean(n, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    for (k, v) in entries(at(n, &["metadata", "labels"])) {
        match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => _ = roles.insert(role),
            Some(_) => {}
            None if k == "kubernetes.io/role" => _ = roles.insert(v.as_str().unwrap_or("")),
            None => {}
        }
    }
    roles.remove("");
    let roles = none(roles.into_iter().collect::<Vec<_>>().join(","));
    let addresses = &["status", "addresses"];
    let addr = |ty| by_type(n, addresses, ty).map_or("<none>", |a| st(a, &["address"]));
    let info = |f: &str| or(st(n, &["status", "nodeInfo", f]), "<unknown>");
    vec![
        name(n),
        status.into(),
        roles.into(),
        age(n, now),
        st(n, &["status", "nodeInfo", "kubeletVersion"]).into(),
        addr("InternalIP").into(),
        addr("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

fn bump(latest: &mut Option<DateTime<Utc>>, t: Option<DateTime<Utc>>) {
    if t > *latest {
        *latest = t;
    }
}

/// A terminated container's reason, else "Signal:N" / "ExitCode:N" (with `prefix`).
fn terminated_reason(t: &Value, prefix: &str) -> String {
    match (st(t, &["reason"]), int(t, &["signal"])) {
        ("", 0) => format!("{prefix}ExitCode:{}", int(t, &["exitCode"])),
        ("", sig) => format!("{prefix}Signal:{sig}"),
        (r, _) => format!("{prefix}{r}"),
    }
}

/// `printPod`.
fn pod(p: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let conds = &["status", "conditions"];
    let phase = st(p, &["status", "phase"]);
    let mut reason = or(st(p, &["status", "reason"]), phase).to_string();
    let gated =
        |c: &&Value| st(c, &["type"]) == "PodScheduled" && st(c, &["reason"]) == "SchedulingGated";
    if list(p, conds).iter().any(|c| gated(&c)) {
        reason = "SchedulingGated".into();
    }
    let init_specs = list(p, &["spec", "initContainers"]);
    let sidecar = |c: &Value| st(c, &["restartPolicy"]) == "Always";
    let is_sidecar = |n: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| st(c, &["name"]) == n)
            .is_some_and(sidecar)
    };
    let total =
        list(p, &["spec", "containers"]).len() + init_specs.iter().filter(|c| sidecar(c)).count();
    let (mut restarts, mut sidecar_restarts, mut ready) = (0i64, 0i64, 0usize);
    let (mut last, mut sidecar_last) = (None, None);
    let mut initializing = false;
    for (i, c) in list(p, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let finished = ts(c, &["lastState", "terminated", "finishedAt"]);
        restarts += int(c, &["restartCount"]);
        bump(&mut last, finished);
        let restartable = is_sidecar(st(c, &["name"]));
        if restartable {
            sidecar_restarts += int(c, &["restartCount"]);
            bump(&mut sidecar_last, finished);
        }
        let waiting = obj_at(c, &["state", "waiting"]).map_or("", |w| st(w, &["reason"]));
        match obj_at(c, &["state", "terminated"]) {
            Some(t) if int(t, &["exitCode"]) == 0 => continue,
            _ if restartable && at(c, &["started"]).and_then(Value::as_bool) == Some(true) => {
                ready += usize::from(boolean(c, &["ready"]));
                continue;
            }
            Some(t) => reason = terminated_reason(t, "Init:"),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                reason = format!("Init:{waiting}")
            }
            None => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }
    if !initializing || cond_true(p, conds, "Initialized") {
        restarts = sidecar_restarts;
        last = sidecar_last;
        let mut has_running = false;
        for c in list(p, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(c, &["restartCount"]);
            bump(&mut last, ts(c, &["lastState", "terminated", "finishedAt"]));
            let waiting = obj_at(c, &["state", "waiting"]).map_or("", |w| st(w, &["reason"]));
            if !waiting.is_empty() {
                reason = waiting.into();
            } else if let Some(t) = obj_at(c, &["state", "terminated"]) {
                reason = terminated_reason(t, "");
            } else if boolean(c, &["ready"]) && obj_at(c, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let is_ready = list(p, conds)
                .iter()
                .any(|c| st(c, &["type"]) == "Ready" && st(c, &["status"]) == "True");
            reason = if is_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if deleting(p) && st(p, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting(p) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts = match last {
        Some(_) if restarts != 0 => format!("{restarts} ({} ago)", since(last, now)),
        _ => restarts.to_string(),
    };
    let ip = match list(p, &["status", "podIPs"]).first() {
        Some(first) => st(first, &["ip"]),
        None => st(p, &["status", "podIP"]),
    };
    let gates = list(p, &["spec", "readinessGates"]);
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| cond_true(p, conds, st(g, &["conditionType"])))
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        name(p),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(p, now),
        or(ip, "<none>").into(),
        or(st(p, &["spec", "nodeName"]), "<none>").into(),
        or(st(p, &["status", "nominatedNodeName"]), "<none>").into(),
        gates.into(),
    ]
}

fn service(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ty = or(st(svc, &["spec", "type"]), "ClusterIP");
    let cluster_ip = match list(svc, &["spec", "clusterIPs"]).first() {
        Some(ip) => ip.as_str().unwrap_or(""),
        None => or(st(svc, &["spec", "clusterIP"]), "<none>"),
    };
    let external = strs(svc, &["spec", "externalIPs"], &[]);
    let ext = match ty {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = list(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| or(st(i, &["ip"]), st(i, &["hostname"])))
                .filter(|s| !s.is_empty())
                .collect();
            let all: Vec<&str> = lb.into_iter().chain(external.iter().copied()).collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => st(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let (port, node_port) = (int(p, &["port"]), int(p, &["nodePort"]));
            let proto = or(st(p, &["protocol"]), "TCP");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    let ports = none(ports.join(","));
    let selector = format_labels(at(svc, &["spec", "selector"]));
    vec![
        name(svc),
        ty.into(),
        cluster_ip.into(),
        ext.into(),
        ports.into(),
        age(svc, now),
        selector.into(),
    ]
}

/// `formatEndpoints` with all ports.
fn endpoints(ep: &Value) -> String {
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let (mut shown, mut count) = (Vec::new(), 0usize);
    for ss in subsets {
        let addrs = strs(ss, &["addresses"], &["ip"]);
        let ports = list(ss, &["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            shown.extend(addrs.iter().map(|a| a.to_string()));
        }
        for port in ports {
            count += addrs.len();
            let port = int(port, &["port"]);
            shown.extend(addrs.iter().map(|a| {
                if a.contains(':') {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                }
            }));
        }
    }
    shown.truncate(3);
    let joined = shown.join(",");
    if count > 3 {
        format!("{joined} + {} more...", count - 3)
    } else {
        joined
    }
}

/// `printEvent` (wide), for core/v1 and events.k8s.io/v1 field names.
fn event(e: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let either = |a: &str, b: &str| at(e, &[a]).filter(|v| !v.is_null()).or_else(|| at(e, &[b]));
    let time = |a: &str, b: &str| ts(e, &[a]).or_else(|| ts(e, &[b]));
    let first = match time("firstTimestamp", "deprecatedFirstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(ts(e, &["eventTime"]), now),
    };
    let mut last = match time("lastTimestamp", "deprecatedLastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = either("count", "deprecatedCount").map_or(0, num);
    if let Some(series) = obj_at(e, &["series"]) {
        last = since(ts(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let null = Value::Null;
    let obj = either("involvedObject", "regarding").unwrap_or(&null);
    let kind = st(obj, &["kind"]).to_lowercase();
    let target = match st(obj, &["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let src = either("source", "deprecatedSource").unwrap_or(&null);
    let component = or(
        st(src, &["component"]),
        or(
            st(e, &["reportingComponent"]),
            st(e, &["reportingController"]),
        ),
    );
    let source = match or(st(src, &["host"]), st(e, &["reportingInstance"])) {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    };
    let message = either("message", "note")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    vec![
        last.into(),
        st(e, &["type"]).into(),
        st(e, &["reason"]).into(),
        target.into(),
        st(obj, &["fieldPath"]).into(),
        source.into(),
        message.into(),
        first.into(),
        count.into(),
        name(e),
    ]
}

/// `printJob`.
fn job(j: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int(j, &["status", "succeeded"]);
    let completions = match at(j, &["spec", "completions"]).filter(|v| v.is_number()) {
        Some(c) => format!("{succeeded}/{}", num(c)),
        None => match int(j, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        ts(j, &["status", "startTime"]),
        ts(j, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let conds = &["status", "conditions"];
    let status = if cond_true(j, conds, "Complete") {
        "Complete"
    } else if cond_true(j, conds, "Failed") {
        "Failed"
    } else if deleting(j) {
        "Terminating"
    } else if cond_true(j, conds, "Suspended") {
        "Suspended"
    } else if cond_true(j, conds, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let mut r = vec![
        name(j),
        status.into(),
        completions.into(),
        duration.into(),
        age(j, now),
    ];
    r.extend(layout(j, &["spec", "template", "spec"]));
    r.push(format_selector(at(j, &["spec", "selector"])).into());
    r
}

// ---- CRD JSONPath subset ------------------------------------------------------------------------

enum Step {
    Key(String),
    Index(i64),
    /// `[?(@.a.b == literal)]` (or `!=`): the first matching array element.
    Filter(Vec<Step>, bool, Value),
}

/// Parses `.a.b`, `.a[0].b`, `['k']`, `[-1]` and `[?(@.k=="v")]`, optionally wrapped in `{}`.
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p)
        .trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let mut key = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    key.push(chars[i]);
                    i += 1;
                }
                if key.is_empty() {
                    return None;
                }
                steps.push(Step::Key(key));
            }
            '[' => {
                let close = bracket_end(&chars, i)?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                steps.push(
                    if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                        let (lhs, rhs, eq) = match f.split_once("==") {
                            Some((l, r)) => (l, r, true),
                            None => f.split_once("!=").map(|(l, r)| (l, r, false))?,
                        };
                        let sub = parse_path(lhs.trim().strip_prefix('@')?)?;
                        Step::Filter(sub, eq, literal(rhs.trim())?)
                    } else if let Some(Value::String(k)) = literal(inner).filter(|l| l.is_string())
                    {
                        Step::Key(k)
                    } else {
                        Step::Index(inner.parse().ok()?)
                    },
                );
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Index of the `]` closing the bracket at `open`, skipping quoted text.
fn bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut quote = None;
    for (j, &c) in chars.iter().enumerate().skip(open + 1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(j),
            _ => {}
        }
    }
    None
}

fn literal(s: &str) -> Option<Value> {
    let quoted = |q: char| s.strip_prefix(q).and_then(|s| s.strip_suffix(q));
    if let Some(inner) = quoted('"')
        .or_else(|| quoted('\''))
        .filter(|_| s.len() >= 2)
    {
        return Some(Value::String(inner.to_string()));
    }
    match s {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ => serde_json::from_str::<serde_json::Number>(s)
            .ok()
            .map(Value::Number),
    }
}

fn eval<'a>(v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(v);
    };
    match step {
        Step::Key(k) => eval(v.as_object()?.get(k)?, rest),
        Step::Index(i) => {
            let items = v.as_array()?;
            let idx = if *i < 0 {
                i64::try_from(items.len()).ok()? + i
            } else {
                *i
            };
            eval(items.get(usize::try_from(idx).ok()?)?, rest)
        }
        Step::Filter(path, eq, lit) => v
            .as_array()?
            .iter()
            .filter(|item| eval(item, path).is_some_and(|x| (x == lit) == *eq))
            .find_map(|item| eval(item, rest)),
    }
}

/// How client-go's jsonpath prints a value: strings raw, numbers as Go's `%v`, objects and arrays
/// as Go's `json.Marshal` (sorted keys, HTML-escaped).
fn go_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => go_float(f),
            _ => n.to_string(),
        }),
        _ => {
            let mut text = serde_json::to_string(&sorted(v)).ok()?;
            for (c, esc) in [('<', "\\u003c"), ('>', "\\u003e"), ('&', "\\u0026")] {
                text = text.replace(c, esc);
            }
            for (c, esc) in [('\u{2028}', "\\u2028"), ('\u{2029}', "\\u2029")] {
                text = text.replace(c, esc);
            }
            Some(text)
        }
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<_> = m.iter().collect();
            pairs.sort_by_key(|p| p.0);
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Go's `%v` for a float64: the shortest round-trip digits, in exponent form (`1.5e+06`, at least
/// two exponent digits) when the decimal exponent is < -4 or >= 6 (strconv's shortest `'g'`).
fn go_float(f: f64) -> String {
    let e = format!("{f:e}");
    let Some((mant, exp)) = e.split_once('e') else {
        return e;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return e;
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }
    fn parse(s: &str) -> Vec<Value> {
        serde_json::from_str(s).unwrap()
    }
    fn names(cols: &[Value]) -> Vec<&str> {
        cols.iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    /// `milliseconds=want` pairs: apimachinery's TestHumanDuration and TestHumanDurationBoundaries.
    const DURATIONS: &str =
        "1000=1s 70000=70s 190000=3m10s 4200000=70m 169200000=47h 176400000=2d1h
        698400000=8d 31708800000=367d 63162000000=2y1d 252295200000=8y -2000=<invalid> 0=0s 999=0s
        119999=119s 120000=2m 121000=2m1s 599999=9m59s 600000=10m 601000=10m 10799999=179m
        10800000=3h 10860000=3h1m 28799999=7h59m 28800000=8h 32340000=8h 172799999=47h 172800000=2d
        176400000=2d1h 691199999=7d23h 691200000=8d 774000000=8d 63071999999=729d 63072000000=2y
        63154800000=2y 63158340000=2y 63158399999=2y 63158400000=2y1d 94608000000=3y 220752000000=7y
        252287999999=7y364d 252288000000=8y 283737600000=8y 283824000000=9y 31536000000000=292y";

    #[test]
    fn human_duration_matches_apimachinery() {
        for case in DURATIONS.split_whitespace() {
            let (ms, want) = case.split_once('=').unwrap();
            let d = Duration::milliseconds(ms.parse().unwrap());
            assert_eq!(human_duration(d), want, "{ms}ms");
        }
        // -2s + 1ns is still "almost now".
        assert_eq!(
            human_duration(Duration::seconds(-2) + Duration::nanoseconds(1)),
            "0s"
        );
    }

    /// [group, resource, object, expected cells from index `from` (default 0)], now = 2025-06-01T12:00:00Z.
    const ROWS: &str = r#"[
["", "nodes", {"metadata": {"name": "n1", "creationTimestamp": "2025-05-29T12:00:00Z"}, "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
  "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Ubuntu 24.04"}, "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.4"}]}},
  ["n1", "Ready", "<none>", "3d", "v1.33.1", "10.0.0.4", "<none>", "Ubuntu 24.04", "<unknown>", "<unknown>"]],
["", "nodes", {"metadata": {"name": "n2", "labels": {"node-role.kubernetes.io/control-plane": ""}}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}, ["n2", "NotReady", "control-plane"]],
["", "nodes", {"metadata": {"name": "n3", "labels": {"node-role.kubernetes.io/worker": "", "kubernetes.io/role": "infra", "node-role.kubernetes.io/": "x"}}, "spec": {"unschedulable": true},
  "status": {"conditions": [{"type": "Ready", "status": "True"}]}}, ["n3", "Ready,SchedulingDisabled", "infra,worker"]],
["", "nodes", {"metadata": {"name": "n4", "labels": {"kubernetes.io/role": ""}}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}, ["n4", "NotReady", "<none>"]],
["", "nodes", {"metadata": {"name": "n5"}, "spec": {"unschedulable": true}}, ["n5", "Unknown,SchedulingDisabled", "<none>", "<unknown>", ""]],

["", "pods", {"metadata": {"name": "p", "creationTimestamp": "2025-06-01T11:50:00Z"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}, {"name": "b", "ready": true, "state": {"running": {}}}]}},
  ["p", "2/2", "Running", "0", "10m", "<none>", "<none>", "<none>", "<none>"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}}, ["p", "0/1", "Pending", "0", "<unknown>"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending", "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}, ["p", "0/1", "ContainerCreating"]],
["", "pods", {"metadata": {"name": "p", "deletionTimestamp": "2025-06-01T11:59:00Z"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}}, ["p", "1/1", "Terminating"]],
["", "pods", {"metadata": {"name": "p", "deletionTimestamp": "2025-06-01T11:59:00Z"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}, ["p", "0/1", "Completed"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running", "containerStatuses": [{"name": "a", "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
  "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2025-06-01T11:58:30Z"}}}]}}, ["p", "0/1", "CrashLoopBackOff", "5 (90s ago)"]],
["", "pods", {"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}}, ["p", "0/0", "Signal:9"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Running", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, {"name": "b", "ready": true, "state": {"running": {}}}]}}, ["p", "1/2", "NotReady"]],
["", "pods", {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted"}}, ["p", "0/0", "Evicted"]],
["", "pods", {"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}}, ["p", "0/0", "SchedulingGated"]],
["", "pods", {"metadata": {"name": "p", "deletionTimestamp": "2025-06-01T11:59:00Z"}, "status": {"phase": "Running", "reason": "NodeLost"}}, ["p", "0/0", "Unknown"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i0"}], "containers": [{"name": "a"}]}, "status": {"phase": "Pending",
  "initContainerStatuses": [{"name": "i0", "state": {"waiting": {"reason": "PodInitializing"}}}], "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}}, ["p", "0/1", "Init:0/1"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i0"}, {"name": "i1"}]}, "status": {"initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 0}}}, {"name": "i1", "state": {"running": {}}}]}}, ["p", "0/0", "Init:1/2"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i0"}]}, "status": {"initContainerStatuses": [{"name": "i0", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}, ["p", "0/0", "Init:CrashLoopBackOff", "3"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i0"}]}, "status": {"initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 2}}}]}}, ["p", "0/0", "Init:ExitCode:2"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}, {"name": "i1"}], "containers": [{"name": "a"}]},
  "status": {"initContainerStatuses": [{"name": "side", "started": true, "ready": true, "state": {"running": {}}}, {"name": "i1", "state": {"running": {}}}]}}, ["p", "1/2", "Init:1/2"]],
["", "pods", {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "readinessGates": [{"conditionType": "x"}, {"conditionType": "y"}]},
  "status": {"podIP": "10.1.0.5", "nominatedNodeName": "n2", "conditions": [{"type": "x", "status": "True"}]}}, ["10.1.0.5", "n1", "n2", "1/2"], 5],

["apps", "deployments", {"metadata": {"name": "web", "creationTimestamp": "2025-06-01T10:00:00Z"}, "spec": {"replicas": 3,
  "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "canary", "operator": "DoesNotExist"}]},
  "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}}},
  "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}},
  ["web", "2/3", 3, 2, "120m", "web,log", "nginx:1.27,busybox", "app=web,!canary,tier in (a,b)"]],
["apps", "deployments", {"metadata": {"name": "d"}, "spec": {"selector": {"matchExpressions": [{"key": "x", "operator": "In"}]}}}, ["d", "0/1", 0, 0, "<unknown>", "", "", "<invalid>"]],
["apps", "replicasets", {"metadata": {"name": "rs"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
  "status": {"replicas": 2, "readyReplicas": 1}}, ["rs", 2, 2, 1, "<unknown>", "web", "nginx", "app=web"]],
["apps", "statefulsets", {"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}, ["db", "3/3", "<unknown>", "", ""]],
["apps", "daemonsets", {"metadata": {"name": "ds"}, "spec": {"template": {"spec": {"nodeSelector": {"b": "2", "a": "1"}}}},
  "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}},
  ["ds", 3, 3, 1, 2, 1, "a=1,b=2", "<unknown>", "", "", "<none>"]],
["batch", "jobs", {"metadata": {"name": "j", "creationTimestamp": "2025-06-01T11:53:20Z"}, "spec": {"completions": 1, "parallelism": 1},
  "status": {"succeeded": 1, "startTime": "2025-06-01T11:53:20Z", "completionTime": "2025-06-01T11:55:00Z", "conditions": [{"type": "Complete", "status": "True"}]}},
  ["j", "Complete", "1/1", "100s", "6m40s"]],
["batch", "jobs", {"metadata": {"name": "j"}, "spec": {"parallelism": 4}, "status": {"startTime": "2025-06-01T11:59:30Z"}}, ["j", "Running", "0/1 of 4", "30s"]],
["batch", "jobs", {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}, ["j", "Failed", "0/1", ""]],

["policy", "poddisruptionbudgets", {"metadata": {"name": "pdb", "creationTimestamp": "2025-06-01T11:59:10Z"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}}, ["pdb", "2", "N/A", 1, "50s"]],
["policy", "poddisruptionbudgets", {"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": "25%"}}, ["pdb", "N/A", "25%", 0, "<unknown>"]],
["", "services", {"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}], "selector": {"k8s-app": "dns"}}},
  ["dns", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP", "<unknown>", "k8s-app=dns"]],
["", "services", {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIPs": ["10.96.1.1"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}, ["s", "NodePort", "10.96.1.1", "<none>", "80:30080/TCP"]],
["", "services", {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "clusterIP": "None"}}, ["s", "LoadBalancer", "None", "<pending>", "<none>"]],
["", "services", {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "externalIPs": ["5.6.7.8"]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}}},
  ["s", "LoadBalancer", "<none>", "1.2.3.4,lb.example,5.6.7.8"]],
["", "services", {"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "db.example"}}, ["s", "ExternalName", "<none>", "db.example"]],
["", "endpoints", {"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}], "ports": [{"port": 80}, {"port": 443}]}]}, ["e", "10.0.0.1:80,[fd00::2]:80,10.0.0.1:443 + 1 more..."]],
["", "endpoints", {"metadata": {"name": "e"}}, ["e", "<none>"]],
["", "events", {"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff", "message": " Back-off restarting \n", "count": 4, "firstTimestamp": "2025-06-01T11:50:00Z", "lastTimestamp": "2025-06-01T11:59:30Z",
  "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"}, "source": {"component": "kubelet", "host": "n1"}},
  ["30s", "Warning", "BackOff", "pod/p", "spec.containers{a}", "kubelet, n1", "Back-off restarting", "10m", 4, "p.1"]],
["events.k8s.io", "events", {"metadata": {"name": "e"}, "eventTime": "2025-06-01T11:59:00.000000Z", "regarding": {"kind": "Node"}, "note": "hi", "reportingController": "c"},
  ["60s", "", "", "node", "", "c", "hi", "60s", 1, "e"]],
["", "events", {"metadata": {"name": "e"}, "series": {"count": 7, "lastObservedTime": "2025-06-01T11:59:58.000000Z"}, "eventTime": "2025-06-01T11:00:00.000000Z"}, ["2s"], 0],
["", "namespaces", {"metadata": {"name": "default"}}, ["default", "Active", "<unknown>"]],
["", "configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}}, ["c", 2, "<unknown>"]],
["", "secrets", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}, ["s", "kubernetes.io/tls", 2, "<unknown>"]],
["", "serviceaccounts", {"metadata": {"name": "default"}}, ["default", 0, "<unknown>"]],
["coordination.k8s.io", "leases", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "node-1"}}, ["l", "node-1", "<unknown>"]],
["apiextensions.k8s.io", "customresourcedefinitions", {"metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-03-04T05:06:07.891Z"}}, ["widgets.example.com", "2024-03-04T05:06:07Z"]],
["rbac.authorization.k8s.io", "clusterroles", {"metadata": {"name": "admin"}}, ["admin", "0001-01-01T00:00:00Z"]],
["example.com", "widgets", {"metadata": {"name": "w", "creationTimestamp": "2024-03-04T05:06:07Z"}}, ["w", "454d"]]
]"#;

    #[test]
    fn rows_match_the_real_printers() {
        for case in parse(ROWS) {
            let (g, r) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
            let row = cells(g, r, &case[2], now());
            assert_eq!(row.len(), columns(g, r).len(), "{case}");
            let (want, from) = (
                case[3].as_array().unwrap(),
                case[4].as_u64().unwrap_or(0) as usize,
            );
            assert_eq!(&row[from..from + want.len()], &want[..], "{case}");
        }
    }

    #[test]
    fn column_definitions() {
        let cols = columns("", "pods");
        let want = [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates",
        ];
        assert_eq!(names(&cols), want);
        assert_eq!(cols[0], column("Name", "string", "name", NAME_DESC, 0));
        assert_eq!(cols[4], column("Age", "string", "", AGE_DESC, 0));
        assert_eq!(cols[5]["priority"], 1);
        let ds = columns("apps", "daemonsets");
        let want = [
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Up-to-date",
            "Available",
            "Node Selector",
            "Age",
            "Containers",
            "Images",
            "Selector",
        ];
        assert_eq!(names(&ds), want);
        assert_eq!(
            (&ds[1]["type"], &ds[8]["priority"], &ds[8]["format"]),
            (&json!("integer"), &json!(1), &json!(""))
        );
        let events = [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name",
        ];
        assert_eq!(names(&columns("events.k8s.io", "events")), events);
        assert_eq!(columns("", "events")[9]["format"], "name");
        assert_eq!(
            names(&columns("batch", "jobs"))[..5],
            ["Name", "Status", "Completions", "Duration", "Age"]
        );
        assert_eq!(
            columns("apiextensions.k8s.io", "customresourcedefinitions")[1],
            column("Created At", "date", "", AGE_DESC, 0)
        );
        assert_eq!(names(&columns("example.com", "widgets")), ["Name", "Age"]);
    }

    const PRINTER_COLUMNS: &str = r#"[
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "d"},
        {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name", "priority": 1},
        {"name": "Last", "type": "string", "jsonPath": "{.spec.items[-1]}"},
        {"name": "Label", "type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"},
        {"name": "Ratio", "type": "string", "jsonPath": ".spec.ratio"},
        {"name": "Missing", "type": "string", "jsonPath": ".metadata['labels'][\"nope\"]"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]"#;

    #[test]
    fn crd_printer_columns() {
        let pc = parse(PRINTER_COLUMNS);
        let cols = crd_columns(&pc);
        assert_eq!(
            names(&cols),
            [
                "Name", "Replicas", "Ready", "First", "Last", "Label", "Ratio", "Missing", "Age"
            ]
        );
        let desc = "Custom resource definition column (in JSONPath format): .spec.replicas";
        assert_eq!(cols[1], column("Replicas", "integer", "", desc, 0));
        assert_eq!(
            (&cols[2]["description"], &cols[3]["priority"]),
            (&json!("d"), &json!(1))
        );
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2025-06-01T07:00:00Z", "labels": {"app.kubernetes.io/name": "w"}},
            "spec": {"replicas": 2.0, "ratio": 1234567.5, "items": [{"name": "x"}, {"z": 1, "y": "<"}]},
            "status": {"conditions": [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        let want = json!([
            "w",
            2,
            "False",
            "x",
            "{\"y\":\"\\u003c\",\"z\":1}",
            "w",
            "1.2345675e+06",
            null,
            "5h"
        ]);
        assert_eq!(Value::from(crd_cells(&pc, &obj, now())), want);
        // Without additionalPrinterColumns the apiextensions server serves NAME and AGE.
        assert_eq!(crd_columns(&[])[1], column("Age", "date", "", AGE_DESC, 0));
        assert_eq!(crd_cells(&[], &obj, now()), [json!("w"), json!("5h")]);
        for (v, want) in [
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (123456.7, "123456.7"),
            (3e21, "3e+21"),
        ] {
            assert_eq!(go_float(v), want);
        }
    }

    const WEIRD: &str = r#"[null, 7, "pod", [], {}, {"metadata": 5, "spec": [], "status": "x"},
        {"metadata": {"name": 3, "creationTimestamp": "yesterday", "deletionTimestamp": 1, "labels": []},
         "spec": {"containers": {"a": 1}, "replicas": "3", "selector": {"matchExpressions": [{"operator": "Bogus"}]}, "ports": [1, {"port": "x"}]},
         "status": {"conditions": [null, 1, {"type": 1}], "containerStatuses": [{"state": {"terminated": 1}}, 3], "initContainerStatuses": [{"state": []}]}},
        {"metadata": {"creationTimestamp": "9999-12-31T23:59:59Z"}, "subsets": [{"addresses": 1}], "series": {}, "involvedObject": "x"},
        {"metadata": {"creationTimestamp": "0001-01-01T00:00:00Z"}, "status": {"startTime": "1970-01-01T00:00:00Z"}}]"#;

    #[test]
    fn garbage_never_panics_and_keeps_row_width() {
        let resources = "/nodes /pods /namespaces /services /endpoints /configmaps /secrets /events events.k8s.io/events
            /serviceaccounts coordination.k8s.io/leases apps/deployments apps/replicasets apps/statefulsets apps/daemonsets
            policy/poddisruptionbudgets batch/jobs apiextensions.k8s.io/customresourcedefinitions x.io/things";
        let weird = parse(WEIRD);
        for gr in resources.split_whitespace() {
            let (g, r) = gr.split_once('/').unwrap();
            for obj in &weird {
                assert_eq!(
                    cells(g, r, obj, now()).len(),
                    columns(g, r).len(),
                    "{gr} {obj}"
                );
            }
        }
        let pcs = parse(
            r#"[null, {"jsonPath": "..a[*]", "type": "date"}, {"jsonPath": ".a[?(@.b==)]"}, {"jsonPath": "[", "type": "integer"},
            {"jsonPath": ".metadata.name", "type": "number"}, {"jsonPath": ".metadata.creationTimestamp", "type": "date"}]"#,
        );
        for obj in &weird {
            assert_eq!(crd_cells(&pcs, obj, now()).len(), crd_columns(&pcs).len());
        }
        assert_eq!(cells("", "pods", &weird[8], now())[4], "<unknown>");
        assert_eq!(
            crd_cells(&pcs, &weird[6], now())[5..],
            [json!(3.0), json!("<invalid>")]
        );
    }
}

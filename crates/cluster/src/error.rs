//! Errors of the capture and of client construction. Each names the thing that failed and the fix.

use std::path::PathBuf;

use thiserror::Error;

/// Why no client could be built from the kubeconfig. Always the user's input: exit code 2.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The kubeconfig file cannot be read or parsed.
    #[error(
        "cannot load the kubeconfig {}: {message}. Check the path given with --kubeconfig (or KUBECONFIG)",
        path.display()
    )]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `--context` names a context the kubeconfig does not have.
    #[error(
        "context {context:?} is not in the kubeconfig{}; its contexts are: {}. Pick one with --context",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default(),
        if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
    )]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The kubeconfig, when one was named.
        path: Option<PathBuf>,
        /// The contexts it has.
        known: Vec<String>,
    },
    /// No kubeconfig was given, none was found and this is not a pod in a cluster.
    #[error(
        "no cluster to talk to: {message}. Pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config"
    )]
    NoConfig {
        /// What was tried.
        message: String,
    },
    /// The kubeconfig's context cannot be turned into a client (bad server URL, certificates,
    /// user).
    #[error("the kubeconfig context {context} cannot be used: {message}")]
    Invalid {
        /// The context (or `current-context`).
        context: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a capture failed. Nothing was changed in the cluster: a capture only reads.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// No answer from the API server (connection refused, DNS, TLS, timeout).
    #[error(
        "cannot reach the Kubernetes API server: {message}. Check that the cluster is up and that the kubeconfig's server address is reachable from here (VPN, proxy, firewall)"
    )]
    Unreachable {
        /// The underlying error.
        message: String,
    },
    /// The credentials could not be obtained (exec plugin, token file).
    #[error(
        "cannot get credentials for the kubeconfig user: {message}. Check the user's exec plugin, token or certificate files"
    )]
    Credentials {
        /// The underlying error.
        message: String,
    },
    /// 401: the API server does not accept the credentials.
    #[error(
        "the API server rejected the credentials (401 Unauthorized) on {verb} {resource}: {message}. The kubeconfig user's token or certificate is invalid or expired: renew it (e.g. `kubeadm kubeconfig user`, or log in again)"
    )]
    Unauthorized {
        /// Verb of the request.
        verb: &'static str,
        /// Resource of the request.
        resource: String,
        /// The server's message.
        message: String,
    },
    /// 403: RBAC does not allow a request the capture needs.
    #[error(
        "access denied (403 Forbidden): theseus needs `{verb}` on `{resource}`{}: {message}. Grant it, e.g. `kubectl create clusterrole theseus-snapshot --verb=get,list --resource={}` and bind it to the user; `kubectl auth can-i {verb} {resource}{}` checks",
        scope_text(namespace.as_deref()),
        crate::capture::RBAC_RESOURCES,
        namespace.as_ref().map(|n| format!(" -n {n}")).unwrap_or_else(|| " --all-namespaces".into())
    )]
    Forbidden {
        /// The verb that was refused (`list`, `get`).
        verb: &'static str,
        /// The resource (`pods`, `deployments.apps`, `configmaps`).
        resource: String,
        /// The namespace, for namespaced requests; none for every namespace.
        namespace: Option<String>,
        /// The server's message.
        message: String,
    },
    /// Any other error status from the API server.
    #[error("{verb} {resource}{} failed: {code} {reason}: {message}", scope_text(namespace.as_deref()))]
    Api {
        /// Verb.
        verb: &'static str,
        /// Resource.
        resource: String,
        /// Namespace, if any.
        namespace: Option<String>,
        /// HTTP status code.
        code: u16,
        /// `Status.reason`.
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// An object the capture read is malformed (a quantity, a selector, a YAML document in a
    /// ConfigMap).
    #[error("{object}: {message}")]
    Invalid {
        /// The object, e.g. `ConfigMap kube-system/kubeadm-config` or `Node worker-1`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A response could not be decoded.
    #[error("cannot decode the answer to {verb} {resource}: {message}")]
    Decode {
        /// Verb.
        verb: &'static str,
        /// Resource.
        resource: String,
        /// The underlying error.
        message: String,
    },
}

fn scope_text(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!(" in namespace {ns}"),
        None => " in every namespace".to_string(),
    }
}

/// Maps a kube-rs error of one request to a [`CaptureError`] naming the request.
pub(crate) fn request_error(
    e: kube::Error,
    verb: &'static str,
    resource: &str,
    namespace: Option<&str>,
) -> CaptureError {
    let resource = resource.to_string();
    let namespace = namespace.map(str::to_string);
    match e {
        kube::Error::Api(s) => match s.code {
            401 => CaptureError::Unauthorized {
                verb,
                resource,
                message: s.message,
            },
            403 => CaptureError::Forbidden {
                verb,
                resource,
                namespace,
                message: s.message,
            },
            code => CaptureError::Api {
                verb,
                resource,
                namespace,
                code,
                reason: s.reason,
                message: s.message,
            },
        },
        kube::Error::SerdeError(e) => CaptureError::Decode {
            verb,
            resource,
            message: e.to_string(),
        },
        kube::Error::Auth(e) => CaptureError::Credentials {
            message: e.to_string(),
        },
        other => CaptureError::Unreachable {
            message: error_chain(&other),
        },
    }
}

/// An error and its sources, `a: b: c`, without repeating a cause its parent already printed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Why an operation of [`Ops`](crate::Ops) failed. `what` names the request and its object, e.g.
/// `patch Node centos-worker1` or `evict Pod shop/checkout-7d9f-abcde`.
#[derive(Debug, Error)]
pub enum OpsError {
    /// No answer from the API server (connection refused, DNS, TLS, timeout).
    #[error(
        "cannot reach the Kubernetes API server to {what}: {message}. Check that the cluster is up and that its API server is reachable from here (VPN, proxy, firewall); the step can be retried"
    )]
    Unreachable {
        /// The request.
        what: String,
        /// The underlying error.
        message: String,
    },
    /// 401, or no credentials could be obtained.
    #[error(
        "the API server did not accept the credentials to {what}: {message}. Renew the kubeconfig user's token or certificate (or fix its exec plugin) and retry"
    )]
    Unauthorized {
        /// The request.
        what: String,
        /// The server's message.
        message: String,
    },
    /// 403: RBAC does not allow the request.
    #[error(
        "access denied (403 Forbidden) to {what}: {message}. theseus needs `{verb}` on `{resource}`{}: grant it to the user (a Role or ClusterRole bound to it); `{}` checks",
        ops_scope(namespace.as_deref()),
        can_i(verb, resource, namespace.as_deref())
    )]
    Forbidden {
        /// The request.
        what: String,
        /// The RBAC verb refused (`get`, `list`, `patch`, `create`, `delete`, `update`).
        verb: &'static str,
        /// The resource as RBAC names it (`nodes`, `pods/eviction`, `deployments.apps`,
        /// `leases.coordination.k8s.io`).
        resource: String,
        /// The namespace, for namespaced requests.
        namespace: Option<String>,
        /// The server's message.
        message: String,
    },
    /// 404 where the object must exist.
    #[error(
        "{what}: not found (404): {message}. The object was deleted or renamed meanwhile; check it with kubectl get"
    )]
    NotFound {
        /// The request.
        what: String,
        /// The server's message.
        message: String,
    },
    /// 409 that retries did not resolve: the object keeps changing under theseus.
    #[error(
        "{what}: conflict (409): {message}. Another client keeps changing the object; find who (kubectl get -o yaml, managedFields) and retry"
    )]
    Conflict {
        /// The request.
        what: String,
        /// The server's message.
        message: String,
    },
    /// Any other error status from the API server.
    #[error("{what} failed: {code}: {message}")]
    Api {
        /// The request.
        what: String,
        /// HTTP status code.
        code: u16,
        /// The server's `Status.reason` and message.
        message: String,
    },
    /// An object or answer theseus cannot use (an answer that does not decode, a malformed
    /// annotation, an unknown workload kind).
    #[error("{what}: {message}")]
    Invalid {
        /// The object or request.
        what: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The lock Lease is held by another holder (or is gone): this run no longer owns the
    /// cluster and must stop acting on it.
    #[error(
        "the lock Lease {lease} is {}: this run lost its lock on the cluster and stops. Check that no other theseus run acts on it (kubectl get lease -n {} -o yaml) before resuming",
        holder.as_ref().map(|h| format!("now held by {h:?}")).unwrap_or_else(|| "gone".into()),
        lease.split('/').next().unwrap_or_default()
    )]
    LeaseLost {
        /// The Lease, `namespace/name`.
        lease: String,
        /// Its holder now; none when the Lease no longer exists.
        holder: Option<String>,
    },
}

fn ops_scope(namespace: Option<&str>) -> String {
    namespace
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

/// The `kubectl auth can-i` command that checks an RBAC permission.
fn can_i(verb: &str, resource: &str, namespace: Option<&str>) -> String {
    let res = match resource.split_once('/') {
        Some((r, sub)) => format!("{r} --subresource={sub}"),
        None => resource.to_string(),
    };
    let ns = namespace.map(|n| format!(" -n {n}")).unwrap_or_default();
    format!("kubectl auth can-i {verb} {res}{ns}")
}

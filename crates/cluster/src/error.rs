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

//! A kube-rs client from kubectl-style flags: `--kubeconfig` and `--context`, else `KUBECONFIG`,
//! else `~/.kube/config`, else the in-cluster service account.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{ClientError, error_chain};

/// Where the cluster is: kubectl's global flags.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--kubeconfig`: the kubeconfig file. None: `KUBECONFIG`, then `~/.kube/config`, then the
    /// in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: the kubeconfig context. None: its `current-context`.
    pub context: Option<String>,
    /// Turns off kube-rs's default retry layer (`Config::default_retry`), which silently retries
    /// 429, 503 and 504 answers with backoff. The engine sets it: it needs the eviction API's
    /// 429 (a PodDisruptionBudget refusing a disruption) raw and at once, where the default
    /// retry would hide the refusal for minutes. False (the default) keeps the retries, which
    /// suit read-only captures.
    pub no_retry: bool,
}

/// A client and what it points at.
#[derive(Clone)]
pub struct Connection {
    /// The client.
    pub client: Client,
    /// The context used (none in-cluster).
    pub context: Option<String>,
    /// The API server URL.
    pub server: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Builds a client from the kubeconfig and context. Only reads files: nothing is sent to the
/// cluster yet, so an unreachable server shows at the first request.
pub async fn connect(opts: &ClientOptions) -> Result<Connection, ClientError> {
    let env_path = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let (kubeconfig, path) = match (&opts.kubeconfig, env_path) {
        (Some(p), _) => (read(p)?, Some(p.clone())),
        (None, Some(env)) => {
            let kc = Kubeconfig::read().map_err(|e| ClientError::Kubeconfig {
                path: PathBuf::from(&env),
                message: error_chain(&e),
            })?;
            (kc, Some(PathBuf::from(env)))
        }
        (None, None) => match Kubeconfig::read() {
            Ok(kc) => (kc, None),
            Err(e) if opts.context.is_some() => {
                return Err(ClientError::NoConfig {
                    message: format!(
                        "--context needs a kubeconfig and none was found ({})",
                        error_chain(&e)
                    ),
                });
            }
            Err(e) => return in_cluster(&error_chain(&e), opts.no_retry),
        },
    };
    let known: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    let context = match opts
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .filter(|c| !c.is_empty())
    {
        Some(c) => c,
        None => {
            return Err(ClientError::Invalid {
                context: "(current-context)".into(),
                message: format!(
                    "the kubeconfig has no current-context; pick one of its contexts with --context: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    };
    if !known.contains(&context) {
        return Err(ClientError::UnknownContext {
            context,
            path,
            known,
        });
    }
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| ClientError::Invalid {
            context: context.clone(),
            message: error_chain(&e),
        })?;
    build(config, Some(context), opts.no_retry)
}

fn read(path: &PathBuf) -> Result<Kubeconfig, ClientError> {
    if !path.exists() {
        return Err(ClientError::Kubeconfig {
            path: path.clone(),
            message: "no such file".into(),
        });
    }
    Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
        path: path.clone(),
        message: error_chain(&e),
    })
}

fn in_cluster(no_kubeconfig: &str, no_retry: bool) -> Result<Connection, ClientError> {
    match Config::incluster() {
        Ok(config) => build(config, None, no_retry),
        Err(e) => Err(ClientError::NoConfig {
            message: format!(
                "no kubeconfig ({no_kubeconfig}) and not in a pod ({})",
                error_chain(&e)
            ),
        }),
    }
}

fn build(
    mut config: Config,
    context: Option<String>,
    no_retry: bool,
) -> Result<Connection, ClientError> {
    if no_retry {
        config.default_retry = false;
    }
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ClientError::Invalid {
        context: context.clone().unwrap_or_else(|| "in-cluster".into()),
        message: error_chain(&e),
    })?;
    Ok(Connection {
        client,
        context,
        server,
    })
}

/// A client for an API server that is a tower service in this process (the simulator's
/// router): no sockets, no retry layer, and on a paused tokio clock hours pass in milliseconds.
pub fn in_process(router: axum::Router) -> kube::Client {
    kube::Client::new(router, "default")
}

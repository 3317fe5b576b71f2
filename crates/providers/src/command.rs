//! The `command` provider: runs a command template on this machine for each node.
//!
//! The template is run with `sh -c`; the node and the target are passed in environment variables,
//! never spliced into the command line (no quoting bugs, no injection):
//!
//! | variable | value |
//! | --- | --- |
//! | `THESEUS_NODE` | the node's name |
//! | `THESEUS_NODE_IP` | its InternalIP (empty when unknown) |
//! | `THESEUS_NODE_ROLES` | comma-separated roles (`control-plane`, `worker`) |
//! | `THESEUS_ACTION` | `os-migration`, `upgrade` or `reboot` |
//! | `THESEUS_TARGET_OS_IMAGE` | target OS image (os-migration) |
//! | `THESEUS_TARGET_KERNEL_VERSION` | target kernel, when given |
//! | `THESEUS_TARGET_KUBELET_VERSION` | target kubelet version, when given |
//!
//! Exit code 0 is success; anything else fails the step with the end of the output. The command
//! is killed when it outlives the timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::{Action, NodeTarget, Outcome, Provider, ProviderError, tail};

/// Output kept per stream for the journal.
const KEEP: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct CommandProvider {
    pub template: String,
    pub timeout: Duration,
    /// Working directory (default: the current one).
    pub dir: Option<std::path::PathBuf>,
}

impl CommandProvider {
    pub fn new(template: impl Into<String>, timeout: Duration) -> Result<Self, ProviderError> {
        let template = template.into();
        if template.trim().is_empty() {
            return Err(ProviderError::Config {
                provider: "command".into(),
                message: "the command template is empty".into(),
            });
        }
        if timeout.is_zero() {
            return Err(ProviderError::Config {
                provider: "command".into(),
                message: "the timeout must be above zero".into(),
            });
        }
        Ok(CommandProvider {
            template,
            timeout,
            dir: None,
        })
    }

    fn env(node: &NodeTarget, action: &Action) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("THESEUS_NODE", node.name.clone()),
            (
                "THESEUS_NODE_IP",
                node.internal_ip.clone().unwrap_or_default(),
            ),
            ("THESEUS_NODE_ROLES", node.roles.join(",")),
            ("THESEUS_ACTION", action.name().to_string()),
        ];
        match action {
            Action::OsMigration {
                os_image,
                kernel_version,
                kubelet_version,
            } => {
                env.push(("THESEUS_TARGET_OS_IMAGE", os_image.clone()));
                if let Some(k) = kernel_version {
                    env.push(("THESEUS_TARGET_KERNEL_VERSION", k.clone()));
                }
                if let Some(k) = kubelet_version {
                    env.push(("THESEUS_TARGET_KUBELET_VERSION", k.clone()));
                }
            }
            Action::Upgrade { kubelet_version } => {
                env.push(("THESEUS_TARGET_KUBELET_VERSION", kubelet_version.clone()));
            }
            Action::Provision {
                new_node,
                os_image,
                kernel_version,
                kubelet_version,
            } => {
                env.push(("THESEUS_NEW_NODE", new_node.clone()));
                env.push(("THESEUS_TARGET_OS_IMAGE", os_image.clone()));
                if let Some(k) = kernel_version {
                    env.push(("THESEUS_TARGET_KERNEL_VERSION", k.clone()));
                }
                if let Some(k) = kubelet_version {
                    env.push(("THESEUS_TARGET_KUBELET_VERSION", k.clone()));
                }
            }
            Action::Reboot | Action::Decommission => {}
        }
        env
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut buf).await;
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[async_trait::async_trait]
impl Provider for CommandProvider {
    fn name(&self) -> &str {
        "command"
    }

    async fn run(&self, node: &NodeTarget, action: &Action) -> Result<Outcome, ProviderError> {
        let started = tokio::time::Instant::now();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.template)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in Self::env(node, action) {
            cmd.env(k, v);
        }
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().map_err(|e| ProviderError::Failed {
            provider: "command".into(),
            message: format!("cannot start `sh -c {}`: {e}", self.template),
        })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let waited = tokio::time::timeout(self.timeout, async {
            let (out, err, status) = tokio::join!(read_all(stdout), read_all(stderr), child.wait());
            (out, err, status)
        })
        .await;
        let (out, err, status) = match waited {
            Ok(x) => x,
            Err(_) => {
                // kill_on_drop does it too; be explicit and reap the process.
                let _ = child.kill().await;
                return Err(ProviderError::Timeout {
                    provider: "command".into(),
                    node: node.name.clone(),
                    after: self.timeout,
                });
            }
        };
        let status = status.map_err(|e| ProviderError::Failed {
            provider: "command".into(),
            message: format!("waiting for the command for node {}: {e}", node.name),
        })?;
        let output = tail(&format!("{out}{err}"), KEEP);
        let code = status.code();
        if !status.success() {
            let why = match code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".to_string(),
            };
            // The last words on stderr, else on stdout.
            let last_of = |s: &str| {
                s.lines()
                    .rfind(|l| !l.trim().is_empty())
                    .map(str::to_string)
            };
            let last = last_of(&err).or_else(|| last_of(&out)).unwrap_or_default();
            return Err(ProviderError::Failed {
                provider: "command".into(),
                message: format!(
                    "the command for node {} ({}) failed with {why}: {last}",
                    node.name,
                    action.name()
                ),
            });
        }
        Ok(Outcome {
            summary: format!("{} done by command (exit 0)", action.name()),
            exit_code: code,
            output,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

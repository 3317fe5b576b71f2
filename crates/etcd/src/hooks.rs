//! Hooks: how a new member gets started and an old one stopped and wiped. theseus does not know
//! how members run (systemd, static pods, ssh); a hook does. [`CommandHooks`] runs command
//! templates; [`crate::local::LocalLauncher`] runs etcd on this machine (tests, the demo).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::client::MemberId;
use crate::error::{Error, Result};

/// Everything needed to start a new member that joins an existing cluster.
#[derive(Debug, Clone, Serialize)]
pub struct StartSpec {
    pub name: String,
    pub member_id: MemberId,
    pub peer_url: String,
    pub client_url: String,
    /// `--initial-cluster`: every member's `name=peerURL`, including the new one.
    pub initial_cluster: String,
    /// `--initial-cluster-state`: always `existing`.
    pub initial_cluster_state: String,
}

/// Why a member is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The old member was removed from the cluster after its replacement joined.
    Replaced,
    /// A learner was removed again after a failure (rollback).
    RolledBack,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Replaced => "replaced",
            StopReason::RolledBack => "rolled-back",
        })
    }
}

/// A member to stop and wipe; it is no longer in the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct StopSpec {
    pub name: String,
    pub member_id: MemberId,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub reason: StopReason,
}

/// Starts new members and stops and wipes removed ones. Both must be idempotent: a rerun after a
/// failure may call them again.
#[async_trait]
pub trait MemberHooks: Send + Sync {
    /// Starts the new member (it joins with `--initial-cluster-state existing`) and returns once
    /// it has been launched; theseus then waits for it to catch up.
    async fn start(&self, spec: &StartSpec) -> Result<()>;
    /// Stops a member that is no longer in the cluster and wipes its data directory. Returns a
    /// note for the report (e.g. what the user still has to do), if any.
    async fn stop_and_wipe(&self, spec: &StopSpec) -> Result<Option<String>>;
}

/// Command templates run with `sh -c`. Placeholders `{name}`, `{member_id}`, `{peer_url}`,
/// `{client_url}`, `{initial_cluster}`, `{initial_cluster_state}` are replaced by shell-quoted
/// values; the same values are in the environment as `THESEUS_ETCD_NAME`,
/// `THESEUS_ETCD_MEMBER_ID`, `THESEUS_ETCD_PEER_URL(S)`, `THESEUS_ETCD_CLIENT_URL(S)`,
/// `THESEUS_ETCD_INITIAL_CLUSTER`, `THESEUS_ETCD_INITIAL_CLUSTER_STATE`, plus
/// `THESEUS_ETCD_ACTION` (`start`/`stop`) and `THESEUS_ETCD_STOP_REASON`.
/// The start command must return once etcd has been launched (e.g. `systemctl start`, or
/// `ssh host 'systemd-run …'`); its output goes to a file, so a backgrounded etcd does not hold
/// it open.
#[derive(Debug, Clone)]
pub struct CommandHooks {
    pub start: Option<String>,
    pub stop: Option<String>,
    pub timeout: Duration,
}

/// Quotes a value for `sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), &shell_quote(v));
    }
    out
}

static HOOK_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs `sh -c cmd` with `env`, output to a temporary file, within `timeout`. Returns the output.
pub(crate) async fn run_shell(
    hook: &'static str,
    member: &str,
    cmd: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String> {
    let fail = |detail: String| Error::Hook {
        hook,
        member: member.to_string(),
        detail,
    };
    let log: PathBuf = std::env::temp_dir().join(format!(
        "theseus-hook-{}-{}.log",
        std::process::id(),
        HOOK_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let out = std::fs::File::create(&log)
        .map_err(|e| fail(format!("cannot create {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| fail(format!("cannot open {}: {e}", log.display())))?;
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .map_err(|e| fail(format!("cannot run sh -c {cmd:?}: {e}")))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(format!("waiting for {cmd:?}: {e}"))),
        Err(_) => {
            let _ = child.kill().await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            return Err(fail(format!(
                "{cmd:?} did not finish within {}s (a start command must return once etcd is launched){}",
                timeout.as_secs_f64(),
                tail(&text)
            )));
        }
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        return Err(fail(format!("{cmd:?} exited with {status}{}", tail(&text))));
    }
    Ok(text)
}

/// The last lines of a command's output, for an error message.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(8);
    format!("; output: {}", lines[from..].join(" | "))
}

#[async_trait]
impl MemberHooks for CommandHooks {
    async fn start(&self, spec: &StartSpec) -> Result<()> {
        let Some(t) = &self.start else {
            return Err(Error::Hook {
                hook: "start hook",
                member: spec.name.clone(),
                detail: "no start command given (--start-command, or --launcher local)".into(),
            });
        };
        let vars = [
            ("name", spec.name.clone()),
            ("member_id", spec.member_id.to_string()),
            ("peer_url", spec.peer_url.clone()),
            ("client_url", spec.client_url.clone()),
            ("initial_cluster", spec.initial_cluster.clone()),
            ("initial_cluster_state", spec.initial_cluster_state.clone()),
        ];
        let mut env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| {
                (
                    format!("THESEUS_ETCD_{}", k.to_ascii_uppercase()),
                    v.clone(),
                )
            })
            .collect();
        env.push(("THESEUS_ETCD_PEER_URLS".into(), spec.peer_url.clone()));
        env.push(("THESEUS_ETCD_CLIENT_URLS".into(), spec.client_url.clone()));
        env.push(("THESEUS_ETCD_ACTION".into(), "start".into()));
        run_shell(
            "start command",
            &spec.name,
            &render(t, &vars),
            &env,
            self.timeout,
        )
        .await?;
        Ok(())
    }

    async fn stop_and_wipe(&self, spec: &StopSpec) -> Result<Option<String>> {
        let Some(t) = &self.stop else {
            return Ok(Some(format!(
                "no stop command given: stop etcd member {} ({}) and wipe its data directory by hand",
                spec.name,
                spec.peer_urls.join(",")
            )));
        };
        let vars = [
            ("name", spec.name.clone()),
            ("member_id", spec.member_id.to_string()),
            (
                "peer_url",
                spec.peer_urls.first().cloned().unwrap_or_default(),
            ),
            (
                "client_url",
                spec.client_urls.first().cloned().unwrap_or_default(),
            ),
            ("initial_cluster", String::new()),
            ("initial_cluster_state", String::new()),
        ];
        let mut env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| {
                (
                    format!("THESEUS_ETCD_{}", k.to_ascii_uppercase()),
                    v.clone(),
                )
            })
            .collect();
        env.push(("THESEUS_ETCD_PEER_URLS".into(), spec.peer_urls.join(",")));
        env.push((
            "THESEUS_ETCD_CLIENT_URLS".into(),
            spec.client_urls.join(","),
        ));
        env.push(("THESEUS_ETCD_ACTION".into(), "stop".into()));
        env.push(("THESEUS_ETCD_STOP_REASON".into(), spec.reason.to_string()));
        run_shell(
            "stop command",
            &spec.name,
            &render(t, &vars),
            &env,
            self.timeout,
        )
        .await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_templates() {
        assert_eq!(
            shell_quote("http://127.0.0.1:2380"),
            "http://127.0.0.1:2380"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let r = render(
            "start {name} --initial-cluster {initial_cluster}",
            &[
                ("name", "etcd 4".into()),
                ("initial_cluster", "a=http://h:1,b=http://h:2".into()),
            ],
        );
        assert_eq!(
            r,
            "start 'etcd 4' --initial-cluster a=http://h:1,b=http://h:2"
        );
    }

    #[tokio::test]
    async fn command_hooks_get_the_values_and_report_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hooks = CommandHooks {
            start: Some(format!(
                "echo \"$THESEUS_ETCD_ACTION {{name}} $THESEUS_ETCD_INITIAL_CLUSTER\" > {}",
                out.display()
            )),
            stop: Some("echo boom >&2; exit 3".into()),
            timeout: Duration::from_secs(10),
        };
        let spec = StartSpec {
            name: "n1".into(),
            member_id: MemberId(0xab),
            peer_url: "http://127.0.0.1:1".into(),
            client_url: "http://127.0.0.1:2".into(),
            initial_cluster: "a=http://127.0.0.1:3,n1=http://127.0.0.1:1".into(),
            initial_cluster_state: "existing".into(),
        };
        hooks.start(&spec).await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text.trim(),
            "start n1 a=http://127.0.0.1:3,n1=http://127.0.0.1:1"
        );
        let stop = StopSpec {
            name: "old".into(),
            member_id: MemberId(1),
            peer_urls: vec![],
            client_urls: vec![],
            reason: StopReason::Replaced,
        };
        let e = hooks.stop_and_wipe(&stop).await.unwrap_err().to_string();
        assert!(
            e.contains("stop command for member \"old\" failed") && e.contains("boom"),
            "{e}"
        );

        let slow = CommandHooks {
            start: Some("sleep 5".into()),
            stop: None,
            timeout: Duration::from_millis(200),
        };
        let e = slow.start(&spec).await.unwrap_err().to_string();
        assert!(e.contains("did not finish within 0.2s"), "{e}");
        let note = slow.stop_and_wipe(&stop).await.unwrap().unwrap();
        assert!(note.contains("no stop command given"), "{note}");
    }
}

//! Pre- and post-node hooks (`spec.hooks`): commands run with `sh -c` on this machine, the node in
//! environment variables (never spliced into the command line), each with a timeout after which
//! it is killed.

use std::process::Stdio;
use std::time::Duration;

use std::io::Read;

use crate::error::StepError;

/// Output kept for the error message.
const KEEP: usize = 2048;

/// Runs `commands` in order; the first failure stops and is returned.
pub(crate) async fn run(
    commands: &[String],
    hook: &str,
    node: &str,
    node_ip: Option<&str>,
    run_id: &str,
    timeout: Duration,
) -> Result<(), StepError> {
    for command in commands {
        let fail = |message: String| StepError::Hook {
            node: node.to_string(),
            hook: hook.to_string(),
            command: command.clone(),
            message,
        };
        // The command runs on real time even when the run is on virtual time (a simulation):
        // a blocking thread waits for it against a wall-clock deadline.
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("THESEUS_NODE", node)
            .env("THESEUS_NODE_IP", node_ip.unwrap_or(""))
            .env("THESEUS_HOOK", hook)
            .env("THESEUS_RUN_ID", run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let done = tokio::task::spawn_blocking(move || wait_with_deadline(cmd, timeout))
            .await
            .map_err(|e| fail(format!("the hook's thread failed: {e}")))?
            .map_err(fail)?;
        let done = match done {
            Some(r) => Ok(r),
            None => Err(()),
        };
        match done {
            Err(_) => {
                return Err(fail(format!(
                    "did not finish within {} s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok((status, output)) if !status.success() => {
                let text = String::from_utf8_lossy(&output);
                let text = text.trim();
                let start = text.len().saturating_sub(KEEP);
                let start = (start..=text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                return Err(fail(format!(
                    "exit code {}{}",
                    status
                        .code()
                        .map_or("(signal)".to_string(), |c| c.to_string()),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", &text[start..])
                    }
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Runs `cmd`, collecting its output; None when it outlived `timeout` (it is killed).
fn wait_with_deadline(
    mut cmd: std::process::Command,
    timeout: Duration,
) -> Result<Option<(std::process::ExitStatus, Vec<u8>)>, String> {
    // Its own process group, so that a timeout kills what the shell started too (a grandchild
    // would otherwise keep the output pipes open).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut output = out.join().unwrap_or_default();
    output.extend(err.join().unwrap_or_default());
    Ok(status.map(|s| (s, output)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_see_the_node_and_failures_name_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("seen");
        let ok = format!(
            "echo \"$THESEUS_HOOK $THESEUS_NODE $THESEUS_NODE_IP $THESEUS_RUN_ID\" > {}",
            f.display()
        );
        run(
            &[ok],
            "preNode",
            "w1",
            Some("10.0.0.1"),
            "r1",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap().trim(),
            "preNode w1 10.0.0.1 r1"
        );
        let e = run(
            &["echo broken >&2; exit 3".to_string()],
            "postNode",
            "w1",
            None,
            "r1",
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("postNode") && m.contains("exit code 3") && m.contains("broken"),
            "{m}"
        );
        let e = run(
            &["sleep 30".to_string()],
            "preNode",
            "w1",
            None,
            "r1",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
    }
}

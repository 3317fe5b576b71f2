//! theseus-providers: node actions behind one trait.
//!
//! A provider does to a machine what the migration needs (reimage it to a new OS, upgrade its
//! kubelet, reboot it) and nothing else. Invariant: **a provider never drains or cordons**; the
//! engine does that before it calls one, and waits for the node to come back after. Providers:
//!
//! - [`sim::SimProvider`]: drives the simulator's machine control API (`/sim/v1/machines`), over
//!   loopback HTTP or in-process through the simulator's router.
//! - [`command::CommandProvider`]: runs a command template locally with the node and the target in
//!   environment variables; exit code, timeout and captured output.
//!
//! SSH, Ansible and Kubean providers come later, behind the same trait.

pub mod command;
pub mod sim;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The node an action is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTarget {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// What to do to the machine under a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    /// Remove the node from the cluster, reinstall the machine with `os_image` (and a kernel,
    /// when given), boot it and join it again under the same name and IP (remove-before-add).
    OsMigration {
        os_image: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel_version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kubelet_version: Option<String>,
    },
    /// Upgrade the node's kubelet to `kubelet_version` (the OS stays).
    Upgrade { kubelet_version: String },
    /// Reboot the machine.
    Reboot,
    /// Add-before-remove, first half: bring up a new machine that joins the cluster as node
    /// `new_node` with `os_image` (the engine then waits for it to be Ready before it drains the
    /// old node).
    Provision {
        new_node: String,
        os_image: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel_version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kubelet_version: Option<String>,
    },
    /// Add-before-remove, second half: the old node is drained; delete its Node object and
    /// power its machine off for good.
    Decommission,
}

impl Action {
    /// The value of `THESEUS_ACTION` for command templates.
    pub fn name(&self) -> &'static str {
        match self {
            Action::OsMigration { .. } => "os-migration",
            Action::Upgrade { .. } => "upgrade",
            Action::Reboot => "reboot",
            Action::Provision { .. } => "provision",
            Action::Decommission => "decommission",
        }
    }
}

/// What a provider did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// One line for the progress display and the report.
    pub summary: String,
    /// Exit code of a command, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the captured output (for the journal).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    pub seconds: f64,
}

/// How far an action got, as the provider sees it: what `theseus resume` asks after a crash
/// between the journal's intent and its result, so that no action runs twice and none is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionProgress {
    /// Nothing of it happened: run it.
    NotStarted,
    /// Under way (a reimage in progress): wait for the node, do not run it again.
    Running,
    /// Done: the machine has the target.
    Finished,
    /// The provider cannot tell; the engine decides from the Node object.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: {message}")]
    Failed { provider: String, message: String },
    #[error(
        "{provider}: the command for node {node} did not finish within {after:?} and was killed; raise the provider's timeout if the action needs longer"
    )]
    Timeout {
        provider: String,
        node: String,
        after: Duration,
    },
    #[error("{provider}: cannot reach {target}: {message}")]
    Unreachable {
        provider: String,
        target: String,
        message: String,
    },
    #[error("{provider}: bad configuration: {message}")]
    Config { provider: String, message: String },
}

/// A node-action provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name (`sim`, `command`, ...), for messages and the journal.
    fn name(&self) -> &str;

    /// Carries out `action` on `node`'s machine. Returns once the action is done or under way in
    /// a way the engine can observe through the Kubernetes API (the node going away and coming
    /// back); waiting for the node to be Ready is the engine's job.
    async fn run(&self, node: &NodeTarget, action: &Action) -> Result<Outcome, ProviderError>;

    /// How far `action` on `node` got (see [`ActionProgress`]). The default cannot tell.
    async fn progress(
        &self,
        _node: &NodeTarget,
        _action: &Action,
    ) -> Result<ActionProgress, ProviderError> {
        Ok(ActionProgress::Unknown)
    }
}

/// Keeps the last `max` bytes of `s`, cut at a character boundary.
pub(crate) fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("aé", 1), "…");
        assert_eq!(tail("xyé", 2), "…é");
    }

    #[test]
    fn actions_serialize_as_tagged_camel_case() {
        let a = Action::OsMigration {
            os_image: "Ubuntu 22.04.4 LTS".into(),
            kernel_version: None,
            kubelet_version: Some("v1.33.4".into()),
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kind"], "osMigration");
        assert_eq!(v["osImage"], "Ubuntu 22.04.4 LTS");
        assert_eq!(v["kubeletVersion"], "v1.33.4");
        assert_eq!(serde_json::from_value::<Action>(v).unwrap(), a);
    }
}

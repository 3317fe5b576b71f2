//! Serving the API on a loopback TCP port, and the kubeconfig that points clients at it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::server::ApiServer;

/// A running HTTP listener for one API server.
pub struct Serving {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds `addr` (use port 0 for an ephemeral port) and serves the router until the task is
/// aborted or the runtime stops.
pub async fn serve(server: Arc<ApiServer>, addr: SocketAddr) -> std::io::Result<Serving> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let router = server.router();
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Serving { addr, task })
}

/// A kubeconfig for an unauthenticated plain-HTTP server at `addr`.
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: theseus-sim\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: theseus-sim\n  context:\n    cluster: theseus-sim\n    user: theseus-sim\n    namespace: default\ncurrent-context: theseus-sim\nusers:\n- name: theseus-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

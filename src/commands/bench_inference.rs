//! `flotilla bench inference`: requests/s and latency of the inference
//! worker, measured from outside like any client would.
//!
//! It writes the example model (`model init`), starts the real `flotilla
//! worker` as a child process on 127.0.0.1 (with its own `nats-server` when
//! one is found), and drives it over keep-alive HTTP/1.1 connections and
//! NATS requests: closed loops at each concurrency and batch size, then an
//! open loop at a fixed rate (1,000 req/s by default) whose latencies are
//! measured from each request's scheduled send time whenever the previous
//! answer on its connection came after it, so a server stall is counted
//! rather than hidden (coordinated omission), while the client timer's
//! 1 ms granularity is not charged to the server.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use flotilla_bus::nats::server::{NatsServer, ServerError};
use flotilla_bus::nats::NatsBus;
use flotilla_bus::{Bus, Message};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `flotilla bench inference`.
#[derive(Debug, Args)]
pub struct BenchInferenceArgs {
    /// Seconds per closed-loop measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Observations per request, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batches: Vec<usize>,
    /// Requests in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
    /// Transports: http, nats.
    #[arg(long, value_delimiter = ',', default_value = "http,nats")]
    pub transports: Vec<String>,
    /// Rate of the open-loop run (batch 1, HTTP); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Extra arguments for the worker (e.g. `--workers 2`), space-separated.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub worker_args: String,
}

/// One measurement.
struct Run {
    label: String,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    batch: usize,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        super::percentile_ms(&self.latencies, p)
    }

    fn row(&self) -> String {
        let rps = self.requests as f64 / self.elapsed.as_secs_f64();
        format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            self.label,
            rps,
            rps * self.batch as f64,
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99),
            self.errors
        )
    }
}

/// The running worker (and its nats-server); killed on drop.
struct Worker {
    child: Child,
    http: SocketAddr,
    nats: Option<(NatsServer, String)>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flotilla bench inference`.
pub fn run(args: BenchInferenceArgs) -> Result<ExitCode> {
    let artifacts =
        std::env::temp_dir().join(format!("flotilla-bench-inference-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&artifacts);
    flotilla_inference::write_example(
        &artifacts,
        "v0.1.0",
        0,
        flotilla_inference::WeightsFormat::Safetensors,
    )
    .map_err(|e| anyhow!(e))?;
    let want_nats = args.transports.iter().any(|t| t == "nats");
    let worker = start_worker(&artifacts, want_nats, &args.worker_args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(measure(&args, &worker));
    drop(worker);
    let _ = std::fs::remove_dir_all(&artifacts);
    outcome?;
    Ok(ExitCode::SUCCESS)
}

fn start_worker(artifacts: &Path, want_nats: bool, extra: &str) -> Result<Worker> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    let nats = match want_nats.then(NatsServer::start) {
        Some(Ok(server)) => {
            let url = server.url();
            Some((server, url))
        }
        Some(Err(ServerError::NotFound)) => {
            eprintln!("nats-server not found (set NATS_SERVER_BIN): NATS rows skipped");
            None
        }
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("worker")
        .arg("--artifacts")
        .arg(artifacts)
        .arg("--http")
        .arg(http.to_string())
        .args(extra.split_whitespace())
        .env("FLOTILLA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some((_, url)) = &nats {
        cmd.arg("--nats").arg(url);
    }
    let child = cmd.spawn().context("cannot start the worker")?;
    let mut worker = Worker { child, http, nats };
    super::wait_ready("the worker", http, &mut worker.child)?;
    Ok(worker)
}

fn body(batch: usize) -> Vec<u8> {
    let obs = json!({"speed": 25.5, "steering": 0.1, "sensors": [0.8, 0.2, 0.5]});
    serde_json::to_vec(&json!({"observations": vec![obs; batch], "deterministic": true}))
        .unwrap_or_default()
}

async fn measure(args: &BenchInferenceArgs, worker: &Worker) -> Result<()> {
    let nats_bus = match &worker.nats {
        Some((_, url)) => Some(Arc::new(NatsBus::connect(url).await?) as Arc<dyn Bus>),
        None => None,
    };
    let seconds = Duration::from_secs_f64(args.seconds);
    let mut runs = Vec::new();
    for transport in &args.transports {
        for &batch in &args.batches {
            for &concurrency in &args.concurrency {
                let label = format!("{transport} | {batch} | {concurrency}");
                let run = match (transport.as_str(), &nats_bus) {
                    ("http", _) => closed_http(worker.http, batch, concurrency, seconds).await?,
                    ("nats", Some(bus)) => {
                        closed_nats(bus.clone(), batch, concurrency, seconds).await
                    }
                    ("nats", None) => continue,
                    (other, _) => bail!("transports: unknown transport {other:?} (http, nats)"),
                };
                let run = Run { label, ..run };
                eprintln!("{}", run.row());
                runs.push(run);
            }
        }
    }
    println!("| transport | batch | concurrency | req/s | observations/s | p50 ms | p95 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        println!("{}", run.row());
    }
    if args.rate > 0 {
        let run = open_http(worker.http, args.rate, seconds).await?;
        println!();
        println!("Open loop, HTTP, batch 1, {} req/s offered:", args.rate);
        println!("| transport | batch | concurrency | req/s | observations/s | p50 ms | p95 ms | p99 ms | errors |");
        println!("|---|---|---|---|---|---|---|---|---|");
        println!("{}", run.row());
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 connection posting one body again and again.
struct HttpConn {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn open(addr: SocketAddr, body: &[u8]) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Ok(HttpConn {
            stream,
            request,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends the request and reads the response; `Ok(true)` on 200.
    async fn post(&mut self) -> Result<bool> {
        self.stream.write_all(&self.request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?;
                let ok = head.starts_with("HTTP/1.1 200");
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| anyhow!("response without Content-Length"))?;
                while self.buf.len() < end + 4 + length {
                    self.read_more().await?;
                }
                return Ok(ok);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Latencies and errors of one client task.
type Tally = (Vec<Duration>, usize);

fn merge(label: &str, batch: usize, tallies: Vec<Tally>, elapsed: Duration) -> Run {
    let errors = tallies.iter().map(|t| t.1).sum();
    let mut latencies: Vec<Duration> = tallies.into_iter().flat_map(|t| t.0).collect();
    latencies.sort_unstable();
    Run {
        label: label.to_string(),
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
        batch,
    }
}

/// One client of a closed loop: sends a request and waits for its answer.
trait Client: Send + 'static {
    /// Whether the request was answered with success.
    fn call(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

impl Client for HttpConn {
    async fn call(&mut self) -> bool {
        matches!(self.post().await, Ok(true))
    }
}

/// A NATS requester of the model's predictions.
struct NatsClient {
    bus: Arc<dyn Bus>,
    body: Vec<u8>,
}

impl Client for NatsClient {
    async fn call(&mut self) -> bool {
        let msg = Message::new("flotilla.infer.carla-ppo", self.body.clone())
            .with_header("Content-Type", "application/json");
        match self.bus.request(msg, Duration::from_secs(5)).await {
            Ok(r) => r.header("Status") == Some("200"),
            Err(_) => false,
        }
    }
}

/// Each client sends, waits for the answer and sends again, until
/// `seconds` have passed.
async fn closed_loop(clients: Vec<impl Client>, batch: usize, seconds: Duration) -> Run {
    let started = Instant::now();
    let end = started + seconds;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut tally: Tally = (Vec::new(), 0);
                while Instant::now() < end {
                    let t = Instant::now();
                    if client.call().await {
                        tally.0.push(t.elapsed());
                    } else {
                        tally.1 += 1;
                    }
                }
                tally
            })
        })
        .collect();
    gather("", batch, tasks, started).await
}

/// The tallies of the client tasks, as one run since `started`.
async fn gather(
    label: &str,
    batch: usize,
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<Tally>>,
    started: Instant,
) -> Run {
    let tallies = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    merge(label, batch, tallies, started.elapsed())
}

async fn closed_http(
    addr: SocketAddr,
    batch: usize,
    concurrency: usize,
    seconds: Duration,
) -> Result<Run> {
    let body = body(batch);
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        conns.push(HttpConn::open(addr, &body).await?);
    }
    for conn in &mut conns {
        conn.post().await?;
    }
    Ok(closed_loop(conns, batch, seconds).await)
}

async fn closed_nats(
    bus: Arc<dyn Bus>,
    batch: usize,
    concurrency: usize,
    seconds: Duration,
) -> Run {
    let body = body(batch);
    let clients: Vec<NatsClient> = (0..concurrency)
        .map(|_| NatsClient {
            bus: bus.clone(),
            body: body.clone(),
        })
        .collect();
    closed_loop(clients, batch, seconds).await
}

/// Batch 1 at `rate` req/s over 16 connections; latency from the scheduled send.
async fn open_http(addr: SocketAddr, rate: u64, seconds: Duration) -> Result<Run> {
    const CONNS: u64 = 16;
    let body = body(1);
    let period = Duration::from_secs_f64(CONNS as f64 / rate as f64);
    let started = Instant::now() + Duration::from_millis(50);
    let sends = (seconds.as_secs_f64() / period.as_secs_f64()) as u64;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let mut conn = HttpConn::open(addr, &body).await?;
        conn.post().await?;
        let offset = period.mul_f64(c as f64 / CONNS as f64);
        tasks.push(tokio::spawn(async move {
            let mut tally: Tally = (Vec::new(), 0);
            let mut previous_done = started;
            for i in 0..sends {
                let due = started + offset + period * i as u32;
                tokio::time::sleep_until(due.into()).await;
                // Late because the last answer came after `due`: the server's
                // delay, counted from `due`. Late only by the timer's 1 ms
                // granularity: the client's, counted from the actual send.
                let from = if previous_done > due {
                    due
                } else {
                    Instant::now()
                };
                match conn.post().await {
                    Ok(true) => tally.0.push(from.elapsed()),
                    _ => tally.1 += 1,
                }
                previous_done = Instant::now();
            }
            tally
        }));
    }
    Ok(gather("http | 1 | open loop", 1, tasks, started).await)
}

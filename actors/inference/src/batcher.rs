//! Dynamic batching across requests.
//!
//! Requests from every connection (HTTP workers, NATS subscribers) go into
//! one bounded queue; batch threads take a request, add whatever else is
//! queued — waiting at most `max_queue_delay` for more — up to
//! `max_batch_size` observations, and run them in one forward pass. Under
//! light load a request runs alone at once (with the default delay of 0);
//! under heavy load requests pile up while a batch runs and the next batch
//! takes them all, which is where the throughput comes from. A full queue
//! refuses at once with `RESOURCE_EXHAUSTED` (429), so memory stays bounded.
//!
//! When nothing is queued or running, a request skips the queue and runs
//! at once on the caller's thread (a forward pass of a small batch takes
//! microseconds): that spares two thread wake-ups, which on a busy machine
//! are the largest part of the tail latency. Anything arriving while a
//! batch runs is queued and batched as above. With `max_queue_delay` > 0
//! every request goes through the queue.
//!
//! The batch threads read the serving policy from [`ServingSlot`] at the
//! start of every batch, so a version switch takes effect between batches
//! and no request ever sees a half-switched model.

use crate::metrics::InferenceMetrics;
use crate::policy::Policy;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use flotilla_messages::inference::{Action, PredictRequest, ServingError, ServingErrorCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Batching settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most observations in one forward pass (a larger request runs alone).
    pub max_batch_size: usize,
    /// How long a batch waits for more requests once it has one.
    pub max_queue_delay: Duration,
    /// Most requests waiting; beyond it requests are refused with 429.
    pub queue_capacity: usize,
    /// Batch threads (each runs single-threaded forward passes).
    pub threads: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_size: 256,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 1024,
            threads: 1,
        }
    }
}

/// The policy that serves traffic now; swapped atomically on activation.
#[derive(Debug, Default)]
pub struct ServingSlot(RwLock<Option<Arc<Policy>>>);

impl ServingSlot {
    /// The serving policy.
    pub fn get(&self) -> Option<Arc<Policy>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `policy` from the next batch on; returns the one it replaces.
    pub fn set(&self, policy: Arc<Policy>) -> Option<Arc<Policy>> {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(policy)
    }
}

/// A batch's answer to one request.
#[derive(Debug, Clone)]
pub struct Batched {
    /// One per observation.
    pub actions: Vec<Action>,
    /// The version that computed them.
    pub version: String,
}

type Answer = Result<Batched, ServingError>;

struct Job {
    request: PredictRequest,
    seed: u64,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the batch threads.
pub struct Batcher {
    tx: Sender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
    inline: bool,
}

/// What the batch threads and inline callers share.
struct Shared {
    slot: Arc<ServingSlot>,
    metrics: InferenceMetrics,
    /// Forward passes running now (batch threads and inline callers).
    running: AtomicUsize,
}

impl Batcher {
    /// Starts `config.threads` batch threads serving `slot`.
    pub fn start(config: &BatchConfig, slot: Arc<ServingSlot>, metrics: InferenceMetrics) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            slot,
            metrics,
            running: AtomicUsize::new(0),
        });
        for n in 0..config.threads.max(1) {
            let (rx, shared, config) = (rx.clone(), shared.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("inference-batch-{n}"))
                .spawn(move || run(&rx, &shared, &config))
                .expect("cannot start a batch thread");
        }
        Batcher {
            tx,
            capacity: config.queue_capacity.max(1),
            shared,
            inline: config.max_queue_delay.is_zero(),
        }
    }

    /// Queues a request; refuses with `RESOURCE_EXHAUSTED` when the queue is full.
    pub fn submit(
        &self,
        request: PredictRequest,
        seed: u64,
    ) -> Result<oneshot::Receiver<Answer>, ServingError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            seed,
            reply,
        };
        let idle = || {
            self.tx.is_empty()
                && self
                    .shared
                    .running
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        };
        if self.inline && idle() {
            execute(self.shared.slot.get(), vec![job], &self.shared.metrics);
            self.shared.running.fetch_sub(1, Ordering::AcqRel);
            return Ok(answer);
        }
        match self.tx.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(ServingError::new(
                ServingErrorCode::ResourceExhausted,
                format!(
                    "the inference queue is full ({} requests waiting); retry later",
                    self.capacity
                ),
            )
            .with_detail("queue_capacity", self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(ServingError::new(
                ServingErrorCode::ServiceUnavailable,
                "the batch threads have stopped",
            )),
        }
    }

    /// Requests waiting.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}

fn run(rx: &Receiver<Job>, shared: &Shared, config: &BatchConfig) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut rows = first.request.observations.len();
        let mut jobs = vec![first];
        let deadline = Instant::now() + config.max_queue_delay;
        while rows < config.max_batch_size {
            let next = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) if !config.max_queue_delay.is_zero() => {
                    rx.recv_deadline(deadline).ok()
                }
                Err(_) => None,
            };
            let Some(job) = next else { break };
            let n = job.request.observations.len();
            if rows + n > config.max_batch_size {
                carry = Some(job);
                break;
            }
            rows += n;
            jobs.push(job);
        }
        shared.metrics.set_queue_depth(rx.len());
        shared.running.fetch_add(1, Ordering::AcqRel);
        execute(shared.slot.get(), jobs, &shared.metrics);
        shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one batch on `policy` and answers every job.
fn execute(policy: Option<Arc<Policy>>, jobs: Vec<Job>, metrics: &InferenceMetrics) {
    let Some(policy) = policy else {
        for job in jobs {
            let _ = job.reply.send(Err(ServingError::no_model()));
        }
        return;
    };
    let mut fitting = Vec::with_capacity(jobs.len());
    for job in jobs {
        match policy.check(&job.request) {
            Ok(()) => fitting.push(job),
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    let rows: usize = fitting.iter().map(|j| j.request.observations.len()).sum();
    if rows == 0 {
        return;
    }
    let started = Instant::now();
    let means = policy.forward(fitting.iter().map(|j| &j.request), rows);
    metrics.observe_forward(
        policy.version(),
        &policy.device_name(),
        rows,
        started.elapsed().as_secs_f64(),
    );
    let means = match means {
        Ok(means) => means,
        Err(e) => {
            for job in fitting {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut offset = 0;
    for job in fitting {
        let n = job.request.observations.len();
        let slice = &means[offset * 3..(offset + n) * 3];
        offset += n;
        let actions = policy.actions(slice, job.request.deterministic, job.seed);
        let _ = job.reply.send(Ok(Batched {
            actions,
            version: policy.version().to_string(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::{write_example, ArtifactStore, WeightsFormat};
    use candle_core::Device;
    use flotilla_messages::inference::Observation;

    fn serving() -> Arc<ServingSlot> {
        let root = tempfile::tempdir().unwrap();
        write_example(root.path(), "v0.1.0", 1, WeightsFormat::Safetensors).unwrap();
        let a = ArtifactStore::new(root.path())
            .load("v0.1.0", &Device::Cpu)
            .unwrap();
        let slot = Arc::new(ServingSlot::default());
        slot.set(Arc::new(Policy::new(a, &Device::Cpu).unwrap()));
        slot
    }

    fn request(rows: usize) -> PredictRequest {
        let obs = Observation {
            speed: 20.0,
            steering: 0.0,
            sensors: vec![0.5; 3],
        };
        PredictRequest {
            observations: vec![obs; rows],
            deterministic: true,
            seed: None,
        }
    }

    #[tokio::test]
    async fn requests_queued_together_run_in_one_forward_pass() {
        let metrics = InferenceMetrics::unregistered();
        let config = BatchConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::from_millis(200),
            ..BatchConfig::default()
        };
        let batcher = Batcher::start(&config, serving(), metrics.clone());
        let answers: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|rows| batcher.submit(request(rows), 0).unwrap())
            .collect();
        for (answer, rows) in answers.into_iter().zip([1, 2, 3]) {
            assert_eq!(answer.await.unwrap().unwrap().actions.len(), rows);
        }
        assert_eq!(metrics.batch_rows.get_sample_count(), 1);
        assert_eq!(metrics.batch_rows.get_sample_sum(), 6.0);
    }

    #[tokio::test]
    async fn a_request_too_big_for_the_batch_runs_in_the_next_one() {
        let metrics = InferenceMetrics::unregistered();
        let config = BatchConfig {
            max_batch_size: 4,
            max_queue_delay: Duration::from_millis(100),
            ..BatchConfig::default()
        };
        let batcher = Batcher::start(&config, serving(), metrics.clone());
        let a = batcher.submit(request(3), 0).unwrap();
        let b = batcher.submit(request(3), 0).unwrap();
        assert_eq!(a.await.unwrap().unwrap().actions.len(), 3);
        assert_eq!(b.await.unwrap().unwrap().actions.len(), 3);
        assert_eq!(metrics.batch_rows.get_sample_count(), 2);
    }

    #[tokio::test]
    async fn without_a_model_every_request_is_service_unavailable() {
        let batcher = Batcher::start(
            &BatchConfig::default(),
            Arc::new(ServingSlot::default()),
            InferenceMetrics::unregistered(),
        );
        let e = batcher
            .submit(request(1), 0)
            .unwrap()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, ServingErrorCode::ServiceUnavailable);
    }
}

//! The executor conformance suite: one set of cases every [`Executor`] must
//! pass, whatever runs its attempts.
//!
//! Each case is a `pub async fn` taking an [`ExecutorHarness`]: the
//! implementation under test over the place it keeps attempts (a jobs
//! directory, a recorded Kubernetes API server, a manifests directory).
//! [`executor_conformance_tests!`](crate::executor_conformance_tests) makes
//! one `#[tokio::test]` per case, so every implementation runs the same
//! list; a case that cannot apply to an implementation is skipped by its
//! harness's [`ExecutorHarness::skip`], which says why. Cases panic with a
//! message on failure, like `assert!`.
//!
//! The cases follow the contract of [`Executor`]: a launch starts an
//! attempt or adopts it, never runs it twice; stop is safe to repeat. This
//! module is compiled for the crate's own tests and with the `test-util`
//! feature, never into the shipped library.

use crate::executor::{Attempt, Executor, Launch};
use async_trait::async_trait;
use flotilla_messages::scheduler::{ExecutorHandle, JobSpec, Outcome};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// The queue of every case's attempts.
pub const QUEUE: &str = "conformance";

/// The value the cases' successful scripts report.
pub const VALUE: f64 = 0.5;

/// The job a case stops without ever launching it.
pub const NEVER_LAUNCHED: &str = "never-launched";

/// How long a case waits for something that should happen.
const WAIT: Duration = Duration::from_secs(20);

/// The grace a case gives an attempt it stops.
const GRACE: Duration = Duration::from_millis(200);

/// The cases, each with a job of its own (so a recording can name its Job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorCase {
    /// [`an_attempt_runs_to_its_outcome`].
    Runs,
    /// [`a_failed_attempt_reports_its_exit_code`].
    Fails,
    /// [`a_running_attempt_is_adopted_after_a_restart`].
    Adopts,
    /// [`an_ended_attempt_is_collected_not_run_again`].
    Collects,
    /// [`stopping_an_ended_attempt_is_fine`].
    StopsEnded,
    /// [`stop_ends_a_running_attempt`].
    StopsRunning,
}

impl ExecutorCase {
    /// The case's job id.
    pub fn job_id(self) -> &'static str {
        match self {
            ExecutorCase::Runs => "runs",
            ExecutorCase::Fails => "fails",
            ExecutorCase::Adopts => "adopts",
            ExecutorCase::Collects => "collects",
            ExecutorCase::StopsEnded => "stops-ended",
            ExecutorCase::StopsRunning => "stops-running",
        }
    }

    /// What the case's attempt runs: a shell script.
    pub fn script(self) -> &'static str {
        match self {
            ExecutorCase::Runs | ExecutorCase::Collects | ExecutorCase::StopsEnded => {
                "echo RESULT=0.5"
            }
            ExecutorCase::Fails => "echo boom >&2; exit 3",
            // Long enough to outlive both launches on a loaded machine.
            ExecutorCase::Adopts => "sleep 2; echo RESULT=0.5",
            // Longer than a case waits: only a stop ends it in time.
            ExecutorCase::StopsRunning => "sleep 30",
        }
    }
}

/// The case's attempt as every harness starts from: attempt 1 of the case's
/// job in [`QUEUE`], running [`ExecutorCase::script`] with `sh -c`.
pub fn attempt(case: ExecutorCase) -> Attempt {
    let command = ["sh", "-c", case.script()].map(String::from).to_vec();
    Attempt {
        queue: QUEUE.into(),
        job_id: case.job_id().into(),
        attempt: 1,
        spec: JobSpec::new(command),
        key: format!("{QUEUE}-{}", case.job_id()),
        node: None,
    }
}

/// Gives the cases one implementation of [`Executor`] and the place it
/// keeps attempts.
#[async_trait]
pub trait ExecutorHarness: Sized + Send + Sync + 'static {
    /// Why `case` cannot apply to this implementation, if it cannot.
    fn skip(case: ExecutorCase) -> Option<&'static str>;

    /// A harness for `case` over a fresh place (a recording holds the
    /// case's exchanges).
    fn start(case: ExecutorCase) -> Self;

    /// Whether attempts run (and so report their script's value); false
    /// when they are only written out.
    fn runs(&self) -> bool;

    /// A new executor over the harness's place: each call is as a
    /// scheduler process that just (re)started has it.
    fn executor(&self) -> Arc<dyn Executor>;

    /// The case's [`attempt`] with what this executor needs (an image, a
    /// label unique on this machine).
    fn attempt(&self, case: ExecutorCase) -> Attempt;

    /// Checks what the place saw (every recorded exchange was made). Cases
    /// call it last, once they dropped their executors.
    async fn finish(self);
}

/// The harness for `case`, or `None` (saying why) when `H` skips it.
pub fn harness<H: ExecutorHarness>(case: ExecutorCase) -> Option<H> {
    match H::skip(case) {
        Some(why) => {
            eprintln!("{case:?} skipped for {}: {why}", std::any::type_name::<H>());
            None
        }
        None => Some(H::start(case)),
    }
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

/// A launch that must have found the attempt running: its handle, whether
/// it was adopted, and its end.
fn running(launch: Launch, what: &str) -> (ExecutorHandle, bool, BoxFuture<'static, Outcome>) {
    match launch {
        Launch::Running {
            handle,
            adopted,
            end,
        } => (handle, adopted, end),
        Launch::Ended(outcome) => panic!("{what}: the attempt is not running: {outcome:?}"),
    }
}

/// Launches `attempt`, which must start now (not be adopted).
async fn started(
    executor: &dyn Executor,
    attempt: &Attempt,
) -> (ExecutorHandle, BoxFuture<'static, Outcome>) {
    let launch = within("launch", executor.launch(attempt)).await;
    let (handle, adopted, end) = running(launch, "a first launch");
    assert!(
        !adopted,
        "a first launch starts the attempt, adopts nothing"
    );
    (handle, end)
}

fn assert_succeeded_with(outcome: &Outcome, value: Option<f64>) {
    assert!(
        matches!(outcome, Outcome::Succeeded { value: v, .. } if *v == value),
        "a success with value {value:?}, got {outcome:?}"
    );
}

/// A launch starts the attempt, and its end is the outcome: a success with
/// the script's value, where attempts run.
pub async fn an_attempt_runs_to_its_outcome(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::Runs);
    let (_, end) = started(&*h.executor(), &attempt).await;
    let outcome = within("the attempt's end", end).await;
    let value = h.runs().then_some(VALUE);
    assert_succeeded_with(&outcome, value);
    h.finish().await;
}

/// A script exiting with status 3 is a failure carrying that status.
pub async fn a_failed_attempt_reports_its_exit_code(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::Fails);
    let (_, end) = started(&*h.executor(), &attempt).await;
    let outcome = within("the attempt's end", end).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                exit_code: Some(3),
                ..
            }
        ),
        "a failure with exit status 3, got {outcome:?}"
    );
    h.finish().await;
}

/// A scheduler restarted while an attempt runs launches it again: the
/// executor finds it (the same handle) and adopts it instead of starting a
/// second one, and its end is the attempt's outcome.
pub async fn a_running_attempt_is_adopted_after_a_restart(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::Adopts);
    let (handle, end) = started(&*h.executor(), &attempt).await;
    // The scheduler dies: nobody watches the attempt any more.
    drop(end);
    let launch = within("the launch after a restart", h.executor().launch(&attempt)).await;
    let (found, adopted, end) = running(launch, "a launch after a restart");
    assert!(adopted, "the running attempt is adopted, not started again");
    assert_eq!(found, handle, "the adopted attempt is the one started");
    let outcome = within("the adopted attempt's end", end).await;
    assert_succeeded_with(&outcome, Some(VALUE));
    h.finish().await;
}

/// Launching an attempt that has ended does not run it again: its outcome
/// is collected, at once or by adopting what it left.
pub async fn an_ended_attempt_is_collected_not_run_again(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::Collects);
    let (_, end) = started(&*h.executor(), &attempt).await;
    let first = within("the attempt's end", end).await;
    let again = match within("the launch after the end", h.executor().launch(&attempt)).await {
        Launch::Ended(outcome) => outcome,
        Launch::Running {
            adopted: true, end, ..
        } => within("the adopted end", end).await,
        Launch::Running { adopted: false, .. } => panic!("the ended attempt was started again"),
    };
    assert_eq!(again, first, "the collected outcome is the attempt's own");
    h.finish().await;
}

/// Stopping an attempt that has ended, or one never launched, is fine: the
/// call returns and changes nothing.
pub async fn stopping_an_ended_attempt_is_fine(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::StopsEnded);
    let (_, end) = started(&*h.executor(), &attempt).await;
    let outcome = within("the attempt's end", end).await;
    let executor = h.executor();
    let stop = executor.stop(QUEUE, &attempt.job_id, attempt.attempt, GRACE);
    within("stopping the ended attempt", stop).await;
    let stop = executor.stop(QUEUE, NEVER_LAUNCHED, 1, GRACE);
    within("stopping an attempt never launched", stop).await;
    drop(executor);
    assert!(
        matches!(outcome, Outcome::Succeeded { .. }),
        "the attempt ended well before the stops: {outcome:?}"
    );
    h.finish().await;
}

/// Stopping a running attempt ends it long before its script would end
/// (the case waits less than the script sleeps), and not as a success.
pub async fn stop_ends_a_running_attempt(h: impl ExecutorHarness) {
    let attempt = h.attempt(ExecutorCase::StopsRunning);
    let executor = h.executor();
    let (_, end) = started(&*executor, &attempt).await;
    let stop = executor.stop(QUEUE, &attempt.job_id, attempt.attempt, GRACE);
    within("stopping the running attempt", stop).await;
    drop(executor);
    let outcome = within("the stopped attempt's end", end).await;
    assert!(
        !matches!(outcome, Outcome::Succeeded { .. }),
        "a stopped attempt does not succeed: {outcome:?}"
    );
    h.finish().await;
}

/// Generates one `#[tokio::test]` per executor conformance case for
/// harness `$harness` (an [`ExecutorHarness`]), so every implementation's
/// tests run the same list.
#[macro_export]
macro_rules! executor_conformance_tests {
    ($harness:ty) => {
        $crate::executor_conformance_tests!(@cases $harness;
            an_attempt_runs_to_its_outcome: Runs,
            a_failed_attempt_reports_its_exit_code: Fails,
            a_running_attempt_is_adopted_after_a_restart: Adopts,
            an_ended_attempt_is_collected_not_run_again: Collects,
            stopping_an_ended_attempt_is_fine: StopsEnded,
            stop_ends_a_running_attempt: StopsRunning);
    };
    (@cases $harness:ty; $($name:ident: $case:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let case = $crate::conformance::ExecutorCase::$case;
            if let Some(harness) = $crate::conformance::harness::<$harness>(case) {
                $crate::conformance::$name(harness).await;
            }
        }
    )*};
}

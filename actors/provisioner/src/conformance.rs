//! The provider conformance suite: one set of cases every [`Provider`] must
//! pass, whatever cloud it drives.
//!
//! Each case is a `pub async fn` taking a [`ProviderHarness`]: the
//! implementation under test over its cloud (an in-process fake, shell
//! scripts over a directory, a recorded Kubernetes API server).
//! [`provider_conformance_tests!`](crate::provider_conformance_tests) makes
//! one `#[tokio::test]` per case, so every implementation runs the same
//! list; a case that cannot apply to an implementation is skipped by its
//! harness's [`ProviderHarness::skip`], which says why. Cases panic with a
//! message on failure, like `assert!`.
//!
//! The cases follow the contract of [`Provider`]: every call is safe to
//! repeat. Nodes are obtained as the effects obtain them — a `list` first,
//! adopting an instance that carries the node id, `provision` only when
//! there is none — so a provider that does not make nodes (Kubernetes)
//! runs every case on nodes that exist already, and must refuse
//! `provision` with `ProviderError::Refused`. This module is compiled for
//! the crate's own tests and with the `test-util` feature, never into the
//! shipped library.

use crate::effects::adopt_or_provision;
use crate::provider::{Instance, Provider, ProviderError};
use async_trait::async_trait;
use flotilla_messages::fleet::DrainMode;
use flotilla_messages::provisioner::NodeSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The pool of the cases' nodes.
pub const POOL: &str = "train";
/// Another pool, whose nodes the first one's list must not hold.
pub const OTHER_POOL: &str = "infer";
/// The node of [`POOL`] every case works on.
pub const NODE: &str = "gpu-1";
/// The node of [`OTHER_POOL`].
pub const OTHER_NODE: &str = "gpu-2";
/// A node no case ever makes.
pub const NEVER_MADE: &str = "gpu-9";

/// How long a case waits for a call.
const WAIT: Duration = Duration::from_secs(20);

/// The cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCase {
    /// [`provision_makes_a_listed_node_or_is_refused_typed`].
    Provisions,
    /// [`provisioning_again_after_a_restart_adopts_the_node`].
    Adopts,
    /// [`a_pools_list_holds_its_nodes_only`].
    Lists,
    /// [`terminating_a_node_that_is_gone_succeeds`].
    Terminates,
    /// [`cordon_and_uncordon_can_be_repeated`].
    Cordons,
    /// [`drains_end_and_wait_mode_never_evicts`].
    Drains,
}

/// The spec of a node of `pool`.
pub fn spec(pool: &str) -> NodeSpec {
    NodeSpec {
        pool: pool.into(),
        provider: "conformance".into(),
        instance_type: Some("h100".into()),
        region: None,
        labels: BTreeMap::new(),
        setup_commands: vec![],
    }
}

/// Gives the cases one implementation of [`Provider`] and its cloud.
#[async_trait]
pub trait ProviderHarness: Sized + Send + Sync + 'static {
    /// Why `case` cannot apply to this implementation, if it cannot.
    fn skip(case: ProviderCase) -> Option<&'static str>;

    /// A harness for `case` over a fresh cloud (a recording holds the
    /// case's exchanges).
    fn start(case: ProviderCase) -> Self;

    /// Whether `provision` makes nodes. One that does not (Kubernetes
    /// makes its own) refuses it, and its cloud has the cases' nodes
    /// already.
    fn makes_nodes(&self) -> bool;

    /// A new provider over the harness's cloud: each call is as a
    /// provisioner process that just (re)started has it.
    fn provider(&self) -> Arc<dyn Provider>;

    /// Checks what the cloud saw (every recorded exchange was made). Cases
    /// call it last, once they dropped their providers.
    async fn finish(self);
}

/// The harness for `case`, or `None` (saying why) when `H` skips it.
pub fn harness<H: ProviderHarness>(case: ProviderCase) -> Option<H> {
    match H::skip(case) {
        Some(why) => {
            eprintln!("{case:?} skipped for {}: {why}", std::any::type_name::<H>());
            None
        }
        None => Some(H::start(case)),
    }
}

/// `call`'s answer, which must come within [`WAIT`] and be a success.
async fn ok<T>(what: &str, call: impl std::future::Future<Output = Result<T, ProviderError>>) -> T {
    tokio::time::timeout(WAIT, call)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// The instance id of `node_id` in `pool`, obtained as the effects do:
/// adopted when listed, else provisioned.
async fn obtain(provider: &dyn Provider, node_id: &str, pool: &str) -> String {
    let spec = spec(pool);
    let what = format!("obtaining {node_id}");
    ok(&what, adopt_or_provision(provider, node_id, &spec))
        .await
        .0
}

async fn listed(provider: &dyn Provider, pool: &str) -> Vec<Instance> {
    ok(&format!("listing {pool}"), provider.list(pool)).await
}

/// The listed instances of `node_id`.
fn instances_of<'a>(list: &'a [Instance], node_id: &str) -> Vec<&'a Instance> {
    list.iter().filter(|i| i.node_id == node_id).collect()
}

/// Asserts `list` holds `node_id` once, as `instance_id`.
fn assert_listed_once(list: &[Instance], node_id: &str, instance_id: &str) {
    let found = instances_of(list, node_id);
    assert_eq!(found.len(), 1, "{node_id} is listed once: {list:?}");
    assert_eq!(found[0].instance_id, instance_id, "{node_id}'s instance");
}

/// `provision` makes the node, which the pool's list then holds; a
/// provider that does not make nodes refuses with a typed error naming the
/// node, and makes nothing.
pub async fn provision_makes_a_listed_node_or_is_refused_typed(h: impl ProviderHarness) {
    let provider = h.provider();
    let made = tokio::time::timeout(WAIT, provider.provision(NODE, &spec(POOL)))
        .await
        .expect("provision answers");
    let list = listed(&*provider, POOL).await;
    match (h.makes_nodes(), made) {
        (true, Ok(made)) => assert_listed_once(&list, NODE, &made.instance_id),
        (true, Err(e)) => panic!("provision {NODE}: {e:?}"),
        (false, Err(ProviderError::Refused(why))) => {
            assert!(why.contains(NODE), "the refusal names the node: {why}");
            assert!(instances_of(&list, NODE).is_empty(), "nothing was made");
        }
        (false, other) => panic!("a provider that does not make nodes refuses: {other:?}"),
    }
    drop(provider);
    h.finish().await;
}

/// A provisioner restarted mid-provisioning runs the effect again: the
/// node made (or found) the first time is adopted, not made twice.
pub async fn provisioning_again_after_a_restart_adopts_the_node(h: impl ProviderHarness) {
    let first = obtain(&*h.provider(), NODE, POOL).await;
    let restarted = h.provider();
    let again = obtain(&*restarted, NODE, POOL).await;
    assert_eq!(again, first, "the same instance, adopted");
    assert_listed_once(&listed(&*restarted, POOL).await, NODE, &first);
    drop(restarted);
    h.finish().await;
}

/// A pool's list holds the node just obtained in it, and not another
/// pool's.
pub async fn a_pools_list_holds_its_nodes_only(h: impl ProviderHarness) {
    let provider = h.provider();
    let node = obtain(&*provider, NODE, POOL).await;
    let other = obtain(&*provider, OTHER_NODE, OTHER_POOL).await;
    let pool = listed(&*provider, POOL).await;
    assert_listed_once(&pool, NODE, &node);
    assert!(instances_of(&pool, OTHER_NODE).is_empty(), "{pool:?}");
    let other_pool = listed(&*provider, OTHER_POOL).await;
    assert_listed_once(&other_pool, OTHER_NODE, &other);
    assert!(instances_of(&other_pool, NODE).is_empty(), "{other_pool:?}");
    drop(provider);
    h.finish().await;
}

/// Terminating deletes the node (the list no longer holds it); running
/// the termination again after a restart, or terminating a node never
/// made, succeeds.
pub async fn terminating_a_node_that_is_gone_succeeds(h: impl ProviderHarness) {
    let provider = h.provider();
    let instance = obtain(&*provider, NODE, POOL).await;
    ok("terminate", provider.terminate(NODE, Some(&instance))).await;
    let list = listed(&*provider, POOL).await;
    assert!(instances_of(&list, NODE).is_empty(), "terminated: {list:?}");
    drop(provider);
    let restarted = h.provider();
    let again = restarted.terminate(NODE, Some(&instance));
    ok("terminating the gone node again", again).await;
    ok(
        "terminating a node never made",
        restarted.terminate(NEVER_MADE, None),
    )
    .await;
    drop(restarted);
    h.finish().await;
}

/// Cordon and uncordon succeed, twice each, and leave the node in place.
pub async fn cordon_and_uncordon_can_be_repeated(h: impl ProviderHarness) {
    let provider = h.provider();
    let instance = obtain(&*provider, NODE, POOL).await;
    for _ in 0..2 {
        ok("cordon", provider.cordon(NODE)).await;
    }
    for _ in 0..2 {
        ok("uncordon", provider.uncordon(NODE)).await;
    }
    assert_listed_once(&listed(&*provider, POOL).await, NODE, &instance);
    drop(provider);
    h.finish().await;
}

/// A drain ends (evicting what it must), and a drain in `wait` mode never
/// reports an eviction.
pub async fn drains_end_and_wait_mode_never_evicts(h: impl ProviderHarness) {
    let provider = h.provider();
    obtain(&*provider, NODE, POOL).await;
    ok("drain", provider.drain(NODE, DrainMode::Evict, u64::MAX)).await;
    let waited = ok("wait", provider.drain(NODE, DrainMode::Wait, u64::MAX)).await;
    assert!(!waited, "wait mode evicts nothing");
    drop(provider);
    h.finish().await;
}

/// Generates one `#[tokio::test]` per provider conformance case for
/// harness `$harness` (a [`ProviderHarness`]), so every implementation's
/// tests run the same list.
#[macro_export]
macro_rules! provider_conformance_tests {
    ($harness:ty) => {
        $crate::provider_conformance_tests!(@cases $harness;
            provision_makes_a_listed_node_or_is_refused_typed: Provisions,
            provisioning_again_after_a_restart_adopts_the_node: Adopts,
            a_pools_list_holds_its_nodes_only: Lists,
            terminating_a_node_that_is_gone_succeeds: Terminates,
            cordon_and_uncordon_can_be_repeated: Cordons,
            drains_end_and_wait_mode_never_evicts: Drains);
    };
    (@cases $harness:ty; $($name:ident: $case:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let case = $crate::conformance::ProviderCase::$case;
            if let Some(harness) = $crate::conformance::harness::<$harness>(case) {
                $crate::conformance::$name(harness).await;
            }
        }
    )*};
}

//! Where each node of a scenario runs and how it starts: the scenario's
//! side of the simulated cloud ([`CloudModel`]).
//!
//! A pool asks for nodes by number (`<pool>-<n>`); the scenario decides
//! what each one is. The k-th node a pool asks for to grow takes the k-th
//! explicit `fleet` entry of that pool (and its Navarch id as an alias, so
//! `target: node-1` finds it); past those, `fleet_gen`'s templates (those
//! of the pool, when templates name pools),
//! providers, regions and zones are drawn with a generator seeded by the
//! scenario's seed and the node's id, so a node's placement does not
//! depend on what else happened. A replacement goes where the node it
//! replaces was (same rack, zone, region and provider).
//!
//! Racks are not in Navarch's format; nodes are grouped into racks of
//! [`RACK_SIZE`] in the order they are placed within a zone, which is what
//! `cascading.scope: rack` acts on.
//!
//! Startup follows `fleet_gen.startup` for the nodes a pool asks for when
//! it starts: `instant`, `linear` (evenly over `duration`), `exponential`
//! (doubling batches: node k at `duration · log2(k+1) / log2(N+1)`) or
//! `wave` (batches of `batch_size` evenly spaced), each shifted by up to
//! `jitter_percent`; each node then boots in a cold-start time drawn from
//! `cold_start_*` (a normal clamped to min..max) or the world's `boot_time`.
//! A scheduled `boot_failure` outage makes provisioning in its scope fail
//! while it lasts.

use super::file::{FleetGenConfig, NodeTemplate, Scenario, StartupPattern};
use super::world::{CloudModel, Provisioning};
use flotilla_provisioner::{fnv1a, sim_fails};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};

/// Nodes per rack.
pub const RACK_SIZE: u32 = 16;

/// Where a node runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    /// The Navarch id of an explicit fleet entry.
    pub alias: Option<String>,
    /// The provider.
    pub provider: String,
    /// The region.
    pub region: String,
    /// The zone.
    pub zone: String,
    /// The rack (within the zone).
    pub rack: String,
    /// GPUs on the node.
    pub gpus: u32,
    /// The GPU model.
    pub gpu_type: String,
}

impl Placement {
    /// The value of this placement at `scope` (`rack`, `zone`, `region`,
    /// `provider`).
    pub fn at(&self, scope: &str) -> &str {
        match scope {
            "rack" => &self.rack,
            "zone" => &self.zone,
            "region" => &self.region,
            _ => &self.provider,
        }
    }
}

/// An outage that stops provisioning in a scope.
#[derive(Debug, Clone)]
struct Blocked {
    scope: String,
    target: String,
    name: String,
}

/// The scenario's cloud: placements, startup times, provisioning outcomes.
pub struct ScenarioCloud {
    seed: u64,
    provision_ms: u64,
    boot_ms: u64,
    failure_rate: f64,
    explicit: Vec<Vec<Placement>>,
    pool_names: Vec<String>,
    generator: Option<FleetGenConfig>,
    replace_boot_ms: u64,
    /// How many nodes each pool asked for to grow.
    grown: Vec<usize>,
    /// Initial nodes per pool (the startup pattern spreads these).
    initial: Vec<u32>,
    per_zone: HashMap<String, u32>,
    placements: HashMap<String, Placement>,
    aliases: BTreeMap<String, String>,
    blocked: Vec<Blocked>,
}

impl ScenarioCloud {
    /// The cloud of `scenario` run with `seed`, whose pools are
    /// `pool_names` with `initial` nodes each at start.
    pub fn new(scenario: &Scenario, seed: u64, pool_names: &[String], initial: Vec<u32>) -> Self {
        let mut explicit = vec![Vec::new(); pool_names.len()];
        for spec in &scenario.fleet {
            let pool = scenario.pool_name(spec.pool.as_deref());
            let index = pool_names.iter().position(|p| p == pool).unwrap_or(0);
            explicit[index].push(Placement {
                alias: Some(spec.id.clone()),
                provider: spec.provider.clone(),
                region: spec.region.clone(),
                zone: spec.zone.clone(),
                rack: spec.labels.get("rack").cloned().unwrap_or_default(),
                gpus: spec.gpu_count.max(1),
                gpu_type: spec.gpu_type.clone(),
            });
        }
        let stress = scenario.stress.as_ref();
        let replace_boot_ms = stress
            .and_then(|s| s.chaos.as_ref())
            .and_then(|c| c.recovery.as_ref())
            .map_or(0, |r| r.replace_cold_start_ms);
        ScenarioCloud {
            seed,
            provision_ms: scenario.world.provision_time_ms,
            boot_ms: scenario.world.boot_time_ms,
            failure_rate: scenario.world.provision_failure_rate,
            explicit,
            pool_names: pool_names.to_vec(),
            generator: stress.and_then(|s| s.fleet_gen.clone()),
            replace_boot_ms,
            grown: vec![0; pool_names.len()],
            initial,
            per_zone: HashMap::new(),
            placements: HashMap::new(),
            aliases: BTreeMap::new(),
            blocked: Vec::new(),
        }
    }

    /// A node's placement.
    pub fn placement(&self, node_id: &str) -> Option<&Placement> {
        self.placements.get(node_id)
    }

    /// The node an explicit fleet id (`node-1`) names, or the id itself.
    pub fn resolve<'a>(&'a self, target: &'a str) -> &'a str {
        self.aliases.get(target).map_or(target, String::as_str)
    }

    /// The Navarch id of a node, if it has one.
    pub fn alias_of(&self, node_id: &str) -> Option<&str> {
        self.placements.get(node_id)?.alias.as_deref()
    }

    /// Stops provisioning in `scope` = `target` (an outage) until unblocked.
    pub fn block(&mut self, scope: &str, target: &str, name: &str) {
        self.blocked.push(Blocked {
            scope: scope.into(),
            target: target.into(),
            name: name.into(),
        });
    }

    /// Ends the outage `name`.
    pub fn unblock(&mut self, name: &str) {
        self.blocked.retain(|b| b.name != name);
    }

    fn node_rng(&self, node_id: &str, salt: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(fnv1a(node_id.as_bytes(), self.seed ^ salt))
    }

    fn place(&mut self, pool: usize, node_id: &str, replaces: Option<&str>) -> Placement {
        if let Some(old) = replaces.and_then(|o| self.placements.get(o)) {
            let mut p = old.clone();
            p.alias = None;
            return p;
        }
        let k = self.grown[pool];
        self.grown[pool] += 1;
        let mut p = match self.explicit[pool].get(k) {
            Some(p) => p.clone(),
            None => self.generate(pool, node_id),
        };
        if let Some(alias) = &p.alias {
            self.aliases.insert(alias.clone(), node_id.to_string());
        }
        if p.rack.is_empty() {
            let n = self.per_zone.entry(p.zone.clone()).or_default();
            p.rack = format!("{}/rack-{}", p.zone, *n / RACK_SIZE);
            *n += 1;
        }
        p
    }

    fn generate(&self, pool: usize, node_id: &str) -> Placement {
        let mut rng = self.node_rng(node_id, 0x706c_6163);
        let Some(g) = &self.generator else {
            return Placement {
                provider: "sim".into(),
                region: "sim-region".into(),
                zone: "sim-zone".into(),
                gpus: 8,
                ..Placement::default()
            };
        };
        // A template naming a pool makes that pool's nodes; one naming none, any pool's.
        let name = &self.pool_names[pool];
        let mine = |t: &&NodeTemplate| t.pool.as_deref().is_none_or(|p| p == name);
        let template = pick(
            &mut rng,
            g.templates.iter().filter(mine).map(|t| (t, t.weight)),
        );
        let provider = pick(&mut rng, g.providers.iter().map(|(k, w)| (k.clone(), *w)));
        let region = pick(&mut rng, g.regions.iter().map(|(k, w)| (k.clone(), *w)));
        let region = region.unwrap_or_else(|| "sim-region".into());
        let zones = g.zones.get(&region).filter(|z| !z.is_empty());
        let zone = zones.map_or_else(
            || format!("{region}-a"),
            |z| z[rng.random_range(0..z.len())].clone(),
        );
        Placement {
            alias: None,
            provider: provider.unwrap_or_else(|| "sim".into()),
            region,
            zone,
            rack: template
                .and_then(|t| t.labels.get("rack").cloned())
                .unwrap_or_default(),
            gpus: template.map_or(8, |t| t.gpu_count.max(1)),
            gpu_type: template.map(|t| t.gpu_type.clone()).unwrap_or_default(),
        }
    }

    /// When the k-th of `n` initial nodes is asked of the provider, after
    /// the pool started.
    fn startup_offset(&self, k: u32, n: u32, rng: &mut ChaCha8Rng) -> u64 {
        let Some(s) = self.generator.as_ref().map(|g| &g.startup) else {
            return 0;
        };
        let d = s.duration_ms as f64;
        let (k, n) = (f64::from(k), f64::from(n.max(1)));
        let base = match s.pattern {
            StartupPattern::Instant => 0.0,
            StartupPattern::Linear => d * k / n,
            StartupPattern::Exponential => d * (k + 1.0).log2() / (n + 1.0).log2(),
            StartupPattern::Wave => {
                let batch = f64::from(s.batch_size.max(1));
                let waves = (n / batch).ceil().max(1.0);
                d * (k / batch).floor() / waves
            }
        };
        let jitter = f64::from(s.jitter_percent.min(100)) / 100.0;
        let shift = if jitter > 0.0 {
            rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        (base * (1.0 + shift)).max(0.0) as u64
    }

    fn cold_start(&self, replacement: bool, rng: &mut ChaCha8Rng) -> u64 {
        if replacement && self.replace_boot_ms > 0 {
            return self.replace_boot_ms;
        }
        let Some(s) = self.generator.as_ref().map(|g| &g.startup) else {
            return self.boot_ms;
        };
        let (lo, hi) = (
            s.cold_start_min_ms,
            s.cold_start_max_ms.max(s.cold_start_min_ms),
        );
        if s.cold_start_mean_ms > 0 {
            let drawn = normal(
                rng,
                s.cold_start_mean_ms as f64,
                s.cold_start_stddev_ms as f64,
            );
            let hi = if hi > 0 { hi as f64 } else { f64::MAX };
            return drawn.clamp(lo as f64, hi) as u64;
        }
        if hi > 0 {
            return rng.random_range(lo..=hi);
        }
        self.boot_ms
    }

    fn blocked_by(&self, p: &Placement) -> Option<&Blocked> {
        self.blocked.iter().find(|b| p.at(&b.scope) == b.target)
    }
}

impl CloudModel for ScenarioCloud {
    fn provision(
        &mut self,
        pool: usize,
        node_id: &str,
        replaces: Option<&str>,
        now: u64,
    ) -> Provisioning {
        let _ = now;
        let k = self.grown[pool] as u32;
        let initial = replaces.is_none() && k < self.initial[pool];
        let placement = self.place(pool, node_id, replaces);
        let mut rng = self.node_rng(node_id, 0x626f_6f74);
        let offset = if initial {
            self.startup_offset(k, self.initial[pool], &mut rng)
        } else {
            0
        };
        let boot_ms = self.cold_start(replaces.is_some(), &mut rng);
        let error = if let Some(b) = self.blocked_by(&placement) {
            Some(format!(
                "sim: {} ({} {} unavailable)",
                b.name, b.scope, b.target
            ))
        } else if sim_fails(self.seed, node_id, self.failure_rate) {
            Some("sim: no capacity".into())
        } else {
            None
        };
        let gpus = placement.gpus;
        self.placements.insert(node_id.to_string(), placement);
        Provisioning {
            delay_ms: self.provision_ms + offset,
            boot_ms,
            gpus,
            error,
        }
    }
}

/// A weighted draw (`None` when there is nothing to draw from).
pub fn pick<T>(rng: &mut ChaCha8Rng, items: impl Iterator<Item = (T, u32)>) -> Option<T> {
    let (values, weights): (Vec<T>, Vec<u32>) = items.filter(|(_, w)| *w > 0).unzip();
    let index = WeightedIndex::new(&weights).ok()?;
    values.into_iter().nth(index.sample(rng))
}

/// A normal draw (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng, mean: f64, std_dev: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    mean + std_dev * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

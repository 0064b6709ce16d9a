//! The process-wide memo of the model-based samplers' folds.
//!
//! [`cmaes`](super::cmaes) and [`gp`](super::gp) keep no state: what they
//! sample from is a fold over the study's [`History`] (CMA-ES's
//! generations, the GP's fitted hyperparameters). Folding the whole history
//! on every ask would cost more than the ask itself, so a [`Memo`] keeps,
//! per study, a copy of the history it folded (as bits) and the folds at
//! the last [`CHECKPOINTS`] boundaries. It is used only for the longest
//! prefix where the copy and the current history agree bit for bit, from
//! the last boundary inside that prefix — and the fold up to a boundary
//! depends on nothing but the entries before it — so the state it gives is
//! exactly the state a fold from scratch gives (each sampler tests this),
//! at the cost of an `O(n d)` comparison per ask. It holds at most
//! [`MEMO_STUDIES`] studies (the least recently used go), each as
//! `n (d + 1)` words; a study it dropped is folded from scratch once.
//!
//! A memo is an optimisation only, never a source of truth.

use super::History;
use std::collections::HashMap;
use std::sync::Mutex;

/// How many boundaries a [`Memo`] entry keeps.
pub const CHECKPOINTS: usize = 8;

/// The most studies a [`Memo`] remembers.
pub const MEMO_STUDIES: usize = 64;

/// A fold over a history's entries in trial order.
pub trait Fold: Clone {
    /// Entries consumed: the fold depends on nothing at or after it.
    fn upto(&self) -> usize;

    /// Folds `history` from [`upto`](Fold::upto) on, calling `boundary`
    /// after each step the memo may resume from.
    fn advance(&mut self, history: &History, boundary: &mut dyn FnMut(&Self));
}

/// One study's memo: the history it folded (bits) and the folds at its last
/// boundaries, oldest first.
#[derive(Debug)]
struct Entry<F> {
    points: Vec<u64>,
    /// Each entry's value and violation, as bits.
    values: Vec<(Option<u64>, u64)>,
    checkpoints: Vec<F>,
    used: u64,
    /// Bumped on every change, so a writer can tell whether the entry it
    /// compared is still the one it updates.
    version: u64,
}

impl<F> Default for Entry<F> {
    fn default() -> Self {
        Entry {
            points: Vec::new(),
            values: Vec::new(),
            checkpoints: Vec::new(),
            used: 0,
            version: 0,
        }
    }
}

impl<F> Entry<F> {
    /// How many leading entries of `history` agree with the copy, bit for bit.
    fn agreeing(&self, history: &History, n: usize) -> usize {
        let len = self.values.len().min(history.len());
        (0..len)
            .find(|&i| {
                self.values[i] != outcome_bits(history, i)
                    || history
                        .point(i)
                        .iter()
                        .zip(&self.points[i * n..(i + 1) * n])
                        .any(|(a, b)| a.to_bits() != *b)
            })
            .unwrap_or(len)
    }
}

/// Entry `i`'s value and violation as bits: what a fold may read of it
/// besides its point.
fn outcome_bits(history: &History, i: usize) -> (Option<u64>, u64) {
    (
        history.value(i).map(f64::to_bits),
        history.violation(i).to_bits(),
    )
}

/// Folds per study, keyed by the caller (seed, dimensions and settings).
#[derive(Debug)]
pub struct Memo<F> {
    entries: Mutex<HashMap<u64, Entry<F>>>,
}

impl<F> Default for Memo<F> {
    fn default() -> Self {
        Memo {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<F: Fold> Memo<F> {
    /// The fold of all of `history` (`n` coordinates per point) from
    /// `start`, resumed from the memo where it agrees.
    pub fn fold(&self, key: u64, n: usize, history: &History, start: impl Fn() -> F) -> F {
        let (mut fold, agree, version) = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            match entries.get(&key) {
                Some(entry) => {
                    let agree = entry.agreeing(history, n);
                    let fold = entry
                        .checkpoints
                        .iter()
                        .rev()
                        .find(|f| f.upto() <= agree)
                        .cloned()
                        .unwrap_or_else(&start);
                    (fold, agree, Some(entry.version))
                }
                None => (start(), 0, None),
            }
        };
        let mut checkpoints = Vec::new();
        fold.advance(history, &mut |f| {
            checkpoints.push(f.clone());
            if checkpoints.len() > CHECKPOINTS {
                checkpoints.remove(0);
            }
        });
        self.remember(key, history, n, (agree, version), checkpoints);
        fold
    }

    /// Stores the folded history's bits and the new checkpoints, keeping
    /// the entry's older checkpoints that are still valid. `agreed` is how
    /// far the entry agreed with `history` at which version.
    fn remember(
        &self,
        key: u64,
        history: &History,
        n: usize,
        agreed: (usize, Option<u64>),
        fresh: Vec<F>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let clock = entries.values().map(|e| e.used).max().unwrap_or(0) + 1;
        if !entries.contains_key(&key) && entries.len() >= MEMO_STUDIES {
            if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(key).or_default();
        // Another ask may have changed the entry since it was compared.
        let valid = match agreed {
            (agree, Some(version)) if version == entry.version => agree,
            _ => entry.agreeing(history, n),
        };
        entry.values.truncate(valid);
        entry.points.truncate(valid * n);
        for i in valid..history.len() {
            entry.values.push(outcome_bits(history, i));
            entry
                .points
                .extend(history.point(i).iter().map(|x| x.to_bits()));
        }
        entry.checkpoints.retain(|f| f.upto() <= valid);
        entry.checkpoints.extend(fresh);
        let excess = entry.checkpoints.len().saturating_sub(CHECKPOINTS);
        entry.checkpoints.drain(..excess);
        entry.used = clock;
        entry.version += 1;
    }
}

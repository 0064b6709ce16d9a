//! Pareto arithmetic for multi-objective studies: dominance (plain and
//! Deb's constrained form), non-dominated ranks, crowding distance and the
//! exact hypervolume.
//!
//! Every function minimises (a study's maximised objectives arrive
//! negated) and is deterministic: ties are broken by index, never by a
//! hash or an unstable sort, so NSGA-II and MOTPE replay bit for bit.

/// Whether `a` Pareto-dominates `b`: no worse in every objective and
/// better in one (minimising).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Deb's constrained dominance over `(objectives, violation)`: a feasible
/// point (violation 0) dominates an infeasible one, of two infeasible ones
/// the smaller violation dominates, and two feasible ones compare by
/// [`dominates`].
pub fn constrained_dominates(a: (&[f64], f64), b: (&[f64], f64)) -> bool {
    match (a.1 > 0.0, b.1 > 0.0) {
        (false, false) => dominates(a.0, b.0),
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.1 < b.1,
    }
}

/// The non-dominated rank of each point (0 = the Pareto front, 1 = the
/// front once those are removed, ...), ranking fronts until at least
/// `enough` points have a rank; the rest get `usize::MAX`.
///
/// A point can only be dominated by one before it in lexicographic order,
/// so each front is found in one pass over the sorted points against the
/// front so far: `O(n · front)` per front.
pub fn non_dominated_ranks(points: &[&[f64]], enough: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| lexicographic(points[a], points[b]).then(a.cmp(&b)));
    let mut ranks = vec![usize::MAX; points.len()];
    let mut ranked = 0;
    let mut rank = 0;
    while ranked < enough.min(points.len()) {
        let mut front: Vec<usize> = Vec::new();
        let mut rest = Vec::with_capacity(order.len());
        for &i in &order {
            if front.iter().any(|&f| dominates(points[f], points[i])) {
                rest.push(i);
            } else {
                front.push(i);
            }
        }
        for &i in &front {
            ranks[i] = rank;
        }
        ranked += front.len();
        rank += 1;
        order = rest;
    }
    ranks
}

fn lexicographic(a: &[f64], b: &[f64]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Ranks under [`constrained_dominates`]: the feasible points by
/// [`non_dominated_ranks`], then the infeasible ones after all of them,
/// one rank per distinct violation, smallest first.
pub fn constrained_ranks(points: &[&[f64]], violations: &[f64], enough: usize) -> Vec<usize> {
    let feasible: Vec<usize> = (0..points.len())
        .filter(|&i| violations[i] <= 0.0)
        .collect();
    let feasible_points: Vec<&[f64]> = feasible.iter().map(|&i| points[i]).collect();
    let feasible_ranks = non_dominated_ranks(&feasible_points, enough);
    let mut ranks = vec![usize::MAX; points.len()];
    for (&i, &r) in feasible.iter().zip(&feasible_ranks) {
        ranks[i] = r;
    }
    let mut next = feasible_ranks
        .iter()
        .filter(|&&r| r != usize::MAX)
        .max()
        .map_or(0, |r| r + 1);
    let mut infeasible: Vec<usize> = (0..points.len()).filter(|&i| violations[i] > 0.0).collect();
    infeasible.sort_by(|&a, &b| violations[a].total_cmp(&violations[b]).then(a.cmp(&b)));
    for (k, &i) in infeasible.iter().enumerate() {
        if k > 0 && violations[i] > violations[infeasible[k - 1]] {
            next += 1;
        }
        ranks[i] = next;
    }
    ranks
}

/// The crowding distance of each point within its set: per objective, the
/// gap between its neighbours over the objective's range, summed; the
/// extremes of any objective get infinity.
// `k` picks the objective of every point, not one point.
#[allow(clippy::needless_range_loop)]
pub fn crowding_distances(points: &[&[f64]]) -> Vec<f64> {
    let n = points.len();
    let mut distances = vec![0.0; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let objectives = points[0].len();
    let mut order: Vec<usize> = (0..n).collect();
    for k in 0..objectives {
        order.sort_by(|&a, &b| points[a][k].total_cmp(&points[b][k]).then(a.cmp(&b)));
        let range = points[order[n - 1]][k] - points[order[0]][k];
        distances[order[0]] = f64::INFINITY;
        distances[order[n - 1]] = f64::INFINITY;
        if range <= 0.0 {
            continue;
        }
        for w in order.windows(3) {
            distances[w[1]] += (points[w[2]][k] - points[w[0]][k]) / range;
        }
    }
    distances
}

/// The indices of the points no other point dominates, in index order.
pub fn pareto_front(points: &[&[f64]]) -> Vec<usize> {
    let ranks = non_dominated_ranks(points, 1);
    (0..points.len()).filter(|&i| ranks[i] == 0).collect()
}

/// The exact hypervolume the points dominate up to `reference`
/// (minimising): the measure of the union of the boxes `[p, reference]`.
/// Points not strictly below the reference in every objective add nothing.
///
/// Two objectives by one sweep in sorted order; more by slicing along the
/// last objective (HSO), which is exact and fast enough for the fronts of
/// a study (hundreds of points in three objectives).
pub fn hypervolume(points: &[&[f64]], reference: &[f64]) -> f64 {
    let inside: Vec<&[f64]> = points
        .iter()
        .copied()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    let front: Vec<&[f64]> = pareto_front(&inside)
        .into_iter()
        .map(|i| inside[i])
        .collect();
    sliced(front, reference)
}

/// The hypervolume of points inside the reference box, by dimension.
fn sliced(mut points: Vec<&[f64]>, reference: &[f64]) -> f64 {
    let m = reference.len();
    if points.is_empty() {
        return 0.0;
    }
    match m {
        1 => reference[0] - points.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => {
            points.sort_by(|a, b| lexicographic(a, b));
            let mut area = 0.0;
            let mut ceiling = reference[1];
            for p in points {
                if p[1] < ceiling {
                    area += (reference[0] - p[0]) * (ceiling - p[1]);
                    ceiling = p[1];
                }
            }
            area
        }
        _ => {
            points.sort_by(|a, b| a[m - 1].total_cmp(&b[m - 1]));
            let mut volume = 0.0;
            for i in 0..points.len() {
                let top = points.get(i + 1).map_or(reference[m - 1], |p| p[m - 1]);
                let depth = top - points[i][m - 1];
                if depth > 0.0 {
                    let slice: Vec<&[f64]> = points[..=i].iter().map(|p| &p[..m - 1]).collect();
                    volume += hypervolume(&slice, &reference[..m - 1]) * depth;
                }
            }
            volume
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refs(points: &[Vec<f64>]) -> Vec<&[f64]> {
        points.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn dominance_needs_one_strict_improvement() {
        assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
        assert!(!dominates(&[1.0, 2.0], &[1.0, 2.0]));
        assert!(!dominates(&[0.0, 3.0], &[1.0, 2.0]));
        // Deb: feasible first, then the smaller violation.
        assert!(constrained_dominates((&[9.0], 0.0), (&[0.0], 0.5)));
        assert!(constrained_dominates((&[9.0], 0.1), (&[0.0], 0.5)));
        assert!(!constrained_dominates((&[0.0], 0.5), (&[9.0], 0.0)));
    }

    #[test]
    fn ranks_peel_fronts_in_order() {
        let points = vec![
            vec![1.0, 4.0],
            vec![2.0, 2.0],
            vec![4.0, 1.0],
            vec![3.0, 3.0],
            vec![5.0, 5.0],
            vec![2.0, 2.0],
        ];
        assert_eq!(non_dominated_ranks(&refs(&points), 6), [0, 0, 0, 1, 2, 0]);
        // Stops once enough are ranked.
        let partial = non_dominated_ranks(&refs(&points), 2);
        assert_eq!(partial, [0, 0, 0, usize::MAX, usize::MAX, 0]);
        assert_eq!(pareto_front(&refs(&points)), [0, 1, 2, 5]);
        let violations = [0.0, 0.3, 0.0, 0.0, 0.1, 0.3];
        assert_eq!(
            constrained_ranks(&refs(&points), &violations, 6),
            [0, 2, 0, 0, 1, 2]
        );
    }

    #[test]
    fn crowding_favours_the_extremes_and_the_lonely() {
        let points = vec![
            vec![0.0, 4.0],
            vec![1.0, 3.0],
            vec![3.0, 1.0],
            vec![4.0, 0.0],
            vec![1.5, 2.5],
        ];
        let d = crowding_distances(&refs(&points));
        assert!(d[0].is_infinite() && d[3].is_infinite());
        // Each objective's neighbour gap over the range 4, summed.
        assert!((d[2] - 2.5 / 4.0 * 2.0).abs() < 1e-12, "{d:?}");
        assert!((d[1] - 1.5 / 4.0 * 2.0).abs() < 1e-12, "{d:?}");
        assert!((d[4] - 1.0).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn hypervolume_matches_hand_computed_fronts() {
        // 2-D: a staircase under (4, 4), as slabs [1,4]x[3,4] = 3,
        // [2,4]x[2,3] = 2 and [3,4]x[1,2] = 1: 6.
        let stairs = vec![vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]];
        assert_eq!(hypervolume(&refs(&stairs), &[4.0, 4.0]), 6.0);
        // A dominated point and one outside the reference add nothing.
        let mut more = stairs.clone();
        more.push(vec![3.0, 3.0]);
        more.push(vec![0.0, 5.0]);
        assert_eq!(hypervolume(&refs(&more), &[4.0, 4.0]), 6.0);
        // 3-D under (3, 3, 3): (1, 1, 1) spans 8, (0, 2, 2) spans 3, and
        // they overlap in [1,3]x[2,3]x[2,3] = 2: 9.
        let cube = vec![vec![1.0, 1.0, 1.0], vec![0.0, 2.0, 2.0]];
        assert_eq!(hypervolume(&refs(&cube), &[3.0, 3.0, 3.0]), 9.0);
        // One point in 1-D and 4-D.
        assert_eq!(hypervolume(&refs(&[vec![0.25]]), &[1.0]), 0.75);
        assert_eq!(hypervolume(&refs(&[vec![0.5; 4]]), &[1.0; 4]), 0.0625);
        assert_eq!(hypervolume(&[], &[1.0, 1.0]), 0.0);
    }

    proptest! {
        #[test]
        fn hypervolume_agrees_with_inclusion_exclusion(
            raw in proptest::collection::vec(proptest::collection::vec(0u8..8, 3), 1..6)
        ) {
            let points: Vec<Vec<f64>> = raw.iter().map(|p| p.iter().map(|&x| f64::from(x)).collect()).collect();
            let reference = [8.0, 8.0, 8.0];
            // Inclusion–exclusion over every subset: the union of boxes.
            let n = points.len();
            let mut expected = 0.0;
            for mask in 1u32..(1 << n) {
                let members: Vec<&Vec<f64>> = (0..n).filter(|i| mask & (1 << i) != 0).map(|i| &points[i]).collect();
                let corner: Vec<f64> = (0..3).map(|k| members.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max)).collect();
                let volume: f64 = corner.iter().zip(&reference).map(|(c, r)| r - c).product();
                expected += if members.len() % 2 == 1 { volume } else { -volume };
            }
            prop_assert_eq!(hypervolume(&refs(&points), &reference), expected);
        }
    }
}

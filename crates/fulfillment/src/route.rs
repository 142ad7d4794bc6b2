//! Pick-route planning: the order in which a picker walks the bins of a pick list.
//!
//! A walk is a closed tour: from the dock, through every stop, back to the dock. Distance is
//! Euclidean because bins carry only x/y coordinates in metres and there is no aisle graph to walk
//! on; the exact optimum that routes are judged against ([`optimal_length`]) is measured on the same
//! distance, so the heuristic and its yardstick agree.
//!
//! [`plan`] builds a nearest-neighbour tour from the dock and improves it with 2-opt and Or-opt until
//! neither shortens it. It improves the fulfillment order the same way and keeps the shorter result,
//! so a planned route is never longer than walking the list as given.

/// The largest pick list [`plan`] accepts. Planning is O(n²) per improvement pass over an n² distance
/// matrix, so callers split larger batches rather than let one request take seconds.
pub const STOPS_MAX: usize = 500;

/// The largest pick list [`optimal_length`] solves: Held-Karp needs 2ⁿ·n² steps.
pub const OPTIMAL_STOPS_MAX: usize = 12;

/// A move must save more than this many metres to be applied, so float noise cannot make
/// improvement loop forever.
const IMPROVEMENT_EPSILON_M: f64 = 1e-9;

/// The longest run of consecutive stops an Or-opt move relocates.
const OR_OPT_SEGMENT_MAX: usize = 3;

/// A position on the warehouse floor, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// A planned walk. `order` indexes into the stops given to [`plan`], each exactly once.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub order: Vec<usize>,
    pub length_m: f64,
    /// The length of walking the stops in the order given, for comparison.
    pub naive_length_m: f64,
}

fn distance(from: Point, to: Point) -> f64 {
    let (dx, dy) = (from.x - to.x, from.y - to.y);
    (dx * dx + dy * dy).sqrt()
}

/// One summation shared by [`tour_length`] and [`naive_length`] so that equal walks give
/// bit-identical lengths.
fn closed_walk_length(dock: Point, stops: impl Iterator<Item = Point>) -> f64 {
    let mut length_m = 0.0;
    let mut here = dock;
    for stop in stops {
        length_m += distance(here, stop);
        here = stop;
    }
    length_m + distance(here, dock)
}

/// The length of the closed walk dock → `stops[order[0]]` → … → dock.
///
/// # Panics
/// If an index in `order` is out of range for `stops`.
pub fn tour_length(dock: Point, stops: &[Point], order: &[usize]) -> f64 {
    closed_walk_length(dock, order.iter().map(|&index| stops[index]))
}

/// The length of the closed walk visiting `stops` in the order given (the fulfillment order).
pub fn naive_length(dock: Point, stops: &[Point]) -> f64 {
    closed_walk_length(dock, stops.iter().copied())
}

/// Distances between all nodes; node 0 is the dock and node `i + 1` is `stops[i]`. Improvement
/// reads it O(n²) times per pass, so it is computed once.
struct Distances {
    node_count: usize,
    metres: Vec<f64>,
}

impl Distances {
    fn new(dock: Point, stops: &[Point]) -> Self {
        let nodes: Vec<Point> = std::iter::once(dock).chain(stops.iter().copied()).collect();
        let node_count = nodes.len();
        let mut metres = vec![0.0; node_count * node_count];
        for (a, &from) in nodes.iter().enumerate() {
            for (b, &to) in nodes.iter().enumerate().skip(a + 1) {
                let between = distance(from, to);
                metres[a * node_count + b] = between;
                metres[b * node_count + a] = between;
            }
        }
        Self { node_count, metres }
    }

    #[inline]
    fn between(&self, a: usize, b: usize) -> f64 {
        self.metres[a * self.node_count + b]
    }
}

/// Plans the walk through `stops` from and back to `dock`.
///
/// # Panics
/// If `stops.len()` exceeds [`STOPS_MAX`].
pub fn plan(dock: Point, stops: &[Point]) -> Route {
    assert!(stops.len() <= STOPS_MAX, "pick list of {} stops exceeds STOPS_MAX ({STOPS_MAX})", stops.len());
    let naive_length_m = naive_length(dock, stops);
    let given_order: Vec<usize> = (0..stops.len()).collect();
    if stops.len() < 3 {
        // One or two stops: every order walks the same distance.
        return Route { order: given_order, length_m: naive_length_m, naive_length_m };
    }

    let distances = Distances::new(dock, stops);
    let mut best = Route { order: given_order, length_m: naive_length_m, naive_length_m };
    for mut tour in [nearest_neighbour_tour(&distances), (0..=stops.len()).collect()] {
        improve(&distances, &mut tour);
        let order: Vec<usize> = tour[1..].iter().map(|&node| node - 1).collect();
        let length_m = tour_length(dock, stops, &order);
        if length_m < best.length_m {
            best = Route { order, length_m, naive_length_m };
        }
    }
    best
}

/// A tour of node indices starting at the dock (node 0), always walking to the closest unvisited stop.
fn nearest_neighbour_tour(distances: &Distances) -> Vec<usize> {
    let node_count = distances.node_count;
    let mut visited = vec![false; node_count];
    visited[0] = true;
    let mut tour = Vec::with_capacity(node_count);
    tour.push(0);
    let mut here = 0;
    for _ in 1..node_count {
        let mut nearest = None;
        let mut nearest_m = f64::INFINITY;
        for (node, _) in visited.iter().enumerate().filter(|(_, seen)| !**seen) {
            let between = distances.between(here, node);
            if nearest.is_none() || between < nearest_m {
                nearest = Some(node);
                nearest_m = between;
            }
        }
        let next = nearest.expect("an unvisited stop remains while the tour is short");
        visited[next] = true;
        tour.push(next);
        here = next;
    }
    tour
}

/// Applies 2-opt and Or-opt until neither finds a move; each applied move shortens the tour by more
/// than [`IMPROVEMENT_EPSILON_M`], so this terminates. The dock stays at position 0.
fn improve(distances: &Distances, tour: &mut [usize]) {
    if tour.len() < 4 {
        return;
    }
    loop {
        two_opt(distances, tour);
        if !or_opt(distances, tour) {
            return;
        }
    }
}

/// Reverses tour sections while that removes a crossing; the delta of replacing edges (a,b), (c,d)
/// by (a,c), (b,d) is four matrix reads.
fn two_opt(distances: &Distances, tour: &mut [usize]) {
    let node_count = tour.len();
    loop {
        let mut improved = false;
        for i in 0..node_count - 2 {
            let a = tour[i];
            let mut b = tour[i + 1];
            let mut ab = distances.between(a, b);
            // Edge (tour[i], tour[i+1]) against edge (tour[j], tour[j+1]); the two edges around the
            // dock share it, so i = 0 skips the last edge.
            let j_end = if i == 0 { node_count - 1 } else { node_count };
            for j in i + 2..j_end {
                let c = tour[j];
                let d = tour[(j + 1) % node_count];
                let delta = distances.between(a, c) + distances.between(b, d) - ab - distances.between(c, d);
                if delta < -IMPROVEMENT_EPSILON_M {
                    tour[i + 1..=j].reverse();
                    b = tour[i + 1];
                    ab = distances.between(a, b);
                    improved = true;
                }
            }
        }
        if !improved {
            return;
        }
    }
}

/// One pass relocating runs of 1..=[`OR_OPT_SEGMENT_MAX`] consecutive stops, either way round, to
/// the edge where they cost least; returns whether any move was applied.
fn or_opt(distances: &Distances, tour: &mut [usize]) -> bool {
    let node_count = tour.len();
    let mut improved = false;
    for segment_len in 1..=OR_OPT_SEGMENT_MAX {
        if segment_len + 2 > node_count {
            break;
        }
        // The segment is tour[start..start + segment_len]; start > 0 keeps the dock in place.
        let mut start = 1;
        while start + segment_len <= node_count {
            let end = start + segment_len - 1;
            let (first, last) = (tour[start], tour[end]);
            let (prev, next) = (tour[start - 1], tour[(end + 1) % node_count]);
            let removal_saving =
                distances.between(prev, first) + distances.between(last, next) - distances.between(prev, next);

            let mut best: Option<(usize, bool)> = None;
            let mut best_delta = -IMPROVEMENT_EPSILON_M;
            for p in 0..node_count {
                // Edges touching the segment, or the one it would close, are not insertion points.
                if p + 1 >= start && p <= end {
                    continue;
                }
                let (u, v) = (tour[p], tour[(p + 1) % node_count]);
                let uv = distances.between(u, v);
                let forward = distances.between(u, first) + distances.between(last, v) - uv - removal_saving;
                let reversed = distances.between(u, last) + distances.between(first, v) - uv - removal_saving;
                if forward < best_delta {
                    best = Some((p, false));
                    best_delta = forward;
                }
                if reversed < best_delta {
                    best = Some((p, true));
                    best_delta = reversed;
                }
            }

            match best {
                Some((p, reversed)) => {
                    move_segment(tour, start, segment_len, p, reversed);
                    improved = true;
                    // A new stop now sits at `start`; try it before moving on.
                }
                None => start += 1,
            }
        }
    }
    improved
}

/// Moves tour[start..start + len] to just after the node now at position `after` (outside the
/// segment and not its predecessor), reversing it if asked, without allocating.
fn move_segment(tour: &mut [usize], start: usize, len: usize, after: usize, reversed: bool) {
    let placed = if after >= start + len {
        tour[start..=after].rotate_left(len);
        after + 1 - len..after + 1
    } else {
        tour[after + 1..start + len].rotate_right(len);
        after + 1..after + 1 + len
    };
    if reversed {
        tour[placed].reverse();
    }
}

/// The exact shortest closed walk, by Held-Karp dynamic programming; `None` above
/// [`OPTIMAL_STOPS_MAX`] stops, where it would take too long. A yardstick for [`plan`] in tests and
/// benchmarks.
pub fn optimal_length(dock: Point, stops: &[Point]) -> Option<f64> {
    let stop_count = stops.len();
    if stop_count > OPTIMAL_STOPS_MAX {
        return None;
    }
    if stop_count == 0 {
        return Some(0.0);
    }
    let distances = Distances::new(dock, stops);
    let subsets = 1usize << stop_count;
    // shortest[subset * stop_count + last]: the shortest walk from the dock through exactly the stops
    // in `subset`, ending at `last`.
    let mut shortest = vec![f64::INFINITY; subsets * stop_count];
    for last in 0..stop_count {
        shortest[(1 << last) * stop_count + last] = distances.between(0, last + 1);
    }
    for subset in 1..subsets {
        for last in (0..stop_count).filter(|last| subset & (1 << last) != 0) {
            let so_far = shortest[subset * stop_count + last];
            for next in (0..stop_count).filter(|next| subset & (1 << next) == 0) {
                let walked = so_far + distances.between(last + 1, next + 1);
                let slot = &mut shortest[(subset | 1 << next) * stop_count + next];
                if walked < *slot {
                    *slot = walked;
                }
            }
        }
    }
    let all = subsets - 1;
    let best = (0..stop_count)
        .map(|last| shortest[all * stop_count + last] + distances.between(last + 1, 0))
        .fold(f64::INFINITY, f64::min);
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE_M: f64 = 1e-9;

    fn point(x: f64, y: f64) -> Point {
        Point { x, y }
    }

    fn assert_permutation(order: &[usize], stop_count: usize) {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..stop_count).collect::<Vec<_>>());
    }

    fn brute_force_length(dock: Point, stops: &[Point]) -> f64 {
        fn permute(order: &mut Vec<usize>, k: usize, dock: Point, stops: &[Point], best: &mut f64) {
            if k == order.len() {
                *best = best.min(tour_length(dock, stops, order));
                return;
            }
            for i in k..order.len() {
                order.swap(k, i);
                permute(order, k + 1, dock, stops, best);
                order.swap(k, i);
            }
        }
        let mut best = f64::INFINITY;
        permute(&mut (0..stops.len()).collect(), 0, dock, stops, &mut best);
        best
    }

    #[test]
    fn empty_pick_list_walks_nowhere() {
        let route = plan(point(3.0, 4.0), &[]);
        assert_eq!(route, Route { order: vec![], length_m: 0.0, naive_length_m: 0.0 });
        assert_eq!(optimal_length(point(3.0, 4.0), &[]), Some(0.0));
    }

    #[test]
    fn single_stop_is_out_and_back() {
        let route = plan(point(0.0, 0.0), &[point(3.0, 4.0)]);
        assert_eq!(route.order, vec![0]);
        assert!((route.length_m - 10.0).abs() < TOLERANCE_M);
        assert!((route.naive_length_m - 10.0).abs() < TOLERANCE_M);
    }

    #[test]
    fn square_is_walked_around_its_perimeter() {
        // Dock below the middle of a 10 m square; the given order crosses the square twice.
        let dock = point(5.0, -5.0);
        let stops = [point(0.0, 0.0), point(10.0, 10.0), point(10.0, 0.0), point(0.0, 10.0)];
        let perimeter_walk = 30.0 + 2.0 * 50f64.sqrt();
        let route = plan(dock, &stops);
        assert_permutation(&route.order, stops.len());
        assert!((route.length_m - perimeter_walk).abs() < TOLERANCE_M, "{route:?}");
        assert!((optimal_length(dock, &stops).unwrap() - perimeter_walk).abs() < TOLERANCE_M);
        assert!(route.naive_length_m > perimeter_walk + 1.0);
    }

    #[test]
    fn collinear_stops_are_walked_out_and_back() {
        let dock = point(0.0, 0.0);
        let stops = [point(5.0, 0.0), point(1.0, 0.0), point(3.0, 0.0), point(2.0, 0.0), point(4.0, 0.0)];
        let route = plan(dock, &stops);
        assert_permutation(&route.order, stops.len());
        assert!((route.length_m - 10.0).abs() < TOLERANCE_M, "{route:?}");
        assert!((route.naive_length_m - 18.0).abs() < TOLERANCE_M);
    }

    #[test]
    fn stops_at_identical_coordinates_are_all_visited() {
        let dock = point(0.0, 0.0);
        let stops = [point(6.0, 8.0); 5];
        let route = plan(dock, &stops);
        assert_permutation(&route.order, stops.len());
        assert!((route.length_m - 20.0).abs() < TOLERANCE_M);
    }

    #[test]
    fn optimal_length_matches_brute_force() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut coordinate = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f64 / 50.0
        };
        for stop_count in 1..=7 {
            let dock = point(coordinate(), coordinate());
            let stops: Vec<Point> = (0..stop_count).map(|_| point(coordinate(), coordinate())).collect();
            let exact = optimal_length(dock, &stops).unwrap();
            assert!((exact - brute_force_length(dock, &stops)).abs() < TOLERANCE_M);
            let route = plan(dock, &stops);
            assert!(route.length_m >= exact - TOLERANCE_M);
        }
    }

    #[test]
    fn optimal_length_declines_large_lists() {
        let stops = vec![point(1.0, 1.0); OPTIMAL_STOPS_MAX + 1];
        assert_eq!(optimal_length(point(0.0, 0.0), &stops), None);
    }

    #[test]
    fn tour_length_follows_the_order() {
        let dock = point(0.0, 0.0);
        let stops = [point(0.0, 3.0), point(4.0, 0.0)];
        assert!((tour_length(dock, &stops, &[0, 1]) - 12.0).abs() < TOLERANCE_M);
        assert_eq!(tour_length(dock, &stops, &[0, 1]), naive_length(dock, &stops));
        assert_eq!(tour_length(dock, &stops, &[]), 0.0);
    }

    #[test]
    fn move_segment_relocates_forward_and_backward() {
        let mut tour = [0, 1, 2, 3, 4, 5];
        move_segment(&mut tour, 1, 2, 4, false);
        assert_eq!(tour, [0, 3, 4, 1, 2, 5]);
        let mut tour = [0, 1, 2, 3, 4, 5];
        move_segment(&mut tour, 3, 2, 0, true);
        assert_eq!(tour, [0, 4, 3, 1, 2, 5]);
    }

    #[test]
    #[should_panic(expected = "exceeds STOPS_MAX")]
    fn plan_refuses_lists_beyond_stops_max() {
        plan(point(0.0, 0.0), &vec![point(1.0, 1.0); STOPS_MAX + 1]);
    }
}

//! Properties every planned route must have, on random layouts.

use fulfillment::route::{Point, Route, naive_length, optimal_length, plan, tour_length};
use proptest::prelude::*;

const TOLERANCE_M: f64 = 1e-6;

fn point_in(extent_m: f64) -> impl Strategy<Value = Point> {
    (0.0..extent_m, 0.0..extent_m).prop_map(|(x, y)| Point { x, y })
}

/// Points on a coarse grid, so that many stops share coordinates with each other or the dock.
fn grid_point() -> impl Strategy<Value = Point> {
    (0u8..4, 0u8..4).prop_map(|(x, y)| Point { x: f64::from(x) * 5.0, y: f64::from(y) * 5.0 })
}

fn check_route(dock: Point, stops: &[Point], route: &Route) -> Result<(), TestCaseError> {
    let mut visited = route.order.clone();
    visited.sort_unstable();
    prop_assert_eq!(visited, (0..stops.len()).collect::<Vec<_>>(), "order is not a permutation");
    let walked = tour_length(dock, stops, &route.order);
    prop_assert!(
        (route.length_m - walked).abs() <= TOLERANCE_M,
        "length_m {} but order walks {}",
        route.length_m,
        walked
    );
    prop_assert_eq!(route.naive_length_m, naive_length(dock, stops));
    prop_assert!(
        route.length_m <= route.naive_length_m + TOLERANCE_M,
        "route {} longer than naive {}",
        route.length_m,
        route.naive_length_m
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn route_is_a_shortening_permutation(dock in point_in(200.0), stops in prop::collection::vec(point_in(200.0), 0..=60)) {
        check_route(dock, &stops, &plan(dock, &stops))?;
    }

    #[test]
    fn route_handles_shared_coordinates(dock in grid_point(), stops in prop::collection::vec(grid_point(), 0..=40)) {
        check_route(dock, &stops, &plan(dock, &stops))?;
    }

    #[test]
    fn route_is_no_shorter_than_optimal(dock in point_in(200.0), stops in prop::collection::vec(point_in(200.0), 0..=9)) {
        let route = plan(dock, &stops);
        check_route(dock, &stops, &route)?;
        let optimal = optimal_length(dock, &stops).expect("nine stops are within Held-Karp's limit");
        // `optimal <= length_m + tolerance`, i.e. `length_m >= optimal - tolerance`: a heuristic beating
        // the exact optimum would mean one of the two is wrong. No ratio bound: plan is a heuristic.
        prop_assert!(route.length_m >= optimal - TOLERANCE_M, "route {} below optimal {}", route.length_m, optimal);
    }
}

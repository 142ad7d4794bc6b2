//! The fulfillment context. So far it holds the pure rules of picking: [`route`] plans the
//! walk of a pick list over the bins' coordinates from the warehouse's dock. Fulfillments,
//! pick lists, packing, quality control, shipping and returns (issue 10) build on it; the
//! warehouse primitives they need (`warehouse::reservation::settle_part`,
//! `warehouse::quarantine`) are in place.

pub mod route;

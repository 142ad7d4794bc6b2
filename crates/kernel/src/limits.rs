//! Named limits: every bound in Stockroom has a name here and a reason.

/// Largest quantity in one request line. One billion units is more than any single
/// warehouse holds of a SKU, and keeps sums of many lines far from `i64` overflow.
pub const QUANTITY_MAX: i64 = 1_000_000_000;

/// Largest stock level a row may reach. Sums of lines stay below `i64::MAX` with a wide margin.
pub const STOCK_LEVEL_MAX: i64 = 1_000_000_000_000_000;

/// Most lines in one receipt, transfer or reservation: a large B2B order, bounded so one
/// request cannot hold a write transaction for long.
pub const LINES_PER_REQUEST_MAX: usize = 1_000;

/// Most SKUs in one batched stock read (`GET /v1/stock?skus=`), answered in one query.
pub const STOCK_BATCH_SKUS_MAX: usize = 1_000;

/// Default and largest page of a list.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
pub const PAGE_SIZE_MAX: u32 = 1_000;

/// Reservation time to live: default 15 minutes (a checkout), at most a week.
pub const RESERVATION_TTL_SECONDS_DEFAULT: i64 = 900;
pub const RESERVATION_TTL_SECONDS_MAX: i64 = 604_800;

/// Largest request body. 1,000 lines of a few hundred bytes each fit comfortably.
pub const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Most expired reservations one sweeper run releases, so one run stays a short transaction.
pub const SWEEP_BATCH_MAX: i64 = 500;

/// Most expired reservations reclaimed inline by one hold that found stock short.
pub const INLINE_RECLAIM_MAX: i64 = 100;

/// Most rows in one multi-row `INSERT`: below SQLite's and PostgreSQL's bind-parameter limits
/// for our widest row (12 columns).
pub const INSERT_ROWS_MAX: usize = 500;

/// Longest free-text field (names, references, reasons).
pub const TEXT_CHARS_MAX: usize = 512;

/// Most outbox seqs one subscriber run scans. A run holds a write transaction (on SQLite the
/// one write lock) while it handles them, so this bounds the stall it adds to foreground writes:
/// at 1,000 the `alerts` subscriber took HTTP open-loop hold p99 in a flash sale from 9-10 ms to
/// 20-38 ms (docs/benchmarks.md, "The seams change").
pub const OUTBOX_BATCH_MAX: i64 = 250;

/// Most stock levels one alerts run re-evaluates after a rule changed.
pub const ALERT_RESCAN_LEVELS_MAX: i64 = 1_000;

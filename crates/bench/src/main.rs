//! `stockroom-bench`: Stockroom against the usual inventory designs, side by side, on the same
//! workloads and data. See `docs/benchmarks.md`.
//!
//! - [`systems`]: Stockroom (SQLite FULL/NORMAL, PostgreSQL; in-process and HTTP) and the
//!   baselines (SQL designs on the same schema);
//! - [`workloads`]: hot-sku, burst, checkout, mix, expiry;
//! - [`load`]: closed-loop, open-loop and burst drivers; [`stats`]: HDR histograms;
//! - [`check`]: oversell/undersell and reconciliation from the database after each run;
//! - [`report`]: the table, the ratios and the JSON file; [`env`]: the header line;
//! - [`orchestrate`]: one child process per job, results gathered by the parent;
//! - subcommands `availability`, `orders`, `fulfillment` and `import` (holds beside a CLI import).

mod availability;
mod check;
mod cli;
mod database;
mod env;
mod fulfilment;
mod import;
mod load;
mod orchestrate;
mod orders;
mod probe;
mod report;
mod rng;
mod seed;
mod stats;
mod systems;
mod workloads;

/// mimalloc: glibc malloc was 8% of the availability read path's profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    events::install_tls();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOCKROOM_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")),
        )
        .init();
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Job { spec }) => orchestrate::job_process(&spec),
        Some(cli::Command::Availability(args)) => availability::run(&args),
        Some(cli::Command::Orders(args)) => orders::run(&args),
        Some(cli::Command::Fulfillment(args)) => fulfilment::run(&args),
        Some(cli::Command::Import(args)) => import::run(&args),
        None => orchestrate::run(&cli.run),
    }
}

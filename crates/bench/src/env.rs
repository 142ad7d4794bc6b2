//! The machine and the databases a run measured: the header line, fsync latency, peak RSS.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub cpu: String,
    pub cores: usize,
    pub sqlite_version: String,
    pub postgres_version: Option<String>,
    /// `synchronous_commit`, `fsync`, `wal_sync_method`, `full_page_writes`.
    pub postgres_durability: Option<String>,
    pub sqlite_durability: String,
    pub temp_dir: String,
    /// `fdatasync` of a 4 KiB write to a file in the temp dir (where the SQLite files live).
    pub fsync_ms_median: f64,
    pub fsync_ms_max: f64,
    pub fsync_samples: usize,
    pub quick: bool,
    /// 1-minute load average when the run started.
    pub loadavg_1m: f64,
    /// The git revision of the working directory at run time, with the number of files that
    /// differ from it, and when this binary was built (so a stale binary shows).
    pub source: String,
    pub command: String,
}

impl Header {
    pub fn line(&self) -> String {
        format!(
            "# {} | cpu: {} x{} | load {:.2} | sqlite {} ({}) | postgres {} ({}) | fdatasync {:.2} ms median, {:.2} ms max of {} in {} | {}",
            self.source,
            self.cpu,
            self.cores,
            self.loadavg_1m,
            self.sqlite_version,
            self.sqlite_durability,
            self.postgres_version.as_deref().unwrap_or("not used"),
            self.postgres_durability.as_deref().unwrap_or("-"),
            self.fsync_ms_median,
            self.fsync_ms_max,
            self.fsync_samples,
            self.temp_dir,
            self.command,
        )
    }
}

pub async fn header(postgres_url: Option<&str>, quick: bool) -> anyhow::Result<Header> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    sqlx::any::install_default_drivers();
    let mut sqlite = <sqlx::AnyConnection as sqlx::Connection>::connect("sqlite::memory:").await?;
    let sqlite_version: String = sqlx::query_scalar("SELECT sqlite_version()").fetch_one(&mut sqlite).await?;
    let (postgres_version, postgres_durability) = match postgres_url {
        Some(url) => {
            let mut pg = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
            let mut show = Vec::new();
            for setting in [
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "full_page_writes",
                "shared_buffers",
            ] {
                let value: String =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}"))).fetch_one(&mut pg).await?;
                show.push((setting, value));
            }
            let version = show[0].1.clone();
            let durability = show[1..].iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            (Some(version), Some(durability))
        }
        None => (None, None),
    };
    let (median, max, samples) = fsync_latency(50)?;
    Ok(Header {
        cpu,
        cores,
        sqlite_version,
        postgres_version,
        postgres_durability,
        sqlite_durability: "WAL; FULL or NORMAL per system".into(),
        temp_dir: std::env::temp_dir().display().to_string(),
        fsync_ms_median: median,
        fsync_ms_max: max,
        fsync_samples: samples,
        quick,
        loadavg_1m: loadavg_1m(),
        source: source_revision(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
}

/// Times `samples` rounds of a 4 KiB write plus `fdatasync` in the temp dir.
fn fsync_latency(samples: usize) -> anyhow::Result<(f64, f64, usize)> {
    let path = std::env::temp_dir().join(format!("stockroom_bench_fsync_{}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times.last().copied().unwrap_or_default();
    Ok(((median * 1000.0).round() / 1000.0, (max * 1000.0).round() / 1000.0, samples))
}

/// Peak resident set of this process (`VmHWM`), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
        .unwrap_or(0.0)
}

/// User plus system CPU time of this process so far, in seconds (`/proc/self/stat`, in
/// USER_HZ = 100 ticks per second on Linux).
pub fn process_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The machine's 1-minute load average: above the core count, something else competed.
pub fn loadavg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `git HEAD (+N changed files), binary built at T` as far as it can be found out.
fn source_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown revision".into());
    let changed = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| s.lines().count()).unwrap_or(0);
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| std::fs::metadata(exe).ok())
        .and_then(|m| m.modified().ok())
        .map(|t| {
            kernel::Timestamp::from_millis(
                t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
            )
            .to_rfc3339()
        })
        .unwrap_or_else(|| "unknown".into());
    format!("git {head} (+{changed} changed files), binary built {built}")
}

//! Stockroom's own metrics, read inside a job: the group commit's batch sizes explain its
//! throughput. A job process installs the Prometheus recorder globally (one job per process),
//! and the HTTP server of the job renders the same registry.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const BATCH_SIZE: &str = "stockroom_group_commit_batch_size";

/// Installs the global recorder (once per process; later calls do nothing).
pub fn install() {
    if HANDLE.get().is_none()
        && let Ok(handle) = PrometheusBuilder::new().install_recorder()
    {
        let _ = HANDLE.set(handle);
    }
}

/// The installed recorder's handle, or a detached one.
pub fn handle() -> PrometheusHandle {
    HANDLE.get().cloned().unwrap_or_else(|| PrometheusBuilder::new().build_recorder().handle())
}

/// Group-commit batches so far and the requests they carried: (batches, requests).
pub fn batch_totals() -> (f64, f64) {
    let Some(handle) = HANDLE.get() else {
        return (0.0, 0.0);
    };
    let rendered = handle.render();
    let value = |name: &str| -> f64 {
        rendered
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            // `name value` or, labelled by executor, `name{executor="..."} value`.
            .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            .filter_map(|rest| rest.rsplit(' ').next())
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    };
    (value(&format!("{BATCH_SIZE}_count")), value(&format!("{BATCH_SIZE}_sum")))
}

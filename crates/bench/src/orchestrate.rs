//! The parent process: plans the jobs (workloads in order; within each, every system and
//! layer, interleaved across rounds), runs each in a child process of this binary, and
//! prints and writes the results.

use crate::cli::RunArgs;
use crate::report::{self, RunResult};
use crate::systems::{Layer, System};
use crate::workloads::{JobSpec, run_job};
use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Prefix of the lines a child prints its records on.
const RESULT_PREFIX: &str = "RESULT ";

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let params = args.params();
    let workloads = args.workloads()?;
    let layers = args.layers()?;
    let mut notes = Vec::new();
    let mut systems = args.systems()?;
    if args.postgres_url.is_none() {
        let skipped: Vec<&str> =
            systems.iter().filter(|s| s.backend() == store::Backend::Postgres).map(|s| s.name()).collect();
        if !skipped.is_empty() {
            let note = format!("no --postgres-url: skipped {}", skipped.join(", "));
            eprintln!("note: {note}");
            notes.push(note);
        }
        systems.retain(|s| s.backend() != store::Backend::Postgres);
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let header = runtime.block_on(crate::env::header(args.postgres_url.as_deref(), args.quick))?;
    drop(runtime);
    eprintln!("{}", header.line());

    let combos: Vec<(System, Layer)> = systems
        .iter()
        .flat_map(|s| s.layers().iter().map(move |l| (*s, *l)))
        .filter(|(_, l)| layers.contains(l))
        .collect();
    let mut jobs = Vec::new();
    for workload in &workloads {
        let applicable: Vec<(System, Layer)> =
            combos.iter().copied().filter(|(s, l)| workload.applies_to(*s, *l)).collect();
        for round in 0..args.rounds.max(1) {
            // Rotate the order each round so no system always runs first or last.
            for i in 0..applicable.len() {
                let (system, layer) = applicable[(i + round) % applicable.len()];
                jobs.push(JobSpec {
                    workload: *workload,
                    system,
                    layer,
                    params: params.clone(),
                    postgres_url: args.postgres_url.clone(),
                });
            }
        }
    }

    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let job_started = Instant::now();
        eprint!(
            "[{}/{}] {} on {} ({}) ... ",
            i + 1,
            jobs.len(),
            job.workload.name(),
            job.system.name(),
            job.layer.name()
        );
        match run_child(job) {
            Ok(records) => {
                let summary: Vec<String> = records
                    .iter()
                    .map(|r| format!("{} {:.0} ok/s p99 {:.2} ms", r.workload, r.ok_per_s, r.p99_ms))
                    .collect();
                eprintln!("{:.1} s: {}", job_started.elapsed().as_secs_f64(), summary.join("; "));
                results.extend(records);
            }
            Err(e) => {
                eprintln!("FAILED: {e:#}");
                notes.push(format!(
                    "{} on {} ({}) failed: {e:#}",
                    job.workload.name(),
                    job.system.name(),
                    job.layer.name()
                ));
            }
        }
    }
    let mut results = report::median_of_rounds(results);
    report::sort_by_workload(&mut results);
    report::compute_ratios(&mut results);
    notes.push(format!("total time {:.1} s for {} jobs", started.elapsed().as_secs_f64(), jobs.len()));
    println!("{}", report::table(&header, &results));
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(path) = &args.json {
        let json = report::json(&header, &results, &notes);
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one job in a child process of this binary and reads its records.
fn run_child(job: &JobSpec) -> anyhow::Result<Vec<RunResult>> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut child = Command::new(exe)
        .arg("job")
        .arg("--spec")
        .arg(serde_json::to_string(job)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the job process")?;
    let stdout = child.stdout.take().context("the job's stdout")?;
    let mut records = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix(RESULT_PREFIX) {
            records.push(serde_json::from_str(json).context("reading a job's record")?);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("the job process exited with {status}");
    }
    Ok(records)
}

/// The child side: runs the job and prints one `RESULT` line per record.
pub fn job_process(spec: &str) -> anyhow::Result<()> {
    let spec: JobSpec = serde_json::from_str(spec).context("reading the job spec")?;
    crate::probe::install();
    let runtime = tokio::runtime::Runtime::new()?;
    let records = runtime.block_on(run_job(&spec))?;
    for record in records {
        println!("{RESULT_PREFIX}{}", serde_json::to_string(&record)?);
    }
    // Do not wait for stray tasks (HTTP connections, timers) of the stopped system.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

//! The workloads W1–W8 and how one round of each is measured on one system.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::systems::{HELD_TASKS, Store, System, disk_bytes, full_key};

/// Value bytes of every set but W8's.
pub const VALUE_BYTES: usize = 100;
/// Sets per commit in W3, W7's fill, W8 and W6's fill.
pub const BATCH: u64 = 1_000;
/// Threads of W2.
pub const W2_THREADS: usize = 16;
/// Threads of W4.
pub const W4_THREADS: usize = 4;
/// W4's keys: this many tasks of `W4_KEYS` keys each, written once.
pub const W4_TASKS: usize = 100;
/// Keys of each W4 task.
pub const W4_KEYS: u64 = 1_000;
/// Keys a W5 task holds when it is cleared.
pub const W5_KEYS: u64 = 100;

/// How long the store rests before each set of the W5/idle row.
const W5_IDLE: Duration = Duration::from_millis(2);

/// More W5 tasks than one span clears: the tasks of W5's second pass
/// are numbered after these.
const W5_TASKS_MAX: usize = 1 << 24;
/// W8's value size (about; each is a whole JSON document).
pub const W8_VALUE_BYTES: usize = 10 << 10;
/// Distinct W8 values, cycled over the keys.
pub const W8_VALUES: usize = 64;

/// A workload of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// Durable set of one key, 1 thread.
    W1,
    /// Durable set of one key, 16 threads (each its own task).
    W2,
    /// 1,000 sets in one durable commit, 1 thread.
    W3,
    /// Get of existing keys, 4 threads.
    W4,
    /// Clear a task attempt that holds 100 keys, durably.
    W5,
    /// Open after a crash with 1e5 and 1e6 events written.
    W6,
    /// Replay (scan) every event of the log.
    W7,
    /// As W3 with 10 KiB JSON-like values.
    W8,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 8] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
        Workload::W8,
    ];

    /// What the workload measures, for the table.
    pub fn title(self) -> &'static str {
        match self {
            Workload::W1 => "durable set, 1 thread",
            Workload::W2 => "durable set, 16 threads",
            Workload::W3 => "1,000 sets per durable commit (p50/p99 per commit)",
            Workload::W4 => "get of existing keys, 4 threads",
            Workload::W5 => {
                "clear a task attempt holding 100 keys, durable (W5/set: one set in the clear's place; W5/idle: one set after 2 ms idle)"
            }
            Workload::W6 => "open after a crash, then one get",
            Workload::W7 => "replay every event of the log",
            Workload::W8 => "1,000 sets of ~10 KiB JSON per durable commit",
        }
    }

    /// Whether `system` takes part (the floor has no reads and no open;
    /// waymark with compression differs from waymark only where values
    /// reach its 1 KiB threshold: W8).
    pub fn applies_to(self, system: System) -> bool {
        match system {
            System::Floor => !matches!(self, Workload::W4 | Workload::W6),
            System::WaymarkZstd => self == Workload::W8,
            _ => true,
        }
    }
}

/// One measurement: a round of one workload on one system.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Operations per second (sets, gets, clears, events replayed).
    pub ops_per_sec: Option<f64>,
    /// Median latency of one operation (of one commit in W3 and W8), µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// Bytes allocated on disk per set (W3, W8).
    pub bytes_per_op: Option<f64>,
    /// W6: milliseconds from the open to the first get's answer.
    pub open_ms: Option<f64>,
    /// W6: the opening process's peak RSS, MiB.
    pub peak_rss_mib: Option<f64>,
    /// W6: the key and value bytes stored, MiB.
    pub live_mib: Option<f64>,
    /// W7: gigabytes read per second.
    pub gb_per_sec: Option<f64>,
}

/// The measurement settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long each timed loop runs.
    pub span: Duration,
    /// Events W6 writes before each crash.
    pub w6_events: Vec<u64>,
    /// Events W7 replays.
    pub w7_events: u64,
    /// Directory the stores are created in.
    pub dir: PathBuf,
}

/// The 100-byte value of W1–W5 and W7.
pub fn small_values() -> Vec<Vec<u8>> {
    vec![vec![b'v'; VALUE_BYTES]]
}

/// W8's values: JSON documents of about 10 KiB, each different (seeded),
/// in the shape of an OCR step's output (lines of words, amounts, boxes).
pub fn json_values() -> Vec<Vec<u8>> {
    const WORDS: [&str; 24] = [
        "invoice",
        "total",
        "amount",
        "due",
        "date",
        "customer",
        "acme",
        "order",
        "item",
        "quantity",
        "price",
        "tax",
        "net",
        "gross",
        "page",
        "line",
        "account",
        "number",
        "street",
        "city",
        "payment",
        "terms",
        "days",
        "reference",
    ];
    let mut rng = fastrand::Rng::with_seed(16);
    (0..W8_VALUES)
        .map(|doc| {
            let mut s = format!("{{\"document\":\"doc-{doc:05}\",\"pages\":3,\"lines\":[");
            let mut n = 0;
            while s.len() < W8_VALUE_BYTES - 200 {
                if n > 0 {
                    s.push(',');
                }
                let words: Vec<&str> = (0..rng.usize(3..9))
                    .map(|_| WORDS[rng.usize(..WORDS.len())])
                    .collect();
                s.push_str(&format!(
                    "{{\"n\":{n},\"text\":\"{}\",\"amount\":{}.{:02},\"confidence\":0.{:03},\"box\":[{},{},{},{}]}}",
                    words.join(" "),
                    rng.u32(..100_000),
                    rng.u32(..100),
                    rng.u32(500..1000),
                    rng.u32(..2480),
                    rng.u32(..3508),
                    rng.u32(..600),
                    rng.u32(..60),
                ));
                n += 1;
            }
            s.push_str("]}");
            s.into_bytes()
        })
        .collect()
}

/// The latency percentile `p` (0..=1) of sorted `nanos`, in µs.
fn percentile_us(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[at] as f64 / 1e3)
}

/// Runs `op(thread, i)` on `threads` threads for `span`. Each call returns
/// the operations it did and the latency it measured (a call may do
/// untimed set-up first). Returns the operations, the wall time and every
/// latency in nanoseconds, sorted.
fn timed(
    threads: usize,
    span: Duration,
    op: &(dyn Fn(usize, u64) -> Result<(u64, Duration)> + Sync),
) -> Result<(u64, Duration, Vec<u64>)> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let per_thread = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || -> Result<(u64, Vec<u64>)> {
                    let (mut ops, mut lat) = (0u64, Vec::with_capacity(1 << 16));
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (n, took) =
                            op(t, i).inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
                        ops += n;
                        lat.push(took.as_nanos() as u64);
                        i += 1;
                    }
                    Ok((ops, lat))
                })
            })
            .collect();
        std::thread::sleep(span);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a workload thread panicked"))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = start.elapsed();
    let (mut ops, mut lat) = (0, Vec::new());
    for r in per_thread {
        let (n, l) = r?;
        ops += n;
        lat.extend(l);
    }
    lat.sort_unstable();
    Ok((ops, elapsed, lat))
}

/// Times one call.
fn clock<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let out = f()?;
    Ok((out, start.elapsed()))
}

fn rate(ops: u64, elapsed: Duration, lat: &[u64]) -> Measured {
    Measured {
        ops_per_sec: Some(ops as f64 / elapsed.as_secs_f64()),
        p50_us: percentile_us(lat, 0.5),
        p99_us: percentile_us(lat, 0.99),
        ..Measured::default()
    }
}

/// A new, empty directory for one measurement.
fn fresh(settings: &Settings, system: System) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(system.name())
        .tempdir_in(&settings.dir)?)
}

/// What a workload keeps across rounds: W4's loaded stores, W6's and
/// W7's filled directories.
pub struct Prepared {
    /// The store W4 reads, loaded once.
    pub w4: Option<Box<dyn Store>>,
    /// W6's directory for each event count.
    pub w6: Vec<(u64, tempfile::TempDir)>,
    /// W7's filled (closed) directory.
    pub w7: Option<tempfile::TempDir>,
    _w4_dir: Option<tempfile::TempDir>,
}

impl Prepared {
    /// Loads what `workloads` need of `system` before the first round.
    pub fn new(system: System, workloads: &[Workload], settings: &Settings) -> Result<Prepared> {
        let mut p = Prepared {
            w4: None,
            w6: Vec::new(),
            w7: None,
            _w4_dir: None,
        };
        let values = small_values();
        if workloads.contains(&Workload::W4) && Workload::W4.applies_to(system) {
            let dir = fresh(settings, system)?;
            let store = system.open(dir.path())?;
            for task in 0..W4_TASKS {
                store.set_many(0, task, 0..W4_KEYS, &values)?;
            }
            p.w4 = Some(store);
            p._w4_dir = Some(dir);
        }
        if workloads.contains(&Workload::W6) && Workload::W6.applies_to(system) {
            for &events in &settings.w6_events {
                let dir = fresh(settings, system)?;
                child(&[
                    "fill",
                    system.name(),
                    path_str(dir.path())?,
                    &events.to_string(),
                ])?;
                p.w6.push((events, dir));
            }
        }
        if workloads.contains(&Workload::W7) {
            let dir = fresh(settings, system)?;
            let store = system.open(dir.path())?;
            fill(&*store, settings.w7_events)?;
            store.close()?;
            p.w7 = Some(dir);
        }
        Ok(p)
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Writes `events` sets in commits of [`BATCH`], task by task (at most
/// [`HELD_TASKS`] tasks; the keys of one task continue past `BATCH`).
pub fn fill(store: &dyn Store, events: u64) -> Result<()> {
    let values = small_values();
    let commits = events.div_ceil(BATCH);
    for c in 0..commits {
        let task = (c % HELD_TASKS as u64) as usize;
        let first = (c / HELD_TASKS as u64) * BATCH;
        let n = BATCH.min(events - c * BATCH);
        store.set_many(0, task, first..first + n, &values)?;
    }
    Ok(())
}

/// Runs this binary as a child (`compare child ARGS`) and returns what it
/// printed.
fn child(args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).arg("child").args(args).output()?;
    if !out.status.success() {
        bail!(
            "child {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The child's side of W6's fill: write, then exit without closing (the
/// crash; every commit was acknowledged durable).
pub fn child_fill(system: System, dir: &Path, events: u64) -> Result<()> {
    let store = system.open(dir)?;
    fill(&*store, events)?;
    std::mem::forget(store);
    std::process::exit(0)
}

/// The child's side of W6's open: open, read one key written, print the
/// time and peak RSS as `open_us peak_rss_kib`, exit without closing (so
/// the next open is after a crash again).
pub fn child_open(system: System, dir: &Path) -> Result<()> {
    let start = Instant::now();
    let store = system.open(dir)?;
    if store.get(0, 0, 0)?.is_none() {
        bail!("{}: the first key is missing after the open", system.name());
    }
    let took = start.elapsed();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()?;
    println!("{} {hwm}", took.as_micros());
    std::mem::forget(store);
    std::process::exit(0)
}

/// One round of `workload` on `system`: a row of figures (W6 one per event
/// count), labelled.
pub fn measure(
    workload: Workload,
    system: System,
    prepared: &Prepared,
    settings: &Settings,
) -> Result<Vec<(String, Measured)>> {
    let label = format!("{workload:?}");
    let span = settings.span;
    let values = small_values();
    let value = values[0].as_slice();
    Ok(match workload {
        Workload::W1 | Workload::W2 => {
            let dir = fresh(settings, system)?;
            let store = system.open(dir.path())?;
            let threads = if workload == Workload::W1 {
                1
            } else {
                W2_THREADS
            };
            let (ops, elapsed, lat) = timed(threads, span, &|t, i| {
                let ((), took) = clock(|| store.set(t, t, i, value))?;
                Ok((1, took))
            })?;
            store.close()?;
            vec![(label, rate(ops, elapsed, &lat))]
        }
        Workload::W3 | Workload::W8 => {
            let values = if workload == Workload::W3 {
                values
            } else {
                json_values()
            };
            let dir = fresh(settings, system)?;
            let store = system.open(dir.path())?;
            let (ops, elapsed, lat) = timed(1, span, &|_, i| {
                let task = (i % HELD_TASKS as u64) as usize;
                let first = (i / HELD_TASKS as u64) * BATCH;
                let ((), took) = clock(|| store.set_many(0, task, first..first + BATCH, &values))?;
                Ok((BATCH, took))
            })?;
            store.close()?;
            let mut m = rate(ops, elapsed, &lat);
            // The floor's file is preallocated and written around: its size
            // says nothing of the bytes a set costs.
            if system != System::Floor {
                m.bytes_per_op = Some(disk_bytes(dir.path())? as f64 / ops as f64);
            }
            vec![(label, m)]
        }
        Workload::W4 => {
            let store = prepared.w4.as_ref().context("W4 was prepared")?;
            let (ops, elapsed, lat) = timed(W4_THREADS, span, &|t, i| {
                let mut rng = fastrand::Rng::with_seed((t as u64) << 32 | i);
                let (task, key) = (rng.usize(..W4_TASKS), rng.u64(..W4_KEYS));
                let (got, took) = clock(|| store.get(t, task, key))?;
                if got != Some(VALUE_BYTES) {
                    bail!("{}: {} read {got:?}", system.name(), full_key(task, key));
                }
                Ok((1, took))
            })?;
            vec![(label, rate(ops, elapsed, &lat))]
        }
        Workload::W5 => {
            let dir = fresh(settings, system)?;
            let store = system.open(dir.path())?;
            let (ops, _, lat) = timed(1, span, &|_, i| {
                let task = HELD_TASKS + i as usize;
                store.set_many(0, task, 0..W5_KEYS, &values)?;
                let ((), took) = clock(|| store.clear(0, task))?;
                Ok((1, took))
            })?;
            // The same set-up, then one set timed where the clear was: what
            // one durable event costs right after the set-up's commit (its
            // sync lands in new blocks, unlike W1's stream of small ones).
            let after = W5_TASKS_MAX + HELD_TASKS;
            let (set_ops, _, set_lat) = timed(1, span, &|_, i| {
                let task = after + i as usize;
                store.set_many(0, task, 0..W5_KEYS, &values)?;
                let ((), took) = clock(|| store.set(0, task, W5_KEYS, value))?;
                Ok((1, took))
            })?;
            // One set after the store has been idle for W5_IDLE: a worker
            // that writes now and then, not in a stream.
            let (idle_ops, _, idle_lat) = timed(1, span, &|_, i| {
                std::thread::sleep(W5_IDLE);
                let ((), took) = clock(|| store.set(0, 0, W5_KEYS + 1 + i, value))?;
                Ok((1, took))
            })?;
            store.close()?;
            // Operations per second of their own time (the set-up is not
            // timed).
            let busy = |lat: &[u64]| Duration::from_nanos(lat.iter().sum::<u64>().max(1));
            vec![
                (label, rate(ops, busy(&lat), &lat)),
                ("W5/set".to_owned(), rate(set_ops, busy(&set_lat), &set_lat)),
                (
                    "W5/idle".to_owned(),
                    rate(idle_ops, busy(&idle_lat), &idle_lat),
                ),
            ]
        }
        Workload::W6 => {
            let mut out = Vec::new();
            for (events, dir) in &prepared.w6 {
                let printed = child(&["open", system.name(), path_str(dir.path())?])?;
                let mut fields = printed.split_whitespace();
                let (Some(us), Some(kib)) = (fields.next(), fields.next()) else {
                    bail!("child open printed {printed:?}");
                };
                let live = *events as f64 * (full_key(0, 0).len() + VALUE_BYTES) as f64;
                out.push((
                    format!("W6/{}", events_label(*events)),
                    Measured {
                        open_ms: Some(us.parse::<f64>()? / 1e3),
                        peak_rss_mib: Some(kib.parse::<f64>()? / 1024.0),
                        live_mib: Some(live / (1 << 20) as f64),
                        ..Measured::default()
                    },
                ));
            }
            out
        }
        Workload::W7 => {
            let dir = prepared.w7.as_ref().context("W7 was prepared")?;
            let (mut records, mut bytes, mut took) = (0u64, 0u64, Duration::ZERO);
            // Whole passes until a quarter of the span has gone.
            while took < span / 4 || records == 0 {
                let (r, b, t) = system.scan(dir.path())?;
                if system != System::Floor && r < settings.w7_events {
                    bail!(
                        "{}: replayed {r} of {} events",
                        system.name(),
                        settings.w7_events
                    );
                }
                (records, bytes, took) = (records + r, bytes + b, took + t);
            }
            vec![(
                label,
                Measured {
                    ops_per_sec: Some(records as f64 / took.as_secs_f64()),
                    gb_per_sec: Some(bytes as f64 / took.as_secs_f64() / 1e9),
                    ..Measured::default()
                },
            )]
        }
    })
}

/// `1e5`, `1e6`, or the number.
pub fn events_label(events: u64) -> String {
    let mut e = 0;
    let mut n = events;
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
        e += 1;
    }
    if n == 1 && e > 0 {
        format!("1e{e}")
    } else {
        events.to_string()
    }
}

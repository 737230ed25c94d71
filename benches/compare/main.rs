//! `compare`: waymark side by side with what a worker would otherwise use
//! for its state (SQLite with Marie's `task_state` table, redb, fjall and
//! RocksDB), and with the floor of what the disk allows, on the workloads
//! W1–W8 of issue 16. waymark is driven through the kernel API, as a worker
//! calls it.
//!
//! ```text
//! cargo run --release -p waymark-benches --bin compare -- [--quick] [--json]
//!     [--systems waymark,sqlite,..] [--workloads w1,w3,..] [--rounds N]
//!     [--span-ms MS] [--dir DIR]
//! ```
//!
//! Every round measures each workload on every system in turn, starting
//! from a different system each round (A B C …, B C … A), so that the
//! machine's drift hits all alike; the table shows medians over rounds and
//! waymark's ratio to each peer. BENCHMARKS.md ("Side by side") holds a
//! run's table and what each system's durability setting means.

mod systems;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use systems::System;
use workloads::{Measured, Prepared, Settings, Workload};

/// waymark side by side with SQLite, redb, fjall, RocksDB and the disk's
/// floor.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "waymark side by side with SQLite, redb, fjall, RocksDB and the disk's floor: \
             ops/s, p50, p99 and waymark's ratio to each peer."
)]
struct Cli {
    /// Short rounds and smaller fills: the whole run in under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// One JSON object per (workload, system) on stdout, instead of tables.
    #[arg(long)]
    json: bool,
    /// The systems to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    systems: Vec<System>,
    /// The workloads to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// Rounds (default 5; 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Milliseconds each timed loop runs (default 1000; 300 with --quick).
    #[arg(long)]
    span_ms: Option<u64>,
    /// W6's event counts, each written before a crash (default 1e5 and
    /// 1e6).
    #[arg(long, value_delimiter = ',')]
    w6_events: Vec<u64>,
    /// Events W7 replays (default 1e6; 2e5 with --quick).
    #[arg(long)]
    w7_events: Option<u64>,
    /// Where the stores are created (default: the system's temporary
    /// directory; it must be on the disk being measured, not a tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    child: Option<Child>,
}

/// The child processes of W6 (not for direct use).
#[derive(Subcommand, Debug)]
enum Child {
    /// Internal: W6's write-then-crash and open-after-crash processes.
    #[command(hide = true)]
    Child {
        /// `fill` or `open`.
        what: String,
        /// The system's name.
        system: System,
        /// Its directory.
        dir: PathBuf,
        /// Events to write (`fill`).
        events: Option<u64>,
    },
}

/// Medians over rounds of one (row, system).
#[derive(Default)]
struct Rounds(Vec<Measured>);

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Rounds {
    fn median(&self, field: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
        median(self.0.iter().filter_map(&field).collect())
    }

    fn medians(&self) -> Measured {
        Measured {
            ops_per_sec: self.median(|m| m.ops_per_sec),
            p50_us: self.median(|m| m.p50_us),
            p99_us: self.median(|m| m.p99_us),
            bytes_per_op: self.median(|m| m.bytes_per_op),
            open_ms: self.median(|m| m.open_ms),
            peak_rss_mib: self.median(|m| m.peak_rss_mib),
            live_mib: self.median(|m| m.live_mib),
            gb_per_sec: self.median(|m| m.gb_per_sec),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Child::Child {
        what,
        system,
        dir,
        events,
    }) = &cli.child
    {
        return match what.as_str() {
            "fill" => workloads::child_fill(*system, dir, events.context("fill takes EVENTS")?),
            "open" => workloads::child_open(*system, dir),
            other => anyhow::bail!("unknown child {other:?}"),
        };
    }
    let systems = if cli.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        cli.systems.clone()
    };
    let workloads = if cli.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        cli.workloads.clone()
    };
    let rounds = cli.rounds.unwrap_or(if cli.quick { 3 } else { 5 }).max(1);
    let span = Duration::from_millis(cli.span_ms.unwrap_or(if cli.quick { 300 } else { 1000 }));
    let base = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("waymark-compare")
        .tempdir_in(&base)
        .with_context(|| format!("a directory under {}", base.display()))?;
    let settings = Settings {
        span,
        w6_events: if cli.w6_events.is_empty() {
            vec![100_000, 1_000_000]
        } else {
            cli.w6_events.clone()
        },
        w7_events: cli
            .w7_events
            .unwrap_or(if cli.quick { 200_000 } else { 1_000_000 }),
        dir: dir.path().to_path_buf(),
    };
    let started = Instant::now();
    eprintln!(
        "compare: {rounds} rounds, {} ms per timed loop, systems {:?}, in {}",
        span.as_millis(),
        systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
        settings.dir.display()
    );

    let mut prepared = Vec::new();
    for &system in &systems {
        eprintln!(
            "compare: loading {} ({:.0?})",
            system.name(),
            started.elapsed()
        );
        prepared.push(Prepared::new(system, &workloads, &settings)?);
    }
    // (row label, system) -> rounds; rows in workload order.
    let mut results: BTreeMap<(Workload, String), BTreeMap<usize, Rounds>> = BTreeMap::new();
    for round in 0..rounds {
        for &workload in &workloads {
            for k in 0..systems.len() {
                let at = (k + round) % systems.len();
                let system = systems[at];
                if !workload.applies_to(system) {
                    continue;
                }
                let rows = workloads::measure(workload, system, &prepared[at], &settings)
                    .with_context(|| format!("{workload:?} on {}", system.name()))?;
                for (label, m) in rows {
                    results
                        .entry((workload, label))
                        .or_default()
                        .entry(at)
                        .or_default()
                        .0
                        .push(m);
                }
            }
        }
        eprintln!(
            "compare: round {} of {rounds} done ({:.0?})",
            round + 1,
            started.elapsed()
        );
    }
    for p in prepared {
        if let Some(store) = p.w4 {
            store.close()?;
        }
    }
    let medians: Vec<Row> = results
        .iter()
        .map(|((workload, label), by_system)| Row {
            workload: *workload,
            label: label.clone(),
            systems: by_system
                .iter()
                .map(|(at, r)| (systems[*at], r.medians()))
                .collect(),
        })
        .collect();
    if cli.json {
        for row in &medians {
            for (system, m) in &row.systems {
                println!("{}", json(row, *system, m));
            }
        }
    } else {
        for row in &medians {
            println!("{}", row_table(row));
        }
        println!("{}", summary_table(&medians, &systems));
        println!("{}", targets_table(&medians));
        println!(
            "{rounds} rounds of {} ms, medians; {:.0?} in all",
            span.as_millis(),
            started.elapsed()
        );
    }
    Ok(())
}

/// One row of results: a workload (W6 has one per event count) and each
/// system's medians.
struct Row {
    workload: Workload,
    label: String,
    systems: Vec<(System, Measured)>,
}

impl Row {
    fn of(&self, system: System) -> Option<&Measured> {
        self.systems
            .iter()
            .find_map(|(s, m)| (*s == system).then_some(m))
    }

    /// The figure rows are compared by, and whether more is better.
    fn headline(&self, m: &Measured) -> Option<f64> {
        match self.workload {
            Workload::W5 => m.p50_us,
            Workload::W6 => m.open_ms,
            _ => m.ops_per_sec,
        }
    }

    fn higher_is_better(&self) -> bool {
        !matches!(self.workload, Workload::W5 | Workload::W6)
    }

    /// How many times better waymark's headline is than `system`'s.
    fn ratio(&self, system: System) -> Option<f64> {
        let ours = self.headline(self.of(System::Waymark)?)?;
        let theirs = self.headline(self.of(system)?)?;
        Some(if self.higher_is_better() {
            ours / theirs
        } else {
            theirs / ours
        })
    }
}

fn json(row: &Row, system: System, m: &Measured) -> serde_json::Value {
    let mut o = serde_json::json!({
        "workload": row.label,
        "system": system.name(),
        "ops_per_sec": m.ops_per_sec,
        "p50_us": m.p50_us,
        "p99_us": m.p99_us,
    });
    let extra = [
        ("bytes_per_op", m.bytes_per_op),
        ("open_ms", m.open_ms),
        ("peak_rss_mib", m.peak_rss_mib),
        ("live_mib", m.live_mib),
        ("gb_per_sec", m.gb_per_sec),
    ];
    for (name, value) in extra {
        if let Some(v) = value {
            o[name] = serde_json::json!(v);
        }
    }
    o
}

/// `1,234,567`, `12.3 k`-free: whole numbers with thousands separators
/// above 100, two decimals below.
fn num(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "—".to_owned();
    };
    if v.abs() < 100.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!("{r:.2}×"))
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t
}

/// The figures of one measurement, in the per-row table's column order.
fn figures(m: &Measured) -> [Option<f64>; 8] {
    [
        m.ops_per_sec,
        m.p50_us,
        m.p99_us,
        m.bytes_per_op,
        m.open_ms,
        m.peak_rss_mib,
        m.live_mib,
        m.gb_per_sec,
    ]
}

/// One row's table: every system's figures (the columns some system
/// filled) and waymark's ratio to it.
fn row_table(row: &Row) -> String {
    const COLUMNS: [&str; 8] = [
        "ops/s",
        "p50 µs",
        "p99 µs",
        "bytes/op",
        "open ms",
        "peak RSS MiB",
        "live MiB",
        "GB/s",
    ];
    let filled: Vec<usize> = (0..COLUMNS.len())
        .filter(|&c| row.systems.iter().any(|(_, m)| figures(m)[c].is_some()))
        .collect();
    let mut t = table();
    let mut header = vec!["system"];
    header.extend(filled.iter().map(|&c| COLUMNS[c]));
    header.push(match row.workload {
        Workload::W5 => "waymark faster (p50)",
        Workload::W6 => "waymark faster (open)",
        _ => "waymark's rate ×",
    });
    t.set_header(header);
    for (system, m) in &row.systems {
        let mut cells = vec![Cell::new(system.name())];
        let f = figures(m);
        cells.extend(
            filled
                .iter()
                .map(|&c| Cell::new(num(f[c])).set_alignment(CellAlignment::Right)),
        );
        let ratio = if system.is_waymark() {
            String::new()
        } else {
            ratio_cell(row.ratio(*system))
        };
        cells.push(Cell::new(ratio).set_alignment(CellAlignment::Right));
        t.add_row(cells);
    }
    format!("{} — {}\n{t}", row.label, row.workload.title())
}

/// The issue's table: each row's headline per system, and waymark against
/// the best peer (the floor is not a peer).
fn summary_table(rows: &[Row], systems: &[System]) -> String {
    let mut t = table();
    let mut header = vec!["workload".to_owned()];
    header.extend(systems.iter().map(|s| s.name().to_owned()));
    header.push("waymark vs best peer".to_owned());
    t.set_header(header);
    for row in rows {
        let unit = match row.workload {
            Workload::W4 => "gets/s",
            Workload::W5 => "p50 µs",
            Workload::W6 => "open ms",
            Workload::W7 => "events/s",
            _ => "sets/s",
        };
        let mut cells = vec![Cell::new(format!("{} ({unit})", row.label))];
        for s in systems {
            cells.push(
                Cell::new(num(row.of(*s).and_then(|m| row.headline(m))))
                    .set_alignment(CellAlignment::Right),
            );
        }
        let best = row
            .systems
            .iter()
            .filter(|(s, _)| !s.is_waymark() && *s != System::Floor)
            .filter_map(|(s, _)| Some((*s, row.ratio(*s)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        cells.push(Cell::new(best.map_or_else(String::new, |(s, r)| {
            format!("{r:.2}× {}", s.name())
        })));
        t.add_row(cells);
    }
    format!("Summary (medians)\n{t}")
}

/// The targets of issue 16, each with the figure measured and whether it
/// holds.
fn targets_table(rows: &[Row]) -> String {
    let find = |label: &str| rows.iter().find(|r| r.label == label);
    let mut t = table();
    t.set_header(vec!["target", "measured", "holds"]);
    let mut add = |what: String, measured: Option<f64>, holds: Option<bool>, unit: &str| {
        t.add_row(vec![
            what,
            measured.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}{unit}")),
            match holds {
                Some(true) => "yes".to_owned(),
                Some(false) => "MISSED".to_owned(),
                None => "not run".to_owned(),
            },
        ]);
    };
    let ratio_targets: [(&str, System, f64); 14] = [
        ("W1", System::Floor, 0.9),
        ("W1", System::Sqlite, 1.3),
        ("W1", System::Redb, 1.5),
        ("W1", System::Rocksdb, 1.5),
        ("W1", System::Fjall, 1.1),
        ("W2", System::Rocksdb, 2.0),
        ("W2", System::Sqlite, 10.0),
        ("W2", System::Redb, 10.0),
        ("W2", System::Fjall, 5.0),
        ("W3", System::Sqlite, 2.0),
        ("W3", System::Fjall, 1.2),
        ("W3", System::Rocksdb, 1.2),
        ("W4", System::Sqlite, 2.0),
        ("W4", System::Fjall, 1.2),
    ];
    for (label, peer, min) in ratio_targets {
        let r = find(label).and_then(|row| row.ratio(peer));
        add(
            format!("{label} ≥ {min}× {}", peer.name()),
            r,
            r.map(|r| r >= min),
            "×",
        );
    }
    let p50 = |label: &str| {
        find(label)
            .and_then(|r| r.of(System::Waymark))
            .and_then(|m| m.p50_us)
    };
    let w5 = p50("W5").zip(p50("W1")).map(|(c, s)| c / s);
    add(
        "W5 p50 ≤ 1.2× W1's p50".to_owned(),
        w5,
        w5.map(|r| r <= 1.2),
        "×",
    );
    let w6 = |label: &str| {
        find(label)
            .and_then(|r| r.of(System::Waymark))
            .and_then(|m| m.open_ms.zip(m.peak_rss_mib.zip(m.live_mib)))
    };
    let big = w6("W6/1e6");
    add(
        "W6 open < 50 ms at 1e6 events".to_owned(),
        big.map(|b| b.0),
        big.map(|b| b.0 < 50.0),
        " ms",
    );
    let flat = big.zip(w6("W6/1e5")).map(|(b, s)| b.0 / s.0);
    add(
        "W6 open at 1e6 / at 1e5 (flat: ≤ 1.5)".to_owned(),
        flat,
        flat.map(|f| f <= 1.5),
        "×",
    );
    let rss = big.map(|b| b.1.0 / b.1.1);
    add(
        "W6 peak RSS < 2× live state at 1e6".to_owned(),
        rss,
        rss.map(|r| r < 2.0),
        "×",
    );
    let gb = find("W7")
        .and_then(|r| r.of(System::Waymark))
        .and_then(|m| m.gb_per_sec);
    add("W7 ≥ 3 GB/s".to_owned(), gb, gb.map(|g| g >= 3.0), " GB/s");
    let w8 = find("W8").and_then(|r| r.of(System::Waymark).zip(r.of(System::WaymarkZstd)));
    let fewer = w8.and_then(|(plain, zstd)| Some(plain.bytes_per_op? / zstd.bytes_per_op?));
    add(
        "W8 with compression: ≥ 3× fewer bytes per set".to_owned(),
        fewer,
        fewer.map(|r| r >= 3.0),
        "×",
    );
    let speed = w8.and_then(|(plain, zstd)| Some(zstd.ops_per_sec? / plain.ops_per_sec?));
    add(
        "W8 with compression: ≥ 0.8× the sets/s without".to_owned(),
        speed,
        speed.map(|r| r >= 0.8),
        "×",
    );
    format!("Targets (issue 16)\n{t}")
}

//! The `compare` binary end to end, at a tiny size: every workload on every
//! system gives its row of JSON, and the stores hold what the workloads
//! wrote (W4 and W7 check their reads and replays themselves, and fail the
//! run otherwise).

use std::process::Command;

use serde_json::Value;

#[test]
fn every_workload_runs_on_every_system_and_reports_json() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--json", "--rounds", "2", "--span-ms", "20"])
        .args(["--w6-events", "1000,3000", "--w7-events", "3000"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("compare runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {stderr}");
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let systems = [
        "floor",
        "sqlite",
        "redb",
        "fjall",
        "rocksdb",
        "waymark",
        "waymark-zstd",
    ];
    let workloads = [
        "W1", "W2", "W3", "W4", "W5", "W5/set", "W5/idle", "W6/1e3", "W6/3000", "W7", "W8",
    ];
    for w in workloads {
        for s in systems {
            let no_reads = s == "floor" && (w == "W4" || w.starts_with("W6"));
            let w8_only = s == "waymark-zstd" && w != "W8";
            let row = rows.iter().find(|r| r["workload"] == w && r["system"] == s);
            assert_eq!(row.is_none(), no_reads || w8_only, "{w} on {s}: {row:?}");
            let Some(row) = row else { continue };
            if w.starts_with("W6") {
                assert!(row["open_ms"].as_f64().is_some_and(|v| v > 0.0), "{row}");
                assert!(
                    row["peak_rss_mib"].as_f64().is_some_and(|v| v > 0.0),
                    "{row}"
                );
            } else {
                assert!(
                    row["ops_per_sec"].as_f64().is_some_and(|v| v > 0.0),
                    "{row}"
                );
            }
            if w != "W7" && !w.starts_with("W6") {
                let (p50, p99) = (row["p50_us"].as_f64(), row["p99_us"].as_f64());
                assert!(p50.is_some() && p50 <= p99, "{row}");
            }
            if (w == "W3" || w == "W8") && s != "floor" {
                assert!(
                    row["bytes_per_op"].as_f64().is_some_and(|v| v > 0.0),
                    "{row}"
                );
            }
            if w == "W7" {
                assert!(row["gb_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{row}");
            }
        }
    }
    // The floor runs neither W4 nor W6; waymark-zstd runs W8 alone.
    assert_eq!(rows.len(), workloads.len() * (systems.len() - 1) - 3 + 1);
    // Compression stores W8's JSON in fewer bytes.
    let bytes = |s: &str| {
        rows.iter()
            .find(|r| r["workload"] == "W8" && r["system"] == s)
            .and_then(|r| r["bytes_per_op"].as_f64())
            .expect("W8 reports bytes per set")
    };
    assert!(
        bytes("waymark-zstd") * 2.0 < bytes("waymark"),
        "{} bytes per set compressed, {} without",
        bytes("waymark-zstd"),
        bytes("waymark")
    );
}

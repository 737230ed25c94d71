//! What an in-memory kernel costs in resident memory: a user's test suite
//! opens hundreds of them, so each must be small.
//!
//! Opens `WAYMARK_RSS_KERNELS` (default 20) kernels with
//! `Kernel::in_memory()`, writes one key into each, holds them all open,
//! and prints the process's resident set growth per kernel (from
//! `/proc/self/status`). Run:
//! `cargo bench -p waymark-benches --bench in_memory_rss`.

use waymark_benches::env_or;
use waymark_kernel::{Kernel, TaskRef};

/// The process's resident set, in KiB (`VmRSS`), or 0 where there is no
/// `/proc`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let kernels = usize::try_from(env_or("WAYMARK_RSS_KERNELS", 20)).expect("a count that fits");
    let ti = TaskRef::new("acme", "documents", "run-42", "ocr", 1).expect("a valid ref");
    let before = rss_kib();
    let mut open = Vec::with_capacity(kernels);
    for _ in 0..kernels {
        let kernel = Kernel::in_memory().expect("an in-memory kernel");
        kernel
            .context(ti.clone())
            .set("pages", b"12")
            .expect("a write");
        open.push(kernel);
    }
    let after = rss_kib();
    let per_kernel_kib = after.saturating_sub(before) as f64 / kernels as f64;
    println!(
        "in_memory_rss: {kernels} kernels with one key each: RSS {:.1} MiB -> {:.1} MiB, {:.2} MiB per kernel",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_kernel_kib / 1024.0
    );
    drop(open);
}

//! `torture`: the crash torture as a soak. Round after round it takes the
//! next scenario of `waymark_tests::torture` on the next disk seed, crashes
//! a sample of its storage operations with every damage (and some of each
//! image's recovery), and checks every image, printing the images a second
//! as it goes; the first failure prints its case (seed, crash point,
//! damage: `WAYMARK_CRASH_CASE` replays it in the scenario's test) and
//! exits 1. Runs until interrupted, or `--images N`.
//!
//! `cargo run --release -p waymark-tests --bin torture -- --seed 7 --threads 4`

use std::time::{Duration, Instant};

use clap::Parser;
use waymark_tests::torture::ALL;

/// The crash torture as a soak: every scenario in turn, on seed after seed.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Stop after this many crash images (default: until interrupted).
    #[arg(long)]
    images: Option<u64>,
    /// The first disk seed (each round takes the next).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads of the scenarios that run several (group commit, the
    /// random lifecycle calls).
    #[arg(long, default_value_t = 3)]
    threads: usize,
    /// Crash images a round (a seeded sample of the scenario's crash
    /// points × damages).
    #[arg(long, default_value_t = 300)]
    per_round: u64,
    /// Recovery crashes of each image.
    #[arg(long, default_value_t = 1)]
    recovery: u64,
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let (mut images, mut recovery_images, mut with_acks) = (0u64, 0u64, 0u64);
    let mut last_print = Instant::now();
    let mut rounds = 0u64;
    let mut seed = args.seed;
    for round in 0u64.. {
        if args.images.is_some_and(|n| images >= n) {
            break;
        }
        let scenario = ALL[(round % ALL.len() as u64) as usize];
        seed = args.seed.wrapping_add(round);
        rounds = round + 1;
        let test = scenario
            .crash_test(seed, args.threads)
            .budget(args.per_round)
            .crash_recovery(args.recovery);
        let report = match test.try_run(scenario.check) {
            Ok(report) => report,
            Err(failure) => {
                eprintln!(
                    "torture: {} failed after {images} images: {failure}",
                    scenario.name
                );
                std::process::exit(1);
            }
        };
        images += report.images;
        recovery_images += report.recovery_images;
        with_acks += report.crashed_with_acks;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            print_totals(started, rounds, seed, images, recovery_images, with_acks);
        }
    }
    print_totals(started, rounds, seed, images, recovery_images, with_acks);
}

fn print_totals(
    started: Instant,
    rounds: u64,
    seed: u64,
    images: u64,
    recovery: u64,
    with_acks: u64,
) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "torture: {secs:.0} s, {rounds} rounds (last seed {seed}), {images} crash images ({with_acks} after an acknowledged write) and {recovery} recovery crashes: {:.0} images/s",
        (images + recovery) as f64 / secs.max(1e-9)
    );
}

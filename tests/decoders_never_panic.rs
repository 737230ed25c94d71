//! Guards "bad bytes on disk give a typed error, never a panic" in every CI
//! run, without cargo-fuzz: the fuzz targets' entry points run over random
//! bytes and over valid logs with random bytes flipped, cut or appended.
//! `WAYMARK_PROPTEST_CASES` raises the number of cases.

use proptest::prelude::*;
use waymark_tests::proptest_cases;

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn frame_decoder(data in proptest::collection::vec(any::<u8>(), 0..600), seed in any::<u32>()) {
        waymark_engine::__fuzz::frame(&data, seed);
    }

    #[test]
    fn header_decoder(data in proptest::collection::vec(any::<u8>(), 0..100)) {
        waymark_engine::__fuzz::segment_header(&data);
    }

    #[test]
    fn view_record_decoder(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        waymark_engine::__fuzz::view_record(&data);
    }

    #[test]
    fn batch_decoder(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        waymark_engine::__fuzz::batch(&data);
    }

    #[test]
    fn view_key_decoder(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        waymark_engine::__fuzz::view_key(&data);
    }

    #[test]
    fn engine_operations_with_faults_and_crashes_against_a_model(
        data in proptest::collection::vec(any::<u8>(), 0..240),
    ) {
        waymark_engine::__fuzz::engine_ops(&data);
    }

    #[test]
    fn recovery_over_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        waymark_engine::__fuzz::recovery(&data);
    }

    #[test]
    fn recovery_over_damaged_valid_logs(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        // Valid frames, then damage: the interesting inputs for recovery.
        let mut data = valid_log(seed);
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] ^= byte;
        }
        data.truncate(cut.index(data.len() + 1));
        waymark_engine::__fuzz::recovery(&data);
    }
}

/// Five batches as frames sealed for the recovery entry point's log, all
/// in one segment (the leading 0).
fn valid_log(seed: u64) -> Vec<u8> {
    let batches: Vec<_> = (0..5).map(|i| waymark_tests::batch(seed, 0, i)).collect();
    let mut data = vec![0];
    data.extend(waymark_engine::__fuzz::sealed_frames(&batches));
    data
}

/// The damaged logs above start from a log that recovers whole: without
/// that, every case would only test a bad first frame.
#[test]
fn the_undamaged_log_recovers_whole() {
    for seed in 0..4 {
        assert_eq!(
            waymark_engine::__fuzz::recovery(&valid_log(seed)),
            Some(waymark_engine::Lsn(5))
        );
    }
}

/// A state directory on real files with a snapshotted `views.redb` (and
/// its log), built once: the damaged-views cases below start from it.
fn snapshotted_state() -> &'static (tempfile::TempDir, Vec<u8>) {
    static STATE: std::sync::OnceLock<(tempfile::TempDir, Vec<u8>)> = std::sync::OnceLock::new();
    STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine = waymark_engine::Engine::open(dir.path()).unwrap();
        for i in 0..40 {
            engine.append(waymark_tests::batch(3, i % 3, i)).unwrap();
        }
        engine.snapshot().unwrap();
        engine.close().unwrap();
        let views = std::fs::read(dir.path().join("views.redb")).unwrap();
        (dir, views)
    })
}

/// Copies the snapshotted state to a new directory with `views` as its
/// views file.
fn state_with_views(views: &[u8]) -> tempfile::TempDir {
    let (source, _) = snapshotted_state();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("log")).unwrap();
    for entry in std::fs::read_dir(source.path().join("log")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join("log").join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("views.redb"), views).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(16), ..ProptestConfig::default() })]

    /// A damaged `views.redb` (redb's own pages, our meta and records):
    /// the tools' readers and the engine's open give a typed error, or
    /// open (rebuilding the views from the log if they must), never panic.
    #[test]
    fn damaged_views_files(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::weighted(0.2, any::<prop::sample::Index>()),
    ) {
        let (_, views) = snapshotted_state();
        let mut views = views.clone();
        for (at, byte) in flips {
            let i = at.index(views.len());
            views[i] ^= byte;
        }
        if let Some(cut) = cut {
            views.truncate(cut.index(views.len() + 1));
        }
        let dir = state_with_views(&views);
        let _ = waymark_engine::inspect::views_meta(dir.path());
        let _ = waymark_engine::inspect::view_tables(dir.path().join("views.redb"));
        if let Ok(engine) = waymark_engine::Engine::open(dir.path()) {
            let run = waymark_engine::RunScope {
                tenant: "t".into(),
                dag: "d".into(),
                run: "r".into(),
            };
            let _ = engine.views().shared_entries(&run);
            let _ = engine.views().runs("t", None);
        }
    }
}

/// Runs one fuzz target's entry point on `data`, as its `fuzz_target!` does.
fn run_target(target: &str, data: &[u8]) {
    match target {
        "frame" => {
            let seed = data
                .get(..4)
                .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            waymark_engine::__fuzz::frame(data, seed);
        }
        "segment_header" => waymark_engine::__fuzz::segment_header(data),
        "batch" => waymark_engine::__fuzz::batch(data),
        "recovery" => {
            waymark_engine::__fuzz::recovery(data);
        }
        "view_record" => waymark_engine::__fuzz::view_record(data),
        "view_key" => waymark_engine::__fuzz::view_key(data),
        "engine_ops" => waymark_engine::__fuzz::engine_ops(data),
        other => panic!("fuzz/Cargo.toml names a target {other} this test does not know"),
    }
}

/// The committed seed corpus: every target in `fuzz/Cargo.toml` has seeds
/// in `fuzz/corpus/<target>/`, at least the ones `seed_corpus` makes, and
/// every committed file (seeds and what fuzzing added) runs through its
/// entry point without a panic. `WAYMARK_WRITE_FUZZ_CORPUS=1` writes the
/// seeds (after a format change).
#[test]
fn the_seed_corpus_covers_every_target_and_runs() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "waymark-fuzz")
        .collect();
    assert_eq!(targets.len(), 7, "the seven fuzz targets: {targets:?}");
    let seeds = waymark_engine::__fuzz::seed_corpus();
    let write = std::env::var_os("WAYMARK_WRITE_FUZZ_CORPUS").is_some();
    for target in &targets {
        let (_, inputs) = seeds
            .iter()
            .find(|(name, _)| name == target)
            .unwrap_or_else(|| panic!("seed_corpus has no seeds for {target}"));
        let dir = fuzz.join("corpus").join(target);
        if write {
            std::fs::create_dir_all(&dir).expect("create the corpus directory");
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), input).expect("write a seed");
            }
        }
        for (i, input) in inputs.iter().enumerate() {
            let committed = std::fs::read(dir.join(format!("seed-{i}")))
                .unwrap_or_else(|e| panic!("fuzz/corpus/{target}/seed-{i}: {e}"));
            assert_eq!(
                &committed, input,
                "fuzz/corpus/{target}/seed-{i} is stale: rerun with WAYMARK_WRITE_FUZZ_CORPUS=1"
            );
        }
        for entry in std::fs::read_dir(&dir).expect("read the corpus directory") {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("read a corpus file");
            run_target(target, &data);
        }
    }
    // The recovery seed is a log that recovers whole, not a first bad frame.
    let (_, recovery) = seeds.iter().find(|(n, _)| *n == "recovery").expect("seeds");
    assert_eq!(
        waymark_engine::__fuzz::recovery(&recovery[0]),
        Some(waymark_engine::Lsn(3))
    );
}

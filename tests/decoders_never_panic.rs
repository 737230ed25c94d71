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

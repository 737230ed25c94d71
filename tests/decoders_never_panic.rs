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
        let mut data = valid_frames(seed);
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] ^= byte;
        }
        data.truncate(cut.index(data.len() + 1));
        waymark_engine::__fuzz::recovery(&data);
    }
}

/// The frames of a small valid log (log id 7, as the recovery entry point
/// writes its headers), without the segment header.
fn valid_frames(seed: u64) -> Vec<u8> {
    use std::sync::Arc;
    use waymark_engine::storage::{OpenMode, SimDisk, Storage};
    let disk = SimDisk::new(seed);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let options = waymark_engine::Options {
        preallocate: false,
        ..Default::default()
    };
    let engine = waymark_engine::Engine::open_with(Arc::clone(&storage), "/s", options).unwrap();
    for i in 0..5 {
        engine.append(waymark_tests::batch(seed, 0, i)).unwrap();
    }
    drop(engine);
    let path = std::path::Path::new("/s/log/00000000000000000001.seg");
    let f = storage.open(path, OpenMode::Read).unwrap();
    let mut buf = vec![0u8; f.len().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf.split_off(64)
}

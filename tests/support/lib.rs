//! Shared helpers for the integration tests: deterministic batches whose
//! content names who wrote them, and the proptest case count.

pub mod model;

use waymark_engine::{Event, EventBody, RunScope};

/// How many cases a property runs: `WAYMARK_PROPTEST_CASES`, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("WAYMARK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The batch that writer `writer` appends as its `index`-th: 1 to 4 events
/// whose keys name writer, index and position, with values of sizes drawn
/// from `seed`. The same arguments always give the same batch.
pub fn batch(seed: u64, writer: u32, index: u32) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(writer) << 32) ^ u64::from(index));
    let events = rng.usize(1..=4);
    (0..events)
        .map(|j| {
            let len = if rng.u8(..) < 20 {
                rng.usize(500..3000)
            } else {
                rng.usize(0..200)
            };
            Event {
                ts_micros: i64::from(index),
                body: EventBody::SharedPut {
                    run: RunScope {
                        tenant: format!("w{writer}"),
                        dag: "crash".into(),
                        run: "r".into(),
                    },
                    key: format!("w{writer}/b{index}/e{j}"),
                    value: (0..len).map(|_| rng.u8(..)).collect(),
                    immutable: false,
                },
            }
        })
        .collect()
}

/// Who wrote a batch made by [`batch`]: (writer, index), read from its first
/// key.
pub fn batch_origin(events: &[Event]) -> Option<(u32, u32)> {
    let EventBody::SharedPut { key, .. } = &events.first()?.body else {
        return None;
    };
    let mut parts = key.split('/');
    let writer = parts.next()?.strip_prefix('w')?.parse().ok()?;
    let index = parts.next()?.strip_prefix('b')?.parse().ok()?;
    Some((writer, index))
}

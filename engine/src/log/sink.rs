//! What the writer hands durable groups to.
//!
//! The log knows nothing of what it feeds: the writer makes each group
//! durable, then gives its batches to a [`Sink`] in LSN order, one applier
//! at a time, and acknowledges the callers once the sink has published
//! them. The engine implements the sink over the views and wires the
//! snapshotter behind it (`crate::view::feed`); tests give the writer a
//! failing or counting sink instead.

use crate::condition::{Condition, Found};
use crate::error::Result;
use crate::event::Event;

use super::Lsn;

/// The receiver of durable batches. Calls come from one applier at a time
/// (the acker thread, or the writer for a lone batch while the acker is
/// idle), in LSN order, except [`Sink::check`], [`Sink::admits`] and
/// [`Sink::make_room`], which the writer calls between groups once
/// everything it handed on is applied or while it knows which batches are
/// not yet.
pub(crate) trait Sink: Send + Sync + std::fmt::Debug {
    /// Applies the batch `lsn`, which is durable in the mode asked for. It
    /// is not visible until [`Sink::publish`]. An error poisons the engine:
    /// the sink then misses this batch, and nothing later is given to it.
    fn apply(&self, lsn: Lsn, events: &[Event]) -> Result<()>;

    /// Makes every batch up to `lsn` visible to readers; a caller's ack
    /// comes after this.
    fn publish(&self, lsn: Lsn);

    /// The highest LSN published.
    fn visible_lsn(&self) -> Lsn;

    /// Called after each group is applied and published. `freeze` says the
    /// group held a freeze request (its sync made everything applied
    /// durable): the sink freezes what it holds for a snapshot. Otherwise
    /// it may start work of its own (wake its snapshotter).
    fn after_group(&self, freeze: bool);

    /// Checks a batch's condition against everything published: `Some`
    /// when it does not hold, with what was found.
    fn check(&self, condition: &Condition) -> Result<Option<Found>>;

    /// Whether the next group may be written without making room first
    /// (the memory bound). Asked before every group: keep it cheap.
    fn admits(&self) -> bool;

    /// Makes room for the next group, waiting as long as that takes. The
    /// writer calls it only once everything it wrote is durable and
    /// applied, so the sink may freeze what it holds. An error (room
    /// cannot be made) is returned to the callers of the next group.
    fn make_room(&self) -> Result<()>;
}

/// Sinks for tests: faults where the apply path used to hold hooks.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{Lsn, Sink};
    use crate::condition::{Condition, Found};
    use crate::error::{Error, Result};
    use crate::event::Event;

    /// Fault: the applying thread panics, before anything is applied.
    pub(crate) const PANICS: u64 = 1;
    /// Fault: applying takes 500 ms, then fails.
    pub(crate) const FAILS_SLOWLY: u64 = 2;
    /// Fault: applying fails at once, before anything is applied.
    pub(crate) const FAILS: u64 = 3;

    /// A sink around another whose next `apply` (on the thread named
    /// `thread`, or on any thread) faults as armed; once only.
    #[derive(Debug)]
    pub(crate) struct Faulty {
        pub inner: Arc<dyn Sink>,
        pub thread: Option<&'static str>,
        fault: AtomicU64,
    }

    impl Faulty {
        pub(crate) fn new(inner: Arc<dyn Sink>, thread: Option<&'static str>) -> Faulty {
            Faulty {
                inner,
                thread,
                fault: AtomicU64::new(0),
            }
        }

        /// Arms [`PANICS`], [`FAILS_SLOWLY`] or [`FAILS`] for the next apply.
        pub(crate) fn arm(&self, fault: u64) {
            self.fault.store(fault, Ordering::Release);
        }

        /// Whether the armed fault has not fired yet.
        pub(crate) fn armed(&self) -> bool {
            self.fault.load(Ordering::Acquire) != 0
        }
    }

    impl Sink for Faulty {
        fn apply(&self, lsn: Lsn, events: &[Event]) -> Result<()> {
            let here = std::thread::current();
            if self.thread.is_none_or(|name| here.name() == Some(name)) {
                match self.fault.swap(0, Ordering::AcqRel) {
                    PANICS => panic!("injected: the applying thread panics"),
                    fault @ (FAILS_SLOWLY | FAILS) => {
                        if fault == FAILS_SLOWLY {
                            std::thread::sleep(std::time::Duration::from_millis(500));
                        }
                        return Err(Error::Io {
                            path: "injected".into(),
                            source: std::io::Error::other("injected: applying a group failed"),
                        });
                    }
                    _ => {}
                }
            }
            self.inner.apply(lsn, events)
        }
        fn publish(&self, lsn: Lsn) {
            self.inner.publish(lsn);
        }
        fn visible_lsn(&self) -> Lsn {
            self.inner.visible_lsn()
        }
        fn after_group(&self, freeze: bool) {
            self.inner.after_group(freeze);
        }
        fn check(&self, condition: &Condition) -> Result<Option<Found>> {
            self.inner.check(condition)
        }
        fn admits(&self) -> bool {
            self.inner.admits()
        }
        fn make_room(&self) -> Result<()> {
            self.inner.make_room()
        }
    }
}

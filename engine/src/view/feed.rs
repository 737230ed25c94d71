//! The engine's [`Sink`]: durable groups from the writer feed the views,
//! and the snapshotter is woken (or the memory bound held) from here, so
//! the log needs to know nothing of either.

use std::sync::Arc;

use crossbeam_channel::Sender;

use super::Views;
use super::snapshot::{Wake, crossed};
use crate::condition::{Condition, Found};
use crate::error::Result;
use crate::event::Event;
use crate::log::Lsn;
use crate::log::sink::Sink;
use crate::options::SnapshotOptions;

/// The views, and the snapshotter behind them.
#[derive(Debug)]
pub(crate) struct ViewFeed {
    views: Arc<Views>,
    /// Wakes the snapshotter when a threshold is crossed (`None`: snapshots
    /// are off, and the memtables are not bounded).
    wake: Option<Sender<Wake>>,
    options: SnapshotOptions,
}

impl ViewFeed {
    /// Feeds `views`; `wake` is the snapshotter's, when snapshots are on.
    pub(crate) fn new(
        views: Arc<Views>,
        wake: Option<Sender<Wake>>,
        options: SnapshotOptions,
    ) -> ViewFeed {
        ViewFeed {
            views,
            wake,
            options,
        }
    }
}

impl Sink for ViewFeed {
    fn apply(&self, lsn: Lsn, events: &[Event]) -> Result<()> {
        self.views.apply(lsn, events)
    }

    fn publish(&self, lsn: Lsn) {
        self.views.publish(lsn);
    }

    fn visible_lsn(&self) -> Lsn {
        self.views.visible_lsn()
    }

    fn after_group(&self, freeze: bool) {
        if freeze {
            self.views.freeze();
        } else if let Some(wake) = &self.wake
            && crossed(&self.views.levels().active, &self.options)
        {
            // Full: the snapshotter has a wake-up queued already.
            let _ = wake.try_send(Wake::Check);
        }
    }

    fn check(&self, condition: &Condition) -> Result<Option<Found>> {
        self.views.check(condition)
    }

    /// Within the memory bound and the replay bound (bytes and events the
    /// memtables hold, not yet in a snapshot).
    fn admits(&self) -> bool {
        // The acker may lag by a group or two, which the bounds can afford.
        self.wake.is_none()
            || self.views.below(
                self.options.memtable_bytes_max,
                self.options.memtable_events_max,
            )
    }

    /// Freezes the active memtable unless one is frozen already (the writer
    /// has synced, so it is durable, and applied everything, so it holds
    /// whole groups), wakes the snapshotter, and waits for it to write the
    /// frozen memtable.
    fn make_room(&self) -> Result<()> {
        let Some(wake) = &self.wake else {
            return Ok(());
        };
        if self.views.levels().frozen.is_none() {
            self.views.freeze();
        }
        let _ = wake.try_send(Wake::Check);
        self.views.wait_below(
            self.options.memtable_bytes_max,
            self.options.memtable_events_max,
        )
    }
}

//! Watch: durable events as they happen, over a crossbeam channel.
//!
//! A watcher thread tails the log (it reads it like any reader; writers
//! never wait for it) and sends each durable event that matches the filter
//! into a bounded channel. If the subscriber falls behind and the channel is
//! full, the watcher does not block: it drops events and, once there is
//! room, sends [`Watched::Lagged`] with the first LSN the subscriber
//! missed; the subscriber catches up from the log with the history API
//! (everything is still there, unless retention removed it: the history
//! read then fails with [`crate::Error::HistoryRemoved`]) and keeps
//! receiving. A watch that cannot read the log from where it is (retention
//! removed it, or it is corrupt) sends [`Watched::Failed`] and stops.
//! Dropping the [`Watch`] stops the thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, TrySendError, bounded};
use waymark_engine::{Event, Lsn};

use crate::history::LoggedEvent;
use crate::kernel::Kernel;

/// Which events a watch delivers: all of a tenant, a run or a task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this DAG.
    pub dag_name: Option<String>,
    /// Only this run id.
    pub run_id: Option<String>,
    /// Only this task id.
    pub task_id: Option<String>,
}

impl WatchFilter {
    fn matches(&self, e: &Event) -> bool {
        let run = e.run();
        self.tenant.as_ref().is_none_or(|t| *t == run.tenant)
            && self.dag_name.as_ref().is_none_or(|d| *d == run.dag)
            && self.run_id.as_ref().is_none_or(|r| *r == run.run)
            && self.task_id.as_deref().is_none_or(|t| e.task() == Some(t))
    }
}

/// What a watch delivers.
#[derive(Clone, Debug)]
pub enum Watched {
    /// A durable event that matches the filter.
    Event(LoggedEvent),
    /// The channel was full: matching events from this LSN on were dropped
    /// until the one delivered next. Read them from the log's history.
    Lagged {
        /// The first LSN whose events were dropped.
        from: Lsn,
    },
    /// The log could not be read from the next LSN the watch needed: the
    /// watch has stopped, and this is its last message. Retention removed
    /// segments the watch had not read yet (a subscriber that fell that
    /// far behind), or the log is corrupt there.
    Failed {
        /// Why: the kernel's error ([`crate::Error::HistoryRemoved`], or
        /// the engine's corruption error, with its cause).
        error: Arc<crate::Error>,
    },
}

/// A subscription; receive from [`Watch::receiver`]. Dropping it stops the
/// watcher thread.
#[derive(Debug)]
pub struct Watch {
    rx: Receiver<Watched>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// The channel events arrive on.
    pub fn receiver(&self) -> &Receiver<Watched> {
        &self.rx
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often an idle watcher looks for new durable events.
const POLL: Duration = Duration::from_millis(2);
/// Reads of the log in a row that may fail before a watch stops.
const SCAN_TRIES: u32 = 3;

impl Kernel {
    /// Subscribes to durable events matching `filter` from `from` on (use
    /// the current end to see only new ones), buffering at most `capacity`
    /// undelivered events.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Spawn`] if the thread could not be started.
    pub fn watch(&self, filter: WatchFilter, from: Lsn, capacity: usize) -> crate::Result<Watch> {
        let (tx, rx) = bounded(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let kernel = self.clone();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("waymark-watch".into())
            .spawn(move || {
                let mut next = from;
                let mut lagged: Option<Lsn> = None;
                let mut failures = 0;
                while !stopped.load(Ordering::Acquire) {
                    // Tell a subscriber that fell behind as soon as it has
                    // room, even if nothing new comes.
                    if let Some(from) = lagged
                        && tx.try_send(Watched::Lagged { from }).is_ok()
                    {
                        lagged = None;
                    }
                    let before = next;
                    let scanned = kernel.backend().scan_log(next, &mut |lsn, events| {
                        for event in events {
                            if !filter.matches(&event) {
                                continue;
                            }
                            if let Some(from) = lagged {
                                match tx.try_send(Watched::Lagged { from }) {
                                    Ok(()) => lagged = None,
                                    Err(TrySendError::Full(_)) => continue,
                                    Err(TrySendError::Disconnected(_)) => return false,
                                }
                            }
                            match tx.try_send(Watched::Event(LoggedEvent { lsn, event })) {
                                Ok(()) => {}
                                Err(TrySendError::Full(_)) => {
                                    lagged.get_or_insert(lsn);
                                }
                                Err(TrySendError::Disconnected(_)) => return false,
                            }
                        }
                        next = lsn.next();
                        !stopped.load(Ordering::Acquire)
                    });
                    // The log cannot be read from `next` (retention
                    // removed it, or it is corrupt). A segment removed
                    // between the cursor's listing and its open fails
                    // once, then reads as removed: look again a few times,
                    // then say why, once, and stop.
                    // A read that delivered something before it failed
                    // made progress: count failures in a row without any.
                    if next != before {
                        failures = 0;
                    }
                    match &scanned {
                        Err(_) if failures < SCAN_TRIES - 1 => {
                            failures += 1;
                            std::thread::sleep(POLL);
                            continue;
                        }
                        Err(_) => {}
                        Ok(()) => failures = 0,
                    }
                    if let Err(e) = scanned {
                        let mut failed = Watched::Failed { error: Arc::new(e) };
                        while !stopped.load(Ordering::Acquire) {
                            match tx.send_timeout(failed, POLL) {
                                Err(SendTimeoutError::Timeout(back)) => failed = back,
                                Ok(()) | Err(SendTimeoutError::Disconnected(_)) => break,
                            }
                        }
                        return;
                    }
                    // Nothing new: look again shortly.
                    if next == before {
                        std::thread::sleep(POLL);
                    }
                }
            })
            .map_err(crate::Error::Spawn)?;
        Ok(Watch {
            rx,
            stop,
            thread: Some(thread),
        })
    }
}

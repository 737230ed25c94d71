//! One-shot acknowledgements from the writer to the caller that waits for
//! them.
//!
//! Each append, flush, close and freeze waits for exactly one answer. A
//! crossbeam channel would do, but its blocking `recv` spins and then calls
//! `sched_yield` up to ten times before it parks: with 16 callers on this
//! machine's 2 cores, those yields became a storm of context switches
//! (1.16 M involuntary switches in a 9 s run of `append_sync/16`) that took
//! the CPU from the callers and the writer alike. Here the waiter parks on a
//! futex at once, unless it chose to poll first (see `Engine::append`), and
//! polling reads one atomic flag.
//!
//! A sender dropped without sending (the writer is gone) answers
//! [`Error::Closed`], as a disconnected channel did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Lsn;
use crate::error::{Error, Result};

/// What the slot holds.
enum State {
    /// Nothing sent yet.
    Empty,
    /// Sent and not yet received.
    Ready(Result<Lsn>),
    /// Received (or the receiver is gone); later sends are dropped.
    Taken,
}

struct Slot {
    state: Mutex<State>,
    /// Set once something was sent: a poller reads this, not the mutex.
    sent: AtomicBool,
    ready: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is one enum written whole: a panic elsewhere cannot
        // leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new acknowledgement: the writer keeps the sender, the caller waits on
/// the receiver.
pub(crate) fn ack_channel() -> (AckSender, AckReceiver) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Empty),
        sent: AtomicBool::new(false),
        ready: Condvar::new(),
    });
    (AckSender(Arc::clone(&slot)), AckReceiver(slot))
}

/// The writer's end of an acknowledgement.
pub(crate) struct AckSender(Arc<Slot>);

impl AckSender {
    /// Answers the waiting caller. Only the first answer counts.
    pub(crate) fn send(&self, result: Result<Lsn>) {
        let mut state = self.0.lock();
        if !matches!(*state, State::Empty) {
            return;
        }
        *state = State::Ready(result);
        self.0.sent.store(true, Ordering::Release);
        drop(state);
        self.0.ready.notify_one();
    }
}

impl Drop for AckSender {
    fn drop(&mut self) {
        // A no-op if an answer was sent; otherwise the writer is gone.
        self.send(Err(Error::Closed));
    }
}

/// The caller's end of an acknowledgement.
pub(crate) struct AckReceiver(Arc<Slot>);

impl AckReceiver {
    /// The answer, if it has come.
    pub(crate) fn try_recv(&self) -> Option<Result<Lsn>> {
        if !self.0.sent.load(Ordering::Acquire) {
            return None;
        }
        take(&mut self.0.lock())
    }

    /// Waits at most `timeout` for the answer.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Option<Result<Lsn>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.lock();
        loop {
            if let Some(result) = take(&mut state) {
                return Some(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .0
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn take(state: &mut State) -> Option<Result<Lsn>> {
    match std::mem::replace(state, State::Taken) {
        State::Ready(result) => Some(result),
        State::Empty => {
            *state = State::Empty;
            None
        }
        State::Taken => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_is_received_once() {
        let (tx, rx) = ack_channel();
        assert!(rx.try_recv().is_none());
        tx.send(Ok(Lsn(7)));
        tx.send(Ok(Lsn(8)));
        assert_eq!(rx.try_recv().unwrap().unwrap(), Lsn(7));
        assert!(rx.try_recv().is_none());
        assert!(rx.recv_timeout(Duration::from_millis(1)).is_none());
    }

    #[test]
    fn a_dropped_sender_answers_closed() {
        let (tx, rx) = ack_channel();
        drop(tx);
        assert!(matches!(rx.try_recv(), Some(Err(Error::Closed))));
    }

    #[test]
    fn a_waiter_on_another_thread_is_woken() {
        let (tx, rx) = ack_channel();
        let waiter = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        tx.send(Ok(Lsn(3)));
        assert_eq!(waiter.join().unwrap().unwrap().unwrap(), Lsn(3));
    }

    #[test]
    fn recv_timeout_returns_none_then_the_answer() {
        let (tx, rx) = ack_channel();
        assert!(rx.recv_timeout(Duration::from_millis(2)).is_none());
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(Ok(Lsn(1)));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
            Lsn(1)
        );
        sender.join().unwrap();
    }
}

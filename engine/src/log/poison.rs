//! The fail-stop poison: once a write, a sync or an apply fails, the engine
//! refuses every later write until it is reopened.
//!
//! It is a type of its own, apart from the writer's counters, so that
//! whatever must stop touching the log after a failure (retention, the
//! snapshotter) holds this and nothing else of the writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Set once, by the first failure; never cleared.
#[derive(Debug, Default)]
pub(crate) struct Poison {
    poisoned: AtomicBool,
    cause: Mutex<Option<Arc<Error>>>,
}

impl Poison {
    /// [`Error::Poisoned`] with the first failure as its source, once
    /// anything poisoned the engine.
    pub(crate) fn get(&self) -> Option<Error> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // The flag is set only after the cause is stored, under the lock.
        Some(Error::Poisoned {
            cause: cause.expect("the cause is stored before the flag is set"),
        })
    }

    /// Whether anything poisoned the engine.
    pub(crate) fn is_set(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// [`Poison::get`] where the caller knows the engine is poisoned (its
    /// own failure flag, set only after a poison, says so).
    pub(crate) fn error(&self) -> Error {
        self.get()
            .expect("a failure flag is set only after the engine is poisoned")
    }

    /// Poisons the engine with `cause`, unless an earlier failure did.
    pub(crate) fn set(&self, cause: &Arc<Error>) {
        let mut slot = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(
                cause = %cause,
                "the engine is poisoned (fail-stop): every later write is refused; reopen to recover"
            );
            *slot = Some(Arc::clone(cause));
        }
        self.poisoned.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(msg: &str) -> Arc<Error> {
        Arc::new(Error::Io {
            path: "x".into(),
            source: std::io::Error::other(msg.to_string()),
        })
    }

    #[test]
    fn the_first_cause_is_kept() {
        let poison = Poison::default();
        assert!(poison.get().is_none() && !poison.is_set());
        poison.set(&io("first"));
        poison.set(&io("second"));
        assert!(poison.is_set());
        let Some(Error::Poisoned { cause }) = poison.get() else {
            panic!("a set poison reads as Error::Poisoned");
        };
        assert!(cause.to_string().contains("first"), "{cause}");
    }
}

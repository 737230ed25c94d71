//! Conditional appends (`Engine::append_if`): each kind of condition reads
//! what it says, racing callers of one decision have exactly one winner,
//! and a refused batch is never written.

use std::sync::{Arc, Barrier};

use super::*;
use crate::condition::{Found, TaskStatusKind};
use crate::event::{AttemptScope, EventBody, RunScope, RunStatus, TaskScope, TaskStatus};
use crate::storage::{FsStorage, SimDisk};

fn run() -> RunScope {
    RunScope {
        tenant: "acme".into(),
        dag: "docs".into(),
        run: "r1".into(),
    }
}

fn task(name: &str) -> TaskScope {
    TaskScope {
        run: run(),
        task: name.into(),
    }
}

fn attempt(name: &str, try_number: u32) -> AttemptScope {
    AttemptScope {
        task: task(name),
        try_number,
    }
}

fn status(a: &AttemptScope, status: TaskStatus) -> Event {
    Event::now(EventBody::TaskStatus {
        attempt: a.clone(),
        status,
        worker: "w".into(),
    })
}

fn engine(seed: u64) -> Engine {
    Engine::open_with(Arc::new(SimDisk::new(seed)), "/state", Options::default()).unwrap()
}

fn is(a: &AttemptScope, kind: Option<TaskStatusKind>) -> Condition {
    Condition::AttemptStatus {
        attempt: a.clone(),
        any_of: vec![kind],
    }
}

/// The batches of the log, in LSN order.
fn log_of(engine: &Engine) -> Vec<Vec<Event>> {
    let mut cursor = engine.reader().cursor(Lsn(1));
    let mut out = Vec::new();
    while let Some(frame) = cursor.next_frame().unwrap() {
        out.push(frame.decode().unwrap());
    }
    out
}

/// Eight threads succeed one running attempt at once: one wins, seven are
/// told it had succeeded already, and the log holds one success.
#[test]
fn racing_finishes_of_one_attempt_have_one_winner() {
    let engine = engine(1);
    let a = attempt("ocr", 1);
    engine
        .append_if(vec![is(&a, None)], vec![status(&a, TaskStatus::Running)])
        .unwrap();
    let barrier = Barrier::new(8);
    let results: Vec<Result<Lsn>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (engine, a, barrier) = (&engine, &a, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    engine.append_if(
                        vec![is(a, Some(TaskStatusKind::Running))],
                        vec![status(a, TaskStatus::Succeeded { result: vec![i] })],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(
                r,
                Err(Error::Conflict {
                    index: 0,
                    found: Found::AttemptStatus(Some(TaskStatusKind::Succeeded)),
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let successes = log_of(&engine)
        .iter()
        .flatten()
        .filter(|e| {
            matches!(
                &e.body,
                EventBody::TaskStatus {
                    status: TaskStatus::Succeeded { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(successes, 1);
    assert_eq!(engine.stats().conflicts, 7);
}

/// Two first writes of an immutable shared variable, raced: one value, one
/// conflict, and the value is the winner's.
#[test]
fn racing_first_writes_of_an_immutable_variable_leave_one_value() {
    let engine = engine(2);
    let barrier = Barrier::new(2);
    let results: Vec<(u8, Result<Lsn>)> = std::thread::scope(|s| {
        let handles: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|v| {
                let (engine, barrier) = (&engine, &barrier);
                s.spawn(move || {
                    let put = Event::now(EventBody::SharedPut {
                        codec: crate::Codec::Raw,
                        run: run(),
                        key: "threshold".into(),
                        value: vec![v],
                        immutable: true,
                    });
                    let writable = Condition::SharedWritable {
                        run: run(),
                        key: "threshold".into(),
                    };
                    barrier.wait();
                    (v, engine.append_if(vec![writable], vec![put]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().any(|(_, r)| matches!(
        r,
        Err(Error::Conflict {
            found: Found::SharedImmutable,
            ..
        })
    )));
    let value = engine.views().shared(&run(), "threshold").unwrap().unwrap();
    assert_eq!(value.value, winners);
}

/// A refused batch takes no LSN and leaves nothing in the log or the
/// views; the next batch follows the last one written.
#[test]
fn a_refused_batch_is_never_written() {
    let engine = engine(3);
    let a = attempt("ocr", 1);
    let first = engine
        .append(vec![status(&a, TaskStatus::Scheduled)])
        .unwrap();
    let put = Event::now(EventBody::Put {
        codec: crate::Codec::Raw,
        attempt: std::sync::Arc::new(a.clone()),
        key: "k".into(),
        value: b"v".to_vec(),
        meta: Vec::new(),
    });
    let err = engine
        .append_if(
            vec![is(&a, Some(TaskStatusKind::Running))],
            vec![put.clone(), status(&a, TaskStatus::Cancelled)],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                found: Found::AttemptStatus(Some(TaskStatusKind::Scheduled)),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(engine.views().get(&a, "k").unwrap(), None);
    assert_eq!(engine.durable_lsn(), first);
    let next = engine.append(vec![put]).unwrap();
    assert_eq!(next, first.next());
    assert_eq!(log_of(&engine).len(), 2);
}

/// Every kind of condition, held and failed, read after the batches it
/// depends on.
#[test]
fn each_condition_reads_what_it_names() {
    let engine = engine(4);
    let check = |c: Condition| {
        engine.append_if(
            vec![c],
            vec![Event::now(EventBody::Put {
                codec: crate::Codec::Raw,
                attempt: std::sync::Arc::new(attempt("probe", 1)),
                key: "k".into(),
                value: Vec::new(),
                meta: Vec::new(),
            })],
        )
    };
    let found = |c: Condition| match check(c) {
        Err(Error::Conflict { found, .. }) => found,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let a1 = attempt("ocr", 1);
    let a2 = attempt("ocr", 2);
    // Nothing yet.
    assert_eq!(
        found(is(&a1, Some(TaskStatusKind::Running))),
        Found::AttemptStatus(None)
    );
    assert_eq!(
        found(Condition::LatestTry {
            task: task("ocr"),
            min: 1,
            max: u32::MAX
        }),
        Found::LatestTry(0, None)
    );
    assert_eq!(
        found(Condition::TaskKnown { task: task("ocr") }),
        Found::TaskUnknown
    );
    assert_eq!(
        found(Condition::RunStatus {
            run: run(),
            any_of: vec![Some(RunStatus::Running)]
        }),
        Found::RunStatus(None),
        "no batch was written: every check so far failed"
    );
    engine
        .append(vec![
            status(&a1, TaskStatus::Running),
            status(&a2, TaskStatus::Scheduled),
        ])
        .unwrap();
    assert!(check(is(&a1, Some(TaskStatusKind::Running))).is_ok());
    assert!(
        check(Condition::LatestTry {
            task: task("ocr"),
            min: 2,
            max: 2
        })
        .is_ok()
    );
    assert_eq!(
        found(Condition::LatestTry {
            task: task("ocr"),
            min: 0,
            max: 1
        }),
        Found::LatestTry(2, Some(TaskStatusKind::Scheduled))
    );
    assert!(check(Condition::TaskKnown { task: task("ocr") }).is_ok());
    assert_eq!(
        found(Condition::NoOtherLiveAttempt {
            attempt: a2.clone()
        }),
        Found::LiveAttempt(1, TaskStatusKind::Running)
    );
    engine
        .append(vec![status(&a1, TaskStatus::Cancelled)])
        .unwrap();
    assert!(
        check(Condition::NoOtherLiveAttempt {
            attempt: a2.clone()
        })
        .is_ok()
    );
    assert_eq!(
        found(Condition::NoOtherLiveAttempt {
            attempt: attempt("ocr", 3)
        }),
        Found::LiveAttempt(2, TaskStatusKind::Scheduled)
    );
    // Task state alone makes a task known.
    engine
        .append(vec![Event::now(EventBody::TaskPut {
            codec: crate::Codec::Raw,
            task: task("index"),
            key: "cursor".into(),
            value: b"3".to_vec(),
        })])
        .unwrap();
    assert!(
        check(Condition::TaskKnown {
            task: task("index")
        })
        .is_ok()
    );
    // Runs.
    engine
        .append(vec![Event::now(EventBody::RunStatus {
            run: run(),
            status: RunStatus::Paused,
            parent: None,
        })])
        .unwrap();
    assert_eq!(
        found(Condition::RunStatus {
            run: run(),
            any_of: vec![Some(RunStatus::Running)]
        }),
        Found::RunStatus(Some(RunStatus::Paused))
    );
    assert!(check(Condition::RunKnown { run: run() }).is_ok());
    let ghost = RunScope {
        run: "ghost".into(),
        ..run()
    };
    assert_eq!(
        found(Condition::RunKnown { run: ghost.clone() }),
        Found::RunUnknown
    );
    assert!(
        check(Condition::RunStatus {
            run: ghost,
            any_of: vec![None]
        })
        .is_ok(),
        "no record is `None`"
    );
    // Checkpoints.
    let cp = engine
        .append(vec![Event::now(EventBody::Checkpoint {
            run: run(),
            name: "c".into(),
        })])
        .unwrap();
    assert!(
        check(Condition::CheckpointAt {
            run: run(),
            name: "c".into(),
            lsn: Some(cp.0)
        })
        .is_ok()
    );
    assert_eq!(
        found(Condition::CheckpointAt {
            run: run(),
            name: "c".into(),
            lsn: None
        }),
        Found::Checkpoint(Some(cp.0))
    );
    assert_eq!(
        found(Condition::CheckpointAt {
            run: run(),
            name: "d".into(),
            lsn: Some(cp.0)
        }),
        Found::Checkpoint(None)
    );
    // A purge makes the run and its tasks unknown again.
    engine
        .append(vec![Event::now(EventBody::PurgeRun { run: run() })])
        .unwrap();
    assert_eq!(
        found(Condition::TaskKnown {
            task: task("index")
        }),
        Found::TaskUnknown
    );
    assert_eq!(
        found(is(&a1, Some(TaskStatusKind::Running))),
        Found::AttemptStatus(None)
    );
    assert!(check(Condition::NoOtherLiveAttempt { attempt: a1 }).is_ok());
}

/// Sixteen threads drive the lifecycles of their own tasks, every step a
/// conditional batch: all succeed, and they still share group commits.
#[test]
fn conditional_batches_of_unrelated_tasks_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), Options::default()).unwrap();
    let barrier = Barrier::new(16);
    std::thread::scope(|s| {
        for t in 0..16 {
            let (engine, barrier) = (&engine, &barrier);
            s.spawn(move || {
                barrier.wait();
                for try_number in 1..=20 {
                    let a = attempt(&format!("task-{t}"), try_number);
                    engine
                        .append_if(vec![is(&a, None)], vec![status(&a, TaskStatus::Running)])
                        .unwrap();
                    engine
                        .append_if(
                            vec![is(&a, Some(TaskStatusKind::Running))],
                            vec![status(&a, TaskStatus::Succeeded { result: Vec::new() })],
                        )
                        .unwrap();
                }
            });
        }
    });
    let stats = engine.stats();
    assert_eq!(stats.batches, 16 * 20 * 2);
    assert_eq!(stats.conflicts, 0);
    assert!(
        stats.mean_group_batches() > 1.0,
        "unrelated conditional batches never shared a sync: {stats:?}"
    );
}

/// A task known by its attempt state alone, wherever that state lies (the
/// active memtable, or redb after a snapshot), is unknown once a clear
/// hides it, in the memtable over redb's rows too.
#[test]
fn task_known_by_its_state_alone_is_unknown_once_cleared() {
    let engine = engine(11);
    let known = |name: &str| {
        let c = Condition::TaskKnown { task: task(name) };
        match engine.append_if(
            vec![c],
            vec![status(&attempt("probe", 1), TaskStatus::Running)],
        ) {
            Ok(_) => true,
            Err(Error::Conflict {
                found: Found::TaskUnknown,
                ..
            }) => false,
            Err(e) => panic!("the check failed: {e}"),
        }
    };
    let put = |name: &str| {
        Event::now(EventBody::Put {
            codec: crate::Codec::Raw,
            attempt: Arc::new(attempt(name, 1)),
            key: "page".into(),
            value: b"1".to_vec(),
            meta: Vec::new(),
        })
    };
    let clear = |name: &str| Event::now(EventBody::ClearTask { task: task(name) });
    engine.append(vec![put("ocr"), put("index")]).unwrap();
    assert!(known("ocr") && known("index"));
    // Cleared in the active memtable.
    engine.append(vec![clear("ocr")]).unwrap();
    assert!(!known("ocr") && known("index"));
    // Written again after the clear.
    engine.append(vec![put("ocr")]).unwrap();
    assert!(known("ocr"));
    // In redb only, then cleared in the memtable.
    engine.snapshot().unwrap();
    assert!(known("ocr") && known("index"));
    engine.append(vec![clear("index")]).unwrap();
    assert!(known("ocr") && !known("index"));
}

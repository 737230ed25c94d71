//! Guards the one promise a real process crash tests best: a batch whose LSN
//! a worker was told (under `Sync`) is in the log after the worker is killed
//! with SIGKILL at any moment, with its exact content.
//!
//! How: a child process (`waymark-crash-child`) appends from four threads and
//! prints each acknowledged LSN; the test kills it after a random delay,
//! several rounds in a row on the same directory, then reopens the directory
//! and finds every printed LSN with its batch. A second test kills kernel
//! workers (lifecycle calls and atomic finishes from four threads) 50
//! times, checking every acknowledged write and transition after each.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use waymark_engine::{Engine, LogReader, Lsn};
use waymark_tests::{batch, batch_origin};

const SEED: u64 = 0x5157_4b11;
const ROUNDS: u32 = 5;

/// The random source of a test's kill delays: from `WAYMARK_SIGKILL_SEED`,
/// else a fresh seed, printed so that a failure replays.
fn kill_delays() -> fastrand::Rng {
    let seed = std::env::var("WAYMARK_SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("WAYMARK_SIGKILL_SEED={seed} replays this test's kill delays");
    fastrand::Rng::with_seed(seed)
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = kill_delays();
    let mut acked: Vec<(u64, u32, u32)> = Vec::new();
    for round in 0..ROUNDS {
        let (mut child, mut stdout) = spawn_ready_child(dir.path(), round * 10);
        std::thread::sleep(Duration::from_millis(rng.u64(20..250)));
        // The child appends in a loop until killed: one that ended by
        // itself failed (an append error poisons it), which the kill would
        // hide.
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: the child exited before the kill"
        );
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the child did not die of the SIGKILL: {status}"
        );
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let complete = match rest.rfind('\n') {
            Some(end) => &rest[..end],
            None => "",
        };
        let before = acked.len();
        for line in complete.lines() {
            let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.push((v[0], v[1] as u32, v[2] as u32));
        }
        assert!(
            acked.len() > before,
            "round {round} acknowledged nothing; the test proves nothing"
        );
    }

    // Recovery must accept whatever the kills left.
    let engine = Engine::open(dir.path()).unwrap();
    let last = engine.recovery_report().last_lsn.unwrap();
    drop(engine);
    let reader = LogReader::open(dir.path()).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut by_lsn = std::collections::HashMap::new();
    while let Some(frame) = cursor.next_frame().unwrap() {
        let events = frame.decode().unwrap();
        let (writer, index) = batch_origin(&events).unwrap();
        assert_eq!(
            events,
            batch(SEED, writer, index),
            "batch at {} is not what was written",
            frame.lsn()
        );
        by_lsn.insert(frame.lsn().0, (writer, index));
    }
    assert_eq!(
        by_lsn.len() as u64,
        last.0,
        "LSNs run 1..={last} with no gap"
    );
    for (lsn, writer, index) in &acked {
        assert_eq!(
            by_lsn.get(lsn),
            Some(&(*writer, *index)),
            "acknowledged LSN {lsn} (writer {writer}, batch {index}) is missing"
        );
    }
    println!(
        "{} acknowledged batches over {ROUNDS} kills, all present",
        acked.len()
    );
}

/// A second process opening a directory that a live worker owns gets a typed
/// error naming the holder's pid, and the directory opens once it is gone.
#[test]
fn a_second_process_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _stdout) = spawn_ready_child(dir.path(), 0);

    let err = Engine::open(dir.path()).unwrap_err();
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    match err {
        waymark_engine::Error::LockedByOtherProcess { holder, .. } => {
            assert_eq!(holder, format!("pid {}", child.id()));
        }
        other => panic!("expected LockedByOtherProcess, got {other}"),
    }
    // The lock died with its process.
    Engine::open(dir.path()).expect("reopen after the holder died");
}

/// Kernel workers killed 50 times on one directory, each kill after a
/// random delay while four threads start tasks, write, and finish them
/// atomically; after every kill the parent reopens, resumes, and finds
/// every acknowledged write and transition (a task acknowledged running is
/// interrupted, or finished by a write that made it to the disk).
#[test]
fn acknowledged_writes_and_transitions_survive_50_kills() {
    use waymark_kernel::{Kernel, RunRef, TaskStatus};
    const KILLS: u32 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = kill_delays();
    let run = RunRef::new("acme", "docs", "sigkill").unwrap();
    let mut puts: Vec<(String, String, String)> = Vec::new();
    let mut statuses: std::collections::BTreeMap<String, String> = Default::default();
    let mut acked_total = 0usize;
    for round in 0..KILLS {
        let (mut child, mut stdout) = spawn_child(dir.path(), round * 10, &["kernel"]);
        std::thread::sleep(Duration::from_millis(rng.u64(10..120)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: the child exited before the kill"
        );
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let complete = rest.rfind('\n').map_or("", |end| &rest[..end]);
        for line in complete.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["put", task, key, value] => {
                    puts.push((task.to_string(), key.to_string(), value.to_string()))
                }
                ["status", task, kind] => {
                    statuses.insert(task.to_string(), kind.to_string());
                }
                other => panic!("round {round}: a line {other:?}"),
            }
            acked_total += 1;
        }
        // Reopen, resume, and check everything acknowledged so far.
        let k = Kernel::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        if k.run(&run).unwrap().is_some() {
            k.resume(&run).unwrap();
        }
        for (task, key, value) in &puts {
            let got = k.context(run.task(task.clone()).unwrap()).get(key).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "round {round}: acknowledged {task}/{key} lost"
            );
        }
        for (task, kind) in &statuses {
            let got = k
                .task(&run.task(task.clone()).unwrap())
                .unwrap()
                .map(|r| r.status);
            let ok = matches!(
                (kind.as_str(), &got),
                ("succeeded", Some(TaskStatus::Succeeded { .. }))
                    | (
                        "running",
                        Some(TaskStatus::Interrupted | TaskStatus::Succeeded { .. })
                    )
            );
            assert!(
                ok,
                "round {round}: {task} acknowledged {kind}, found {got:?}"
            );
        }
        k.close().unwrap();
    }
    assert!(
        acked_total > 50 * 4,
        "the kills came too early to prove anything: {acked_total} acknowledgements"
    );
    println!("{acked_total} acknowledgements over {KILLS} kills, all present after each");
}

/// Starts the crash child on `dir` and waits until it owns the directory.
fn spawn_ready_child(
    dir: &std::path::Path,
    first_writer: u32,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    spawn_child(dir, first_writer, &[])
}

/// Starts the crash child on `dir` with `extra` arguments and waits until
/// it owns the directory.
fn spawn_child(
    dir: &std::path::Path,
    first_writer: u32,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waymark-crash-child"))
        .arg(dir)
        .arg(first_writer.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the crash child");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "child failed to open the directory (first writer {first_writer})"
    );
    (child, stdout)
}

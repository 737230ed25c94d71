//! `TaskRef`: which task attempt a worker is running.

use std::fmt;

use serde::{Deserialize, Serialize};
use waymark_engine::{AttemptScope, RunScope, TaskScope};

use crate::error::{Error, Result};

/// Longest tenant, DAG, run or task name, in bytes (the engine's default
/// name limit).
pub const NAME_BYTES_MAX: usize = 1024;

/// One task attempt: tenant, DAG name, run id, task id and the 1-based try
/// number. Immutable; [`TaskRef::with_try`] makes the ref of another try.
///
/// ```
/// use waymark_kernel::TaskRef;
///
/// let ti = TaskRef::new("acme", "documents", "run-42", "ocr", 1)?;
/// assert_eq!(ti.to_string(), "acme/documents/run-42/ocr#1");
/// assert_eq!(ti.with_try(2)?.try_number(), 2);
/// assert!(TaskRef::new("acme", "documents", "run-42", "ocr", 0).is_err());
/// # Ok::<(), waymark_kernel::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawTaskRef", into = "RawTaskRef")]
pub struct TaskRef {
    run: RunRef,
    task_id: String,
    try_number: u32,
}

/// One run: tenant, DAG name and run id.
///
/// ```
/// use waymark_kernel::RunRef;
///
/// let run = RunRef::new("acme", "documents", "run-42")?;
/// assert_eq!(run.task("ocr")?.to_string(), "acme/documents/run-42/ocr#1");
/// # Ok::<(), waymark_kernel::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunRef {
    tenant: String,
    dag_name: String,
    run_id: String,
}

impl RunRef {
    /// A checked run reference.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for an empty or over-long name.
    pub fn new(
        tenant: impl Into<String>,
        dag_name: impl Into<String>,
        run_id: impl Into<String>,
    ) -> Result<RunRef> {
        let r = RunRef {
            tenant: tenant.into(),
            dag_name: dag_name.into(),
            run_id: run_id.into(),
        };
        check_name("tenant", &r.tenant)?;
        check_name("dag_name", &r.dag_name)?;
        check_name("run_id", &r.run_id)?;
        Ok(r)
    }

    /// Try 1 of one of this run's tasks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for an empty or over-long task id.
    pub fn task(&self, task_id: impl Into<String>) -> Result<TaskRef> {
        let task_id = task_id.into();
        check_name("task_id", &task_id)?;
        Ok(TaskRef {
            run: self.clone(),
            task_id,
            try_number: 1,
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The DAG's name.
    pub fn dag_name(&self) -> &str {
        &self.dag_name
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The engine's scope of the run.
    pub fn scope(&self) -> RunScope {
        RunScope {
            tenant: self.tenant.clone(),
            dag: self.dag_name.clone(),
            run: self.run_id.clone(),
        }
    }
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.dag_name, self.run_id)
    }
}

/// The serialized form, checked on the way in.
#[derive(Serialize, Deserialize)]
struct RawTaskRef {
    tenant: String,
    dag_name: String,
    run_id: String,
    task_id: String,
    try_number: u32,
}

impl TryFrom<RawTaskRef> for TaskRef {
    type Error = Error;

    fn try_from(r: RawTaskRef) -> Result<TaskRef> {
        TaskRef::new(r.tenant, r.dag_name, r.run_id, r.task_id, r.try_number)
    }
}

impl From<TaskRef> for RawTaskRef {
    fn from(t: TaskRef) -> RawTaskRef {
        RawTaskRef {
            tenant: t.run.tenant,
            dag_name: t.run.dag_name,
            run_id: t.run.run_id,
            task_id: t.task_id,
            try_number: t.try_number,
        }
    }
}

/// Checks one name: not empty, not over [`NAME_BYTES_MAX`].
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidRef(format!("{what} is empty")));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Error::InvalidRef(format!(
            "{what} is {} bytes, over the {NAME_BYTES_MAX}-byte limit",
            name.len()
        )));
    }
    Ok(())
}

impl TaskRef {
    /// A checked reference.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for an empty or over-long name, or try 0.
    pub fn new(
        tenant: impl Into<String>,
        dag_name: impl Into<String>,
        run_id: impl Into<String>,
        task_id: impl Into<String>,
        try_number: u32,
    ) -> Result<TaskRef> {
        RunRef::new(tenant, dag_name, run_id)?
            .task(task_id)?
            .with_try(try_number)
    }

    /// The same task at another try.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for try 0.
    pub fn with_try(&self, try_number: u32) -> Result<TaskRef> {
        if try_number == 0 {
            return Err(Error::InvalidRef("try_number is 1-based; got 0".into()));
        }
        Ok(TaskRef {
            try_number,
            ..self.clone()
        })
    }

    /// The same run, another task (try 1).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for an empty or over-long task id.
    pub fn sibling(&self, task_id: impl Into<String>) -> Result<TaskRef> {
        self.run.task(task_id)
    }

    /// The run this task belongs to.
    pub fn run_ref(&self) -> &RunRef {
        &self.run
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        self.run.tenant()
    }

    /// The DAG's name.
    pub fn dag_name(&self) -> &str {
        self.run.dag_name()
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        self.run.run_id()
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The 1-based try number.
    pub fn try_number(&self) -> u32 {
        self.try_number
    }

    /// The engine's scope of the run.
    pub fn run_scope(&self) -> RunScope {
        self.run.scope()
    }

    /// The engine's scope of the task (all attempts).
    pub fn task_scope(&self) -> TaskScope {
        TaskScope {
            run: self.run_scope(),
            task: self.task_id.clone(),
        }
    }

    /// The engine's scope of this attempt.
    pub fn attempt_scope(&self) -> AttemptScope {
        AttemptScope {
            task: self.task_scope(),
            try_number: self.try_number,
        }
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.run, self.task_id, self.try_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_refs_are_typed_errors() {
        assert!(TaskRef::new("", "d", "r", "t", 1).is_err());
        assert!(TaskRef::new("t", "", "r", "t", 1).is_err());
        assert!(TaskRef::new("t", "d", "", "t", 1).is_err());
        assert!(TaskRef::new("t", "d", "r", "", 1).is_err());
        assert!(TaskRef::new("t", "d", "r", "x".repeat(NAME_BYTES_MAX + 1), 1).is_err());
        assert!(TaskRef::new("t", "d", "r", "x".repeat(NAME_BYTES_MAX), 1).is_ok());
        let ti = TaskRef::new("t", "d", "r", "x", 3).unwrap();
        assert!(ti.with_try(0).is_err());
    }

    #[test]
    fn serde_round_trips_and_checks() {
        let ti = TaskRef::new("acme", "docs", "r/1", "ocr", 2).unwrap();
        let json = serde_json::to_string(&ti).unwrap();
        assert_eq!(serde_json::from_str::<TaskRef>(&json).unwrap(), ti);
        let bad = json.replace("\"try_number\":2", "\"try_number\":0");
        assert!(serde_json::from_str::<TaskRef>(&bad).is_err());
    }
}

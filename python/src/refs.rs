//! `TaskInstanceRef` and `RunRef`: which task attempt, which run.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};
use waymark_kernel::{RunRef, TaskRef};

use crate::errors::IntoPy;

/// One task attempt: tenant, DAG, run, task and try number (1-based).
/// Immutable and hashable; compared by value.
///
/// ``TaskInstanceRef(tenant_id="acme", dag_name="documents",
/// dag_id="run-42", task_id="ocr", try_number=1)``
#[pyclass(module = "waymark", name = "TaskInstanceRef", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PyTaskRef {
    pub(crate) inner: TaskRef,
}

/// A try number from Python: an `int` from 1 to 2³² − 1 (1 if not
/// given); any other `int` is an `InvalidArgumentError`, any other type a
/// `TypeError`.
fn try_number(n: Option<&Bound<'_, PyAny>>) -> PyResult<u32> {
    let Some(n) = n else {
        return Ok(1);
    };
    match n.extract::<i64>() {
        Ok(v) => u32::try_from(v).map_err(|_| out_of_range(&v.to_string())),
        Err(_) if n.cast::<pyo3::types::PyInt>().is_ok() => Err(out_of_range(&n.to_string())),
        Err(_) => Err(PyTypeError::new_err("try_number must be an int")),
    }
}

fn out_of_range(n: &str) -> PyErr {
    crate::errors::invalid(format!(
        "try_number must be between 1 and {}; got {n}",
        u32::MAX
    ))
}

#[pymethods]
impl PyTaskRef {
    #[new]
    #[pyo3(signature = (tenant_id, dag_name, dag_id, task_id, try_number = None))]
    fn new(
        tenant_id: String,
        dag_name: String,
        dag_id: String,
        task_id: String,
        try_number: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyTaskRef> {
        let try_number = self::try_number(try_number)?;
        Ok(PyTaskRef {
            inner: TaskRef::new(tenant_id, dag_name, dag_id, task_id, try_number).py_err()?,
        })
    }

    /// Builds one from a dictionary with ``dag_name``, ``dag_id``,
    /// ``task_id`` and ``try_number`` (default 1); ``tenant_id`` comes from
    /// the dictionary if it has one, else from the argument.
    #[classmethod]
    #[pyo3(signature = (data, tenant_id = "default"))]
    fn from_dict(
        _cls: &Bound<'_, PyType>,
        data: &Bound<'_, PyDict>,
        tenant_id: &str,
    ) -> PyResult<PyTaskRef> {
        let field = |name: &str| -> PyResult<String> {
            data.get_item(name)?
                .ok_or_else(|| crate::errors::invalid(format!("the dictionary has no {name:?}")))?
                .extract::<String>()
                .map_err(|_| PyTypeError::new_err(format!("{name} must be a str")))
        };
        let tenant = match data.get_item("tenant_id")? {
            Some(t) => t.extract::<String>()?,
            None => tenant_id.to_owned(),
        };
        let try_number = data.get_item("try_number")?;
        PyTaskRef::new(
            tenant,
            field("dag_name")?,
            field("dag_id")?,
            field("task_id")?,
            try_number.as_ref(),
        )
    }

    /// The same task at another try.
    fn with_try_number(&self, try_number: &Bound<'_, PyAny>) -> PyResult<PyTaskRef> {
        Ok(PyTaskRef {
            inner: self
                .inner
                .with_try(self::try_number(Some(try_number))?)
                .py_err()?,
        })
    }

    /// Another task of the same run, at try 1.
    fn sibling(&self, task_id: String) -> PyResult<PyTaskRef> {
        Ok(PyTaskRef {
            inner: self.inner.sibling(task_id).py_err()?,
        })
    }

    /// The fields as a dictionary (what ``from_dict`` reads back).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("tenant_id", self.inner.tenant())?;
        d.set_item("dag_name", self.inner.dag_name())?;
        d.set_item("dag_id", self.inner.run_id())?;
        d.set_item("task_id", self.inner.task_id())?;
        d.set_item("try_number", self.inner.try_number())?;
        Ok(d)
    }

    /// The tenant: state of one tenant is never seen by another.
    #[getter]
    fn tenant_id(&self) -> &str {
        self.inner.tenant()
    }

    /// The DAG's name (its kind, e.g. ``documents``).
    #[getter]
    fn dag_name(&self) -> &str {
        self.inner.dag_name()
    }

    /// The run: one execution of the DAG.
    #[getter]
    fn dag_id(&self) -> &str {
        self.inner.run_id()
    }

    /// The task within the DAG.
    #[getter]
    fn task_id(&self) -> &str {
        self.inner.task_id()
    }

    /// The attempt, 1-based.
    #[getter]
    fn try_number(&self) -> u32 {
        self.inner.try_number()
    }

    /// The run this attempt belongs to.
    #[getter]
    fn run(&self) -> PyRunRef {
        PyRunRef {
            inner: self.inner.run_ref().clone(),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "TaskInstanceRef(tenant_id={}, dag_name={}, dag_id={}, task_id={}, try_number={})",
            py_repr(py, self.inner.tenant())?,
            py_repr(py, self.inner.dag_name())?,
            py_repr(py, self.inner.run_id())?,
            py_repr(py, self.inner.task_id())?,
            self.inner.try_number()
        ))
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    /// Pickles as its fields: a reference crosses process boundaries.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (Bound<'py, PyType>, (String, String, String, String, u32)) {
        let ti = &slf.get().inner;
        (
            slf.get_type(),
            (
                ti.tenant().to_owned(),
                ti.dag_name().to_owned(),
                ti.run_id().to_owned(),
                ti.task_id().to_owned(),
                ti.try_number(),
            ),
        )
    }
}

/// One run of a DAG: tenant, DAG name and run id.
#[pyclass(module = "waymark", name = "RunRef", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PyRunRef {
    pub(crate) inner: RunRef,
}

#[pymethods]
impl PyRunRef {
    #[new]
    fn new(tenant_id: String, dag_name: String, dag_id: String) -> PyResult<PyRunRef> {
        Ok(PyRunRef {
            inner: RunRef::new(tenant_id, dag_name, dag_id).py_err()?,
        })
    }

    /// A task of this run.
    #[pyo3(signature = (task_id, try_number = None))]
    fn task(&self, task_id: String, try_number: Option<&Bound<'_, PyAny>>) -> PyResult<PyTaskRef> {
        let ti = self.inner.task(task_id).py_err()?;
        Ok(PyTaskRef {
            inner: ti.with_try(self::try_number(try_number)?).py_err()?,
        })
    }

    /// The tenant.
    #[getter]
    fn tenant_id(&self) -> &str {
        self.inner.tenant()
    }

    /// The DAG's name.
    #[getter]
    fn dag_name(&self) -> &str {
        self.inner.dag_name()
    }

    /// The run's id.
    #[getter]
    fn dag_id(&self) -> &str {
        self.inner.run_id()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RunRef(tenant_id={}, dag_name={}, dag_id={})",
            py_repr(py, self.inner.tenant())?,
            py_repr(py, self.inner.dag_name())?,
            py_repr(py, self.inner.run_id())?
        ))
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    /// Pickles as its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, (String, String, String)) {
        let run = &slf.get().inner;
        (
            slf.get_type(),
            (
                run.tenant().to_owned(),
                run.dag_name().to_owned(),
                run.run_id().to_owned(),
            ),
        )
    }
}

/// `s` as Python's `repr` writes it.
fn py_repr(py: Python<'_>, s: &str) -> PyResult<String> {
    Ok(PyString::new(py, s).repr()?.to_cow()?.into_owned())
}

/// A run given as a `RunRef` or as any `TaskInstanceRef` of it.
pub(crate) fn run_of(obj: &Bound<'_, PyAny>) -> PyResult<RunRef> {
    if let Ok(run) = obj.cast::<PyRunRef>() {
        return Ok(run.get().inner.clone());
    }
    if let Ok(ti) = obj.cast::<PyTaskRef>() {
        return Ok(ti.get().inner.run_ref().clone());
    }
    Err(PyTypeError::new_err(
        "a run is a waymark.RunRef or a waymark.TaskInstanceRef of it",
    ))
}

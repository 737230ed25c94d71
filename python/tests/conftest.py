"""Shared fixtures: kernels in memory and on a temporary directory, and a
maker of task attempt references."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

import waymark

# Property tests run a bounded number of cases in CI and more when
# WAYMARK_PROPTEST_CASES is set, as the Rust suite does; hypothesis prints
# the failing example and the seed that replays it (--hypothesis-seed).
settings.register_profile(
    "waymark",
    max_examples=int(os.environ.get("WAYMARK_PROPTEST_CASES", "100")),
    deadline=None,
    print_blob=True,
)
settings.load_profile("waymark")


@pytest.fixture
def kernel():
    k = waymark.Kernel.in_memory()
    yield k
    k.close()


@pytest.fixture
def file_kernel(tmp_path):
    k = waymark.Kernel.open(tmp_path / "state")
    yield k
    k.close()


def make_ti(task_id="ocr", try_number=1, *, tenant_id="acme", dag_name="documents", dag_id="run-42"):
    return waymark.TaskInstanceRef(
        tenant_id=tenant_id,
        dag_name=dag_name,
        dag_id=dag_id,
        task_id=task_id,
        try_number=try_number,
    )


@pytest.fixture
def ti():
    return make_ti()

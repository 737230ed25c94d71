"""The type stubs: a type checker accepts a worker written against them,
and they name every public member of the native classes."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import waymark

HERE = Path(__file__).parent
STUBS = Path(waymark.__file__).parent / "_waymark.pyi"


def test_mypy_strict_accepts_a_worker_written_against_the_stubs():
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(HERE / "typed_example.py")],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def stub_members():
    tree = ast.parse(STUBS.read_text())
    return {
        node.name: {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


@pytest.mark.parametrize(
    "cls",
    [waymark.Kernel, waymark.RunContext, waymark.Batch, waymark.TaskInstanceRef, waymark.RunRef,
     waymark.Watch, waymark.RetryPolicy],
    ids=lambda c: c.__name__,
)
def test_the_stubs_name_every_public_member(cls):
    documented = stub_members()[cls.__name__]
    public = {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}
    assert public - documented == set()
    assert documented - public - {"__init__", "__enter__", "__exit__", "__iter__", "__next__",
                                  "__len__", "__eq__", "__hash__"} == set()


def test_every_public_member_has_a_docstring():
    for cls in [waymark.Kernel, waymark.RunContext, waymark.Batch, waymark.TaskInstanceRef,
                waymark.RunRef, waymark.Watch, waymark.RetryPolicy]:
        assert cls.__doc__, cls
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_"):
                assert member.__doc__, f"{cls.__name__}.{name}"


def stub_signatures():
    tree = ast.parse(STUBS.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, ast.FunctionDef) and not f.name.startswith("__"):
                    a = f.args
                    positional = [x.arg for x in a.posonlyargs + a.args]
                    if positional and positional[0] in ("self", "cls"):
                        positional = positional[1:]
                    out[(node.name, f.name)] = (positional, [x.arg for x in a.kwonlyargs])
    return out


def test_the_stubs_give_each_method_the_arguments_it_takes():
    classes = {c.__name__: c for c in [waymark.Kernel, waymark.RunContext, waymark.Batch,
                                        waymark.TaskInstanceRef, waymark.RunRef, waymark.Watch,
                                        waymark.RetryPolicy]}
    checked = 0
    for (cls, name), (positional, keyword_only) in stub_signatures().items():
        member = getattr(classes[cls], name)
        if isinstance(member, property) or type(member).__name__ == "getset_descriptor":
            continue
        params = list(inspect.signature(member).parameters.values())
        if params and params[0].name in ("self", "cls", "slf"):
            params = params[1:]
        runtime_positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        runtime_keyword = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
        assert (runtime_positional, runtime_keyword) == (positional, keyword_only), f"{cls}.{name}"
        checked += 1
    assert checked > 60

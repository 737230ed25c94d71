"""How values are stored: JSON values round-trip as `json` gives them
back, bytes as bytes; anything else is refused before anything is
written."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import waymark
from conftest import make_ti

JSON_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    1e300,
    5e-324,
    0.1,
    "",
    "text",
    "ünïcødé ✓ 𝄞",
    'quotes " and \\ backslash\n',
    [],
    [1, "two", 3.0, None, [True]],
    {},
    {"rows": [[1, 2], [3, 4]], "columns": ["a", "b"]},
    {"z": 1, "a": 2, "m": {"nested": [{"deep": None}]}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_every_json_type_round_trips_equal(kernel, ti, value):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("K", value)
    got = ctx.get("K")
    assert got == value
    assert type(got) is type(value)


def test_floats_keep_their_bits(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    for f in [0.1, 1 / 3, 1e16, 123456789.123456789, -0.0, 2.0]:
        ctx.set("F", f)
        got = ctx.get("F")
        assert got == f and math.copysign(1, got) == math.copysign(1, f)
        assert isinstance(got, float)


def test_dict_key_order_is_kept(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("D", {"z": 1, "a": 2, "m": 3})
    assert list(ctx.get("D")) == ["z", "a", "m"]


@pytest.mark.parametrize(
    "value",
    [
        {"t": (1, 2, (3,))},
        {1: "int key", -7: "negative"},
        {2.5: "float", 1e16: "big float", 1e-05: "small float", -0.0: "negative zero"},
        {True: "true key"},
        {False: "false key"},
        {None: "none key"},
    ],
    ids=repr,
)
def test_values_come_back_as_json_gives_them_back(kernel, ti, value):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("J", value)
    assert ctx.get("J") == json.loads(json.dumps(value))


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\xff\xfe raw", bytes(range(256))])
def test_bytes_round_trip_as_bytes(kernel, ti, raw):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("B", raw)
    assert ctx.get("B") == raw and isinstance(ctx.get("B"), bytes)
    ctx.set("BA", bytearray(raw))
    assert ctx.get("BA") == raw


def test_a_json_looking_string_stays_a_string(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("S", "[1, 2]")
    assert ctx.get("S") == "[1, 2]"
    ctx.set("B", b"[1, 2]")
    assert ctx.get("B") == b"[1, 2]"


class LoudFloat(float):
    def __repr__(self):
        raise AssertionError("json writes a float key with float.__repr__, never a subclass's")


def test_a_float_subclass_key_is_written_as_json_writes_it(kernel, ti):
    value = {LoudFloat(1e16): "a", LoudFloat(0.5): "b"}
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("K", value)
    assert ctx.get("K") == json.loads(json.dumps(value)) == {"1e+16": "a", "0.5": "b"}


def test_a_refused_write_leaves_the_rest_of_its_batch_whole(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    b = ctx.batch().set("A", {"text": "first"}).push("P", [1], metadata={"m": "before"})
    with pytest.raises(ValueError):
        b.set("B", [1, 2, float("nan")])
    with pytest.raises(ValueError):
        b.push("C", "fine", metadata="lone \ud800 surrogate")
    with pytest.raises(TypeError):
        b.set_task_state("T", Custom())
    with pytest.raises(ValueError):
        b.delete("lone \udc00 key")
    b.set("D", 'after "quotes" \\ and \n').set(b"not a str key".decode(), b"\x00raw")
    assert len(b) == 4
    b.commit()
    assert ctx.get_all() == {
        "A": {"text": "first"},
        "P": [1],
        "D": 'after "quotes" \\ and \n',
        "not a str key": b"\x00raw",
    }
    assert ctx.get_entry("P").metadata == {"m": "before"}
    assert ctx.get_task_state("T") is None


class Custom:
    pass


@pytest.mark.parametrize(
    "bad,error",
    [
        (Custom(), TypeError),
        ({1, 2}, TypeError),
        ([1, object()], TypeError),
        ({"k": {"deeper": Custom()}}, TypeError),
        ({(1, 2): "tuple key"}, TypeError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ([float("-inf")], ValueError),
        (2**64, ValueError),
        (-(2**63) - 1, ValueError),
        ("lone \ud800 surrogate", ValueError),
        ({float("nan"): 1}, ValueError),
    ],
    ids=repr,
)
def test_a_value_that_is_not_json_is_refused_before_anything_is_written(kernel, ti, bad, error):
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("K", "before")
    batches = kernel.stats()["batches"]
    with pytest.raises(error):
        ctx.set("K", bad)
    with pytest.raises(error):
        ctx.push("K", "fine", metadata=bad)
    with pytest.raises(error):
        ctx.batch().set("OTHER", 1).set("K", bad)
    assert ctx.get("K") == "before"
    assert kernel.stats()["batches"] == batches


def test_nesting_deeper_than_the_limit_is_refused(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    ok = []
    for _ in range(99):
        ok = [ok]
    ctx.set("DEEP", ok)
    assert ctx.get("DEEP") == ok
    too_deep = [ok]
    too_deep = [too_deep]
    with pytest.raises(ValueError, match="deeper than 100"):
        ctx.set("DEEP", too_deep)


def test_oversized_keys_and_values_raise_a_limit_error_and_write_nothing(kernel, ti):
    ctx = waymark.RunContext(ti, kernel)
    with pytest.raises(waymark.LimitError):
        ctx.set("K" * 100_000, 1)
    with pytest.raises(waymark.LimitError):
        ctx.set("K", b"x" * (64 << 20))
    assert ctx.get_all() == {}
    with pytest.raises(waymark.InvalidArgumentError):
        ctx.set("", 1)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(writes=st.lists(st.tuples(st.text(min_size=1, max_size=12), json_values | st.binary()), max_size=20))
def test_a_batch_of_any_keys_and_values_round_trips(writes):
    k = waymark.Kernel.in_memory()
    try:
        ctx = waymark.RunContext(make_ti(), k)
        b = ctx.batch()
        for key, value in writes:
            b.set(key, value)
        b.commit()
        assert ctx.get_all() == dict(writes)
    finally:
        k.close()


@given(value=json_values | st.binary())
def test_any_json_value_or_bytes_round_trips(value):
    k = waymark.Kernel.in_memory()
    try:
        ctx = waymark.RunContext(make_ti(), k)
        ctx.set("V", value)
        assert ctx.get("V") == value
    finally:
        k.close()

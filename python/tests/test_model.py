"""RunContext against a model: any sequence of writes, batches, deletes
and retries leaves exactly the state a dictionary says it should."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import waymark
from conftest import make_ti

keys = st.sampled_from(["A", "B", "C", "D"])
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5), st.binary(max_size=5),
    st.lists(st.integers(0, 9), max_size=3),
)


class Attempts(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.kernel = waymark.Kernel.in_memory()
        self.ti = make_ti()
        self.kernel.start(self.ti)
        self.ctx = self.kernel.context(self.ti)
        self.attempt, self.task = {}, {}

    @rule(key=keys, value=values)
    def set(self, key, value):
        self.ctx.set(key, value)
        self.attempt[key] = value

    @rule(key=keys)
    def delete(self, key):
        self.ctx.delete(key)
        self.attempt.pop(key, None)

    @rule(key=keys, value=values)
    def set_task_state(self, key, value):
        self.ctx.set_task_state(key, value)
        self.task[key] = value

    @rule(writes=st.lists(st.tuples(st.booleans(), keys, values), min_size=1, max_size=4))
    def batch(self, writes):
        with self.ctx.batch() as b:
            for task_state, key, value in writes:
                (b.set_task_state if task_state else b.set)(key, value)
        for task_state, key, value in writes:
            (self.task if task_state else self.attempt)[key] = value

    @rule(writes=st.lists(st.tuples(keys, values), min_size=1, max_size=3))
    def batch_that_raises(self, writes):
        try:
            with self.ctx.batch() as b:
                for key, value in writes:
                    b.set(key, value)
                raise KeyError("the task failed half-way")
        except KeyError:
            pass

    @rule()
    def retry(self):
        self.kernel.fail(self.ti, "boom")
        self.ti = self.kernel.clear_for_task(self.ti)
        self.kernel.start(self.ti)
        self.ctx = self.kernel.context(self.ti)
        self.attempt = {}

    @invariant()
    def state_matches_the_model(self):
        assert self.ctx.get_all() == dict(sorted(self.attempt.items()))
        assert self.ctx.get_all_task_state() == dict(sorted(self.task.items()))

    def teardown(self):
        self.kernel.close()


TestAttempts = Attempts.TestCase

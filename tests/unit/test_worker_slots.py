"""A worker's slots: never more handed out than the pool holds (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jsflow.tasks.worker import _Slots


@given(ops=st.lists(st.integers(1, 8), max_size=30), size=st.integers(1, 8))
@pytest.mark.asyncio(loop_scope="session")
async def test_slots_never_hand_out_more_than_their_size(ops: list[int], size: int) -> None:
    # given a slot pool, when slots are taken and given back, then free stays in [0, size]
    slots = _Slots(size)
    held: list[int] = []
    for want in ops:
        if slots.free == 0:
            slots.give(held.pop())
        got = await slots.take(want)
        assert 1 <= got <= want and 0 <= slots.free <= size
        held.append(got)
    assert slots.free + sum(held) == size

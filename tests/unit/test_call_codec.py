"""How a call becomes bytes: any JSON arguments round-trip through a task's CallCodec (no
server)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jsflow.tasks.calls import CallCodec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


async def _sample(a: Any, b: Any = None, *rest: Any, **extra: Any) -> Any:
    return a


@given(
    args=st.lists(json_values, min_size=1, max_size=4),
    extra=st.dictionaries(
        st.from_regex(r"[a-z]{3,6}", fullmatch=True).filter(lambda k: k not in ("a", "b")),
        json_values,
        max_size=3,
    ),
)
def test_call_codec_round_trips_json_arguments(args: list[Any], extra: dict[str, Any]) -> None:
    # given any JSON arguments, when encoded and decoded, then they are unchanged
    codec = CallCodec(_sample)
    assert codec.decode_args(codec.encode_args(tuple(args), extra)) == (tuple(args), extra)

"""NATS subject matching, as flows and the event router do it, agrees with a model of its
definition (no server)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from jsflow.flow.streams import subject_matches
from jsflow.tasks.router import Rule


def _model(pattern: list[str], subject: list[str]) -> bool:
    """NATS subject matching, by its definition (recursive, token by token)."""
    if not pattern:
        return not subject
    if pattern == [">"]:
        return len(subject) >= 1
    if not subject:
        return False
    return pattern[0] in ("*", subject[0]) and _model(pattern[1:], subject[1:])


_tokens = st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=5)


@given(
    pattern=st.tuples(
        st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=5), st.booleans()
    ),
    subject=_tokens,
)
def test_subject_matching_agrees_with_the_definition(pattern, subject):
    tokens, tail = pattern
    pat = [*tokens, ">"] if tail else tokens
    if not pat:
        pat = ["*"]
    assert subject_matches(".".join(pat), ".".join(subject)) == _model(pat, subject)


tokens = st.sampled_from(["a", "b", "c"])


@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=3).map(".".join)
    | st.lists(tokens, max_size=2).map(lambda p: ".".join([*p, ">"])),
    subject=st.lists(tokens, min_size=1, max_size=4).map(".".join),
)
def test_rule_matching_agrees_with_a_regex_model(pattern: str, subject: str) -> None:
    # given a NATS pattern, then Rule.matches agrees with a regex translation of it
    parts = {"*": "[^.]+", ">": ".+"}
    regex = "^" + r"\.".join(parts.get(t, re.escape(t)) for t in pattern.split(".")) + "$"
    assert Rule(pattern).matches(subject) == bool(re.match(regex, subject))

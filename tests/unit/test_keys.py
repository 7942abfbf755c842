"""Keys and patterns: which are legal (checked before any I/O), and key()/key_parts() build
legal keys from any text, reversibly; no server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jsflow
from jsflow.keys import key_parts, validate_key, validate_pattern

ILLEGAL_KEYS = [
    "",
    "a b",
    "a\tb",
    "ünïcode",
    "a*",
    "*",
    ">",
    "a.>",
    "a.*.b",
    "a..b",
    ".a",
    "a.",
    "a$b",
    "a#b",
    "a:b",
    "a@b",
    "a\n",  # a trailing newline: "$" in a regex would let it through
    "a.b\n",
]


@pytest.mark.parametrize("bad", ILLEGAL_KEYS)
def test_validate_key_rejects_illegal_keys(bad: str) -> None:
    # given an illegal key / when validated / then InvalidKeyError names it
    with pytest.raises(jsflow.InvalidKeyError) as info:
        validate_key(bad)
    assert info.value.key == bad


@pytest.mark.parametrize("bad", [None, 1, b"abc", ("a",)])
def test_validate_key_rejects_non_str(bad: Any) -> None:
    with pytest.raises(jsflow.InvalidKeyError):
        validate_key(bad)


@pytest.mark.parametrize("good", ["a", "a.b.c", "A-Z_09/=", "user.42", "x=2E"])
def test_validate_key_accepts_legal_keys(good: str) -> None:
    assert validate_key(good) == good


@pytest.mark.parametrize("good", ["*", ">", "a.*", "a.*.c", "a.>", "a.b"])
def test_validate_pattern_accepts_whole_token_wildcards(good: str) -> None:
    assert validate_pattern(good) == good


@pytest.mark.parametrize("bad", ["a*", "a.>.b", "a..*", "", "a b.*", "a.*\n"])
def test_validate_pattern_rejects_malformed_patterns(bad: str) -> None:
    with pytest.raises(jsflow.InvalidKeyError):
        validate_pattern(bad)


def test_key_needs_parts_of_type_str() -> None:
    with pytest.raises(jsflow.InvalidKeyError):
        jsflow.key()
    with pytest.raises(jsflow.InvalidKeyError):
        jsflow.key("a", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a=", "a=4", "a=zz", "a=FF", "a=C3"])
def test_key_parts_rejects_bad_escapes(bad: str) -> None:
    with pytest.raises(jsflow.InvalidKeyError):
        key_parts(bad)


def test_key_escapes_dots_and_at_signs() -> None:
    assert jsflow.key("user", "a.b@x") == "user.a=2Eb=40x"
    assert key_parts("user.a=2Eb=40x") == ("user", "a.b@x")


_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(list(".=*> \t-_/aZ09\x00")), st.characters(codec="utf-8")),
    max_size=12,
)


@given(st.lists(_TEXT, min_size=1, max_size=5))
def test_key_always_builds_a_valid_reversible_key(parts: list[str]) -> None:
    # given arbitrary text parts (dots, '=', wildcards, unicode, empty strings)
    # when they are built into a key
    built = jsflow.key(*parts)
    # then the key is legal and decodes back to exactly the parts
    assert validate_key(built) == built
    assert key_parts(built) == tuple(parts)


@given(st.lists(_TEXT, min_size=1, max_size=4), st.lists(_TEXT, min_size=1, max_size=4))
def test_key_is_injective(a: list[str], b: list[str]) -> None:
    if a != b:
        assert jsflow.key(*a) != jsflow.key(*b)


def test_watch_rejects_bad_patterns_without_a_server() -> None:
    # (store methods that fail fast need no server; a bare object is enough here)
    store = jsflow.ObjectStore.__new__(jsflow.ObjectStore)
    with pytest.raises(jsflow.InvalidKeyError):
        store.watch("a.>.b")

"""The one boundary to nats-py, checked without a server: TTLs in the one format the server
takes, and no module outside the boundary imports nats (see also
integration/client/test_protocol_limits.py)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import jsflow
from jsflow._js import Msg, check_pub_ack, map_nats_errors
from jsflow._js.headers import ttl_value

ROOT = pathlib.Path(jsflow.__file__).parent


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.2, "1s"), (1.0, "1s"), (1.5, "2s"), (2.0, "2s"), (59.01, "60s")]
)
def test_ttls_are_sent_in_whole_seconds_rounded_up(seconds: float, expected: str) -> None:
    assert ttl_value(seconds) == expected


def test_only_the_boundary_imports_nats() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("_js", "_proto"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{rel}: {n}" for n in names if n == "nats" or n.startswith("nats.")]
    assert offenders == []


def test_no_module_imports_its_own_package() -> None:
    # `from jsflow.store import wire` inside jsflow/store/ runs the package's __init__,
    # which imports that module's importers: an import cycle the layer contract cannot see.
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if (
            path.name in ("__init__.py", "__main__.py")
            or len(rel.parts) < 2
            or rel.parts[0] == "_proto"
        ):
            continue
        package = "jsflow." + ".".join(rel.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                offenders.append(f"{rel}: from {package} import ...")
    assert offenders == []


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (b'{"stream":"S","seq":1}', None, None),
        (b"", {"Status": "503"}, jsflow.NoStreamError),
        (
            b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence"}}',
            None,
            jsflow.ConflictError,
        ),
        (b'{"error":{"err_code":10999,"description":"no code field"}}', None, jsflow.ServerError),
        (b'{"error":{"code":500,"surprise":1}}', None, jsflow.ServerError),
        (b'{"error":"not an object"}', None, jsflow.ServerError),
        (b"not json", None, jsflow.ServerError),
    ],
)
def test_a_publish_reply_of_any_shape_maps_to_a_typed_error(
    data: bytes, headers: dict[str, str] | None, expected: type[Exception] | None
) -> None:
    reply = Msg(_client=None, subject="_INBOX.x", data=data, headers=headers)  # type: ignore[arg-type]
    if expected is None:
        with map_nats_errors(subject="s"):
            check_pub_ack(reply)
        return
    with pytest.raises(expected), map_nats_errors(subject="s"):
        check_pub_ack(reply)

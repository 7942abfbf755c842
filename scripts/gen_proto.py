#!/usr/bin/env python3
"""Generate jsflow/_proto/*_pb2.py(i) from proto/jsflow/v1/*.proto.

    .venv/bin/python scripts/gen_proto.py          # regenerate the checked-in code
    .venv/bin/python scripts/gen_proto.py --check  # exit 1 when the checked-in code is stale

Uses grpcio-tools' bundled protoc (pinned in the ``dev`` extra) so output is reproducible.
Each .proto file is standalone (no imports between them) and lands flat in jsflow/_proto/.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "proto" / "jsflow" / "v1"
OUT = ROOT / "jsflow" / "_proto"


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in SRC.glob("*.proto"))
    args = ["protoc", f"-I{SRC}", f"--python_out={out}", f"--pyi_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / "__init__.py").write_text('"""Generated protobuf code; see scripts/gen_proto.py."""\n')


def main() -> int:
    if "--check" not in sys.argv:
        for old in OUT.glob("*_pb2.py*"):
            old.unlink()
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        names = {p.name for p in fresh.iterdir()} | {p.name for p in OUT.glob("*_pb2.py*")}
        stale = sorted(
            n
            for n in names
            if not (fresh / n).exists()
            or not (OUT / n).exists()
            or not filecmp.cmp(fresh / n, OUT / n, shallow=False)
        )
    if stale:
        print("stale generated protobuf code:", ", ".join(stale))
        print("run: .venv/bin/python scripts/gen_proto.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

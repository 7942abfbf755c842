"""Rates as people write them: ``10`` (per second), ``(100, 60)``, ``"10/s"``,
``"10/second"``, ``"100 per minute"``, ``"5/h"``, ``"30/10s"``; one parser for the rate
limiter and for ``@task(rate_limit=...)``."""

from __future__ import annotations

import re

from jsflow._validate import duration, number, shorten
from jsflow.errors import ConfigError

__all__ = ["Rate", "parse_rate"]

Rate = tuple[float, float]
"""``(rate, per)``: ``rate`` units every ``per`` seconds."""

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?)\s*(?:/|per)\s*(?P<n>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+?)s?\s*$",
    re.IGNORECASE,
)


def parse_rate(value: object, per: object = 1.0, *, what: str = "rate") -> Rate:
    """``(rate, per)`` from a number (with ``per`` seconds), a ``(rate, per)`` tuple or a
    string such as ``"10/s"`` or ``"100 per minute"``; :class:`ConfigError` naming
    ``what`` otherwise."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ConfigError(f"{what} must be (rate, per_seconds), got {shorten(value)}")
        value, per = value
    elif isinstance(value, str):
        match = _RATE.match(value)
        unit = _UNITS.get(match.group("unit").lower()) if match else None
        if match is None or unit is None:
            raise ConfigError(
                f"{what} must look like '10/s', '10/second' or '100 per minute', "
                f"got {shorten(value)}"
            )
        value = float(match.group("rate"))
        per = float(match.group("n") or 1.0) * unit
    rate = number(f"{what} (rate)", value, minimum=0.0, exclusive_minimum=True)
    seconds = number(f"{what} (per)", per, minimum=0.0, exclusive_minimum=True)
    return rate, duration(f"{what} (per)", seconds)

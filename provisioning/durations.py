"""Durations as people type them: `30m`, `4h`, `1d12h`, `90s`."""

from __future__ import annotations

import re
from datetime import timedelta

from provisioning.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d{1,6})([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse `4h`, `1d12h` or `45m` into a timedelta; anything else is `InvalidInput`."""
    cleaned = text.strip().lower()
    pos = 0
    seconds = 0
    while pos < len(cleaned):
        match = _PART.match(cleaned, pos)
        if match is None:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned) or seconds == 0:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise InvalidInput(
            f"{shown!r} is not a duration: use a number and a unit, like 30m, 4h or 2d."
        )
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta compactly for tables: `3h12m`, `2d4h`, `45s`."""
    total = int(delta.total_seconds())
    if total < 0:
        return "-" + format_duration(-delta)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"

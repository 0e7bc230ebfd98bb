"""`devdb doctor`: every configured driver's checks before a launch, one line each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text

from provisioning.drivers.base import Driver


async def doctor(drivers: Mapping[str, Driver]) -> tuple[Text, list[dict[str, Any]], bool]:
    """The report as text and as rows, and whether every check passed."""
    rows = [
        {"kind": kind, "check": name, "ok": ok, "detail": detail}
        for kind, driver in sorted(drivers.items())
        for name, ok, detail in await driver.diagnose()
    ]
    text = Text(
        "\n".join(
            f"{'ok  ' if row['ok'] else 'FAIL'} {row['kind']}: {row['check']}"
            + (f" ({row['detail']})" if row["detail"] else "")
            for row in rows
        )
    )
    return text, rows, all(row["ok"] for row in rows)

"""Rendering the instance's user data from `userdata.sh`: every value shell-quoted."""

from __future__ import annotations

import shlex
from importlib import resources


def render_user_data(
    *,
    region: str,
    bucket: str,
    prefix: str,
    snapshot: str,
    parameter: str,
    database: str,
    user: str,
    golden: bool = False,
    grace_seconds: int = 3600,
) -> str:
    script = resources.files("provisioning.aws").joinpath("userdata.sh").read_text()
    values = {
        "REGION": region,
        "BUCKET": bucket,
        "PREFIX": prefix,
        "SNAPSHOT": snapshot,
        "PARAMETER": parameter,
        "DATABASE": database,
        "USER": user,
        "GOLDEN": "1" if golden else "0",
        "GRACE": str(grace_seconds),
    }
    for key, value in values.items():
        script = script.replace(f"@{key}@", shlex.quote(value))
    return script

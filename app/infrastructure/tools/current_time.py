"""`current_time`: the current date and time in an IANA time zone (default UTC)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.application.tools import ToolError, ToolOutput


class CurrentTimeTool:
    """Tells the time; the clock is injectable so tests can fix it."""

    name = "current_time"
    description = "The current date and time in an IANA time zone such as 'Europe/Paris' (default UTC)."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "IANA time zone name, e.g. 'America/New_York'. Default: UTC.",
            }
        },
        "additionalProperties": False,
    }
    requires_approval = False
    timeout_seconds = 5.0

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        name = str(arguments.get("timezone") or "UTC")
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # ValueError: a path-like or malformed key (e.g. '../etc'); never read as a file.
            raise ToolError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'") from None
        moment = self._now().astimezone(zone)
        offset = moment.utcoffset()
        return ToolOutput(
            {
                "timezone": name,
                "iso": moment.isoformat(),
                "unix": int(moment.timestamp()),
                "weekday": moment.strftime("%A"),
                "utc_offset": moment.strftime("%z"),
                "utc_offset_seconds": int(offset.total_seconds()) if offset is not None else 0,
            }
        )

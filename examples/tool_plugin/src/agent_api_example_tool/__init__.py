"""An example agent-api tool plugin: `word_count`.

A tool is any object with `name`, `description`, `parameters` (a JSON Schema object),
`requires_approval`, `timeout_seconds` and an async `run(arguments)` returning a
`ToolOutput`. Raise `ToolError` for failures the caller should read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.application.tools import ToolError, ToolOutput


class WordCountTool:
    name = "word_count"
    description = "Count the words, lines and characters of a text."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": 100_000, "description": "The text to count."},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    requires_approval = False
    timeout_seconds = 2.0

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        text = arguments["text"]
        if not text.strip():
            raise ToolError("the text is empty")
        return ToolOutput({"words": len(text.split()), "lines": len(text.splitlines()), "characters": len(text)})

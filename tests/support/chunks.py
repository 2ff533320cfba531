"""Reading an `LLMClient` stream in tests: its batches flattened, each chunk as an object."""

from __future__ import annotations

from typing import Any

from app.application.llm.types import LLMClient, UpstreamChunk


async def stream_objects(llm: LLMClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        item.json() if isinstance(item, UpstreamChunk) else item async for batch in llm.stream(body) for item in batch
    ]

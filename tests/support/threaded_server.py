"""A real uvicorn server on 127.0.0.1 in a thread, for tests whose clients need a real socket
(the openai SDKs, node, LangChain)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from app.infrastructure.persistence.embedded import free_port


@dataclass
class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 in a thread (so real clients, e.g. the openai SDK, can call it)."""

    app: Any
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="gateway-test-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

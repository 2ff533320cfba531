"""Tool adapters: the built-ins (`calculator`, `current_time`, `http_get`, `web_search`),
plugin discovery, and `build_tool_registry` for the composition root."""

"""agent-api: an OpenAI-compatible AI agent backend."""

__version__ = "0.1.0"

"""Adapters: everything that touches the outside world (HTTP, Postgres, Redis, the LLM)."""

"""observability adapters."""

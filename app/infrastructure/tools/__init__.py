"""tools adapters."""

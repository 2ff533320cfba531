"""ratelimit adapters."""

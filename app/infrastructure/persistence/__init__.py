"""persistence adapters."""

"""The agent's adapters: the model and tools as the agent loop sees them, the tool audit
recorder, and the assembled agent services the HTTP layer uses."""

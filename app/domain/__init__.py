"""The domain: entities, value objects, domain errors and repository protocols (stdlib only)."""

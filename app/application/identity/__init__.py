"""Identity use cases: users, sessions, tokens, API keys and the admin's user management."""

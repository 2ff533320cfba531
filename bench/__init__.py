"""The in-repo benchmark (`make bench`): DIRECT (client → mock) against THROUGH (client → gateway → mock)."""

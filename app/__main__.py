"""`python -m app` is the same as the `agent-api` console script."""

from app.infrastructure.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())

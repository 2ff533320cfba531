"""Where the gateway's time goes, from py-spy's collapsed stacks (`py-spy record --format raw`).

Each line of the file is ``frame;frame;...;frame <samples>``. The summary gives, for the
application's own functions and for each library, the share of samples in which it appears
anywhere on the stack (inclusive), which is what "where does a request's time go" asks.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"(?P<function>.*) \((?P<file>[^:()]*):\d+\)$")
_ROOT = re.compile(r"runpy|app/__main__\.py|app/infrastructure/cli/main\.py|^asyncio$|^uvicorn$")


def _owner(file: str) -> str:
    """The package a library frame belongs to (py-spy names files from their import root:
    ``uvicorn/protocols/http/httptools_impl.py``, ``asyncio/tasks.py``)."""
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    return file.split("/", 1)[0] if "/" in file else file


def summarise(path: Path, top: int = 25) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(owner or function, inclusive share)]) for the `top` heaviest."""
    total = 0
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        seen: set[str] = set()
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                continue
            file = match["file"]
            key = f"{match['function']} ({file})" if file.startswith("app/") else _owner(file)
            if key not in seen:
                seen.add(key)
                inclusive[key] += samples
    # The frames at the root of every stack (the interpreter, the CLI, the server's loop) say nothing.
    shares = [(key, n / total) for key, n in inclusive.most_common() if total and not _ROOT.search(key)]
    return total, shares[:top]


def markdown(path: Path, title: str, top: int = 25) -> str:
    total, shares = summarise(path, top)
    lines = [f"{title} ({total} samples; share of samples with it on the stack):", "", "| where | share |", "|---|---|"]
    lines += [f"| `{key}` | {share * 100:.1f} % |" for key, share in shares]
    return "\n".join(lines)

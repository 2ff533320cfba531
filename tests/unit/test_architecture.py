"""The layering rule, checked from the source: domain imports only the standard library;
application imports only the standard library and the domain. (import-linter enforces the
same in `make lint`; this catches a third-party import that linter contracts do not list.)"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


def allowed(module: str, own_layers: tuple[str, ...]) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(module == layer or module.startswith(layer + ".") for layer in own_layers)


@pytest.mark.parametrize(
    ("layer", "own"),
    [("domain", ("app.domain",)), ("application", ("app.domain", "app.application"))],
)
def test_inner_layers_import_only_stdlib_and_inner_layers(layer: str, own: tuple[str, ...]) -> None:
    files = sorted((APP / layer).rglob("*.py"))
    assert files, f"no source found in app/{layer}"
    offenders = {
        f"{path.relative_to(APP)}: {module}"
        for path in files
        for module in imported_roots(path)
        if not allowed(module, own)
    }
    assert not offenders, offenders

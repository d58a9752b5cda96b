"""The shape of the code: rooms by seam, a service that only wires, no module grown past reading.

docs/ARCHITECTURE.md draws the rooms; these tests keep the drawing's promises.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "daemon")


def _modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top_entries(package: str) -> list[str]:
    """The modules and sub-packages at the top of a package (not ``__init__``, not data folders)."""
    root = REPO_ROOT / package
    entries = [p.name for p in root.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    entries += [p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    return sorted(entries)


def test_the_engine_imports_nothing_from_the_daemon() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(n for n in _imported(path) if n.split(".")[0] == "daemon")
        for path in _modules("engine")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_service_only_wires() -> None:
    assert len((REPO_ROOT / "daemon" / "service.py").read_text(encoding="utf-8").splitlines()) <= 250


def test_few_rooms_at_the_top_of_each_package() -> None:
    assert len(_top_entries("daemon")) <= 8, _top_entries("daemon")
    assert len(_top_entries("engine")) <= 10, _top_entries("engine")


def test_at_most_three_modules_over_600_lines() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): n
        for package in PACKAGES
        for path in _modules(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert len(long) <= 3, long


def test_every_package_says_what_it_holds() -> None:
    for package in PACKAGES:
        for init in (REPO_ROOT / package).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and len(doc) > 40, f"{init.relative_to(REPO_ROOT)} has no docstring worth the name"

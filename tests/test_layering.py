"""The one-way flow (DESIGN.md), checked on every import statement of the package — module level or inside a
function — and followed transitively: config never reaches train; train never reaches report; eval and inference
never reach train; train never reaches recipes (recipes build on it). `make test` runs this with the rest of the
suite (and `ruff check` before it)."""

import ast
from functools import lru_cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cliptune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The package module `name` refers to (a module, or the module defining an imported attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@lru_cache(maxsize=None)
def direct_imports(module: str) -> frozenset[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(m for m in map(_resolve, names) if m and m.startswith("cliptune"))
    found.discard(module)
    return frozenset(found)


def chain(start: str, forbidden: str) -> list[str] | None:
    """An import chain from `start` to a module under `forbidden`, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(direct_imports(path[-1])):
            if nxt == forbidden or nxt.startswith(forbidden + "."):
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append(path + [nxt])
    return None


def _under(prefix: str) -> list[str]:
    return sorted(m for m in MODULES if m == prefix or m.startswith(prefix + "."))


CONTRACTS = [("cliptune.config", "cliptune.train"), ("cliptune.train", "cliptune.report"),
             ("cliptune.eval", "cliptune.train"), ("cliptune.inference", "cliptune.train"),
             ("cliptune.train", "cliptune.recipes")]


@pytest.mark.parametrize("source, forbidden", CONTRACTS, ids=[f"{s}-not-{f}" for s, f in CONTRACTS])
def test_one_way_flow(source, forbidden):
    broken = [" -> ".join(found) for module in _under(source) if (found := chain(module, forbidden))]
    assert not broken, broken


def test_the_checker_sees_lazy_imports():
    """A function-level import counts: report.html imports train.rebuild inside a function."""
    assert chain("cliptune.report.html", "cliptune.train") is not None

"""The package reaches into no library's private API: an upgrade of transformers, open_clip, timm, torch or peft
must not break it through a renamed underscore name. Every private access left is listed here with its reason."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cliptune"

# (file relative to src/cliptune, attribute) → why it is allowed.
ALLOWED = {
    ("commands/search.py", "_asdict"): "namedtuple's documented public method",
    ("search/index.py", "_vectors"): "cliptune's own class",
    # efficientnet-lite-pytorch is pinned exactly; tests/test_lite.py compares the cut tower with its extract_features
    **{("models/lite.py", name): "pinned efficientnet-lite-pytorch, checked against its own forward"
       for name in ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_global_params")},
}


def _private_accesses(root: Path = SRC):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    yield rel, node.attr, node.lineno
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                private = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
                if private and not module.startswith("cliptune."):
                    yield rel, module, node.lineno


def test_no_private_library_api_outside_the_listed_exceptions():
    found = [(rel, name, line) for rel, name, line in _private_accesses() if (rel, name) not in ALLOWED]
    assert not found, "private attributes or modules used (use public API, or list them with a reason): " + \
        ", ".join(f"{rel}:{line} {name}" for rel, name, line in found)


def test_the_scan_sees_private_calls_and_modules(tmp_path):
    """The scanner itself works on what broke before: a private method call and a private module import."""
    (tmp_path / "m.py").write_text("from transformers.models._x import y\n"
                                   "def f(bert, x):\n    return self._ok(bert._create_attention_masks(x))\n")
    assert sorted(name for _, name, _ in _private_accesses(tmp_path)) == ["_create_attention_masks",
                                                                          "transformers.models._x"]

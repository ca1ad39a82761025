"""The code stays in parts a contributor can read: no class over ~200 lines, no module over 500.

docs/ARCHITECTURE.md maps the modules; when one outgrows these limits, split it by job (as
train.py gave eval_record.py, corpus_cache.py gave id_file.py, serve/app.py gave serve/events.py)
rather than raising the limit.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 210  # "about 200": a docstring's worth of slack


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_class_is_over_about_200_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_every_module_is_on_the_architecture_map():
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE)) for p in _modules()
               if p.name != "__init__.py" and p.parent.name not in ("commands", "serve")
               and f"`{p.name}`" not in text]
    assert missing == []

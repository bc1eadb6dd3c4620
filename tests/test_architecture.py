"""The package's shape: no module reaches into another's private names (ruff's PLC2701 sees `from m import _x`;
this sees `m._x` through an imported smallvision module). Imports pointing down is import-linter's, in `make lint`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smallvision"


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """Names bound to smallvision modules in a file: `import smallvision.x as y`, `from smallvision.a import b`."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("smallvision.") and a.asname:
                    names[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smallvision"):
            for a in node.names:
                where = PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")
                if where.with_suffix(".py").is_file() or where.is_dir():
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def private_reaches(path: Path) -> list[str]:
    """Every `module._name` in `path` where `module` is another smallvision module imported there."""
    tree = ast.parse(path.read_text())
    aliases = _module_aliases(tree)
    return [
        f"{path.relative_to(path.parents[1])}:{node.lineno}: {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
    ]


def test_no_module_reaches_into_another_modules_private_names():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_reaches(path)]
    assert not found, "make the name public where it is shared:\n" + "\n".join(found)


def test_the_check_sees_a_private_reach(tmp_path):
    sample = tmp_path / "training" / "sample.py"
    sample.parent.mkdir()
    sample.write_text("from smallvision.training import recipes\n\nrecipes._hidden(1)\nrecipes.public(2)\n")
    assert private_reaches(sample) == ["training/sample.py:3: recipes._hidden"]

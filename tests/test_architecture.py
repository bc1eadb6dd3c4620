"""The package's shape: no module reaches into another's private names (`from m import _x`, `m._x`). Imports pointing
down is import-linter's, in `make lint`."""

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
    """Every reach in `path` into another smallvision module's private names: `module._name` through an imported
    module (dotted `smallvision.a.b._name` too), and `from smallvision.a import _name` (relative imports too)."""
    tree = ast.parse(path.read_text())
    aliases = _module_aliases(tree)
    where = f"{path.relative_to(path.parents[1])}"
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            if owner in aliases or owner.startswith("smallvision."):
                hits.append(f"{where}:{node.lineno}: {owner}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and ((node.module or "").startswith("smallvision") or node.level):
            hits += [
                f"{where}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return hits


def test_no_module_reaches_into_another_modules_private_names():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_reaches(path)]
    assert not found, "make the name public where it is shared:\n" + "\n".join(found)


def test_the_check_sees_a_private_reach(tmp_path):
    sample = tmp_path / "recipes" / "sample.py"
    sample.parent.mkdir()
    sample.write_text(
        "import smallvision.api\nfrom smallvision.recipes import steps\nfrom smallvision.api import _scan\n"
        "from .lightning import _load_weights\n\nsteps._hidden(1)\nsteps.public(2)\nsmallvision.api._scan(3)\n"
    )
    assert sorted(private_reaches(sample)) == [
        "recipes/sample.py:3: from smallvision.api import _scan",
        "recipes/sample.py:4: from .lightning import _load_weights",
        "recipes/sample.py:6: steps._hidden",
        "recipes/sample.py:8: smallvision.api._scan",
    ]


LONGEST = 60  # lines, def to last line: a function fits on a screen


def long_functions(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Functions in `path` over LONGEST lines whose def is not followed within three lines by a `# long: why`."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            size = node.end_lineno - node.lineno + 1
            said = any("# long:" in line for line in lines[node.lineno - 1 : node.lineno + 3])
            if size > LONGEST and not said:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name} ({size} lines)")
    return found


def test_no_function_is_longer_than_a_screen_without_saying_why():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in long_functions(path)]
    assert not found, "split these, or say why not in a `# long:` comment by the def:\n" + "\n".join(found)


def test_the_length_check_sees_a_long_function_and_its_reason(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(LONGEST))
    sample = tmp_path / "sample.py"
    sample.write_text(
        f"def long():\n{body}\n\ndef explained():  # long: a table of constants\n{body}\n\ndef short():\n    pass\n"
    )
    assert long_functions(sample, tmp_path) == [f"sample.py:1: long ({LONGEST + 1} lines)"]

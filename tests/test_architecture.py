"""The import rules of docs/architecture.md, checked on the source of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "attribuo"

FAMILIES = ("attr.gradient", "attr.relevance", "attr.perturbation", "attr.utils")
ENGINE = ("_engine",)
BASE = ENGINE + ("attr.base",)
APPS = ("metrics", "robust", "concept", "influence", "module", "scale")

# package prefix -> the prefixes its modules may import (besides themselves); checked in order
ALLOWED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_engine", ()),
    ("attr.visualization", ENGINE),
    ("attr.base", ENGINE),
    *((family, BASE) for family in FAMILIES),
    ("attr.cam", BASE + ("attr.gradient",)),
    ("attr.attention", BASE + ("attr.relevance",)),  # Chefer's variant weighs maps by AttnLRP relevance
    ("attr.layer", BASE + FAMILIES),
    ("attr.neuron", BASE + FAMILIES + ("attr.layer",)),
    ("attr.text", ("_engine", "attr")),
    ("attr", ENGINE),  # attr/__init__.py re-exports below
    *((app, ("_engine", "attr") + APPS) for app in APPS),
    ("insights", ("",)),
    ("demo", ("",)),
    ("_compat", ()),
    ("", ("_compat",)),  # attribuo/__init__.py
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module relative to attribuo, line, at module level)`` of one file."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # module-level try/if blocks count as module level
        if isinstance(node, (ast.Try, ast.If)):
            top_level.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.append(("attribuo." + target if target else "attribuo", node.lineno, id(node) in top_level))
            elif node.module:
                found.append((node.module, node.lineno, id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno, id(node) in top_level))
    return found


def _rule(name: str) -> tuple[str, tuple[str, ...]]:
    for prefix, allowed in ALLOWED:
        if name == prefix or name.startswith(prefix + ".") or prefix == "":
            return prefix, allowed
    raise AssertionError(f"no import rule for module {name}")


def _within(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[_module_name(p) or "attribuo" for p in SOURCES])
def test_imports_follow_the_layers(path):
    name = _module_name(path)
    own, allowed = _rule(name)
    for target, line, _ in _imports(path):
        if not (target == "attribuo" or target.startswith("attribuo.")):
            continue
        inner = target.removeprefix("attribuo").removeprefix(".")
        if _within(inner, own) or any(_within(inner, a) for a in allowed):
            continue
        # a package's __init__ may import its own subpackages (attr/__init__ re-exports the families)
        if path.name == "__init__.py" and inner.startswith(name + "."):
            continue
        pytest.fail(f"{path.relative_to(PACKAGE.parent)}:{line}: {name or 'attribuo'} imports {inner}")


@pytest.mark.parametrize("path", SOURCES, ids=[_module_name(p) or "attribuo" for p in SOURCES])
def test_no_matplotlib_or_captum_at_import(path):
    for target, line, module_level in _imports(path):
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        assert target.split(".")[0] != "captum", f"{where} imports captum"
        if module_level:
            assert target.split(".")[0] not in ("matplotlib", "mpl_toolkits"), (
                f"{where} imports {target} at module level; import it inside the drawing function"
            )


def test_engine_knows_no_algorithm():
    # the engine's modules are listed in docs/architecture.md; a new one belongs there too
    engine = {p.stem for p in (PACKAGE / "_engine").glob("*.py")} - {"__init__"}
    documented = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for stem in engine:
        assert f"`{stem}.py`" in documented, f"_engine/{stem}.py is not described in docs/architecture.md"
    words = ("deeplift", "lrp", "relevance", "shapley", "lime", "conductance", "cam", "neuron")
    for stem in engine:
        assert not any(w in stem for w in words), f"_engine/{stem}.py is named after an algorithm"


def test_import_attribuo_loads_no_matplotlib():
    import subprocess
    import sys

    code = "import sys, attribuo.attr, attribuo.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The direction of the package's imports: data flows one way, and the modules say so."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skbert"


def _imports(module: str) -> set[str]:
    """The package modules a module imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "skbert")  # "from . import X": the package itself
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("sklearn", "skbert"):
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names if alias.name.startswith("sklearn"))
    return found


MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))
FRONT_ENDS = {"__init__", "__main__", "_cli"}  # they use the estimator as a user does


@pytest.mark.parametrize("module", sorted(set(MODULES) - FRONT_ENDS - {"_embedder"}))
def test_no_module_imports_the_estimator(module):
    assert not _imports(module) & {"_embedder", "skbert"}, module


@pytest.mark.parametrize("module, forbidden", [
    ("_pooling", {"sklearn", "_cache", "_disk", "_entries", "_encoding", "_source", "_options"}),
    ("_layers", {"sklearn", "_cache", "_disk", "_entries", "_encoding", "_source", "_options"}),
    ("_statistics", {"sklearn", "_cache", "_disk", "_entries", "_encoding", "_source", "_options"}),
    ("_spec", {"sklearn", "_cache", "_disk", "_entries", "_encoding", "_source", "_options", "_models"}),
    ("_runtimes", {"_cache", "_disk", "_entries", "_encoding", "_source", "_options", "_settings"}),
    ("_depth", {"_models", "_encoding", "_cache", "_source", "_options", "_settings"}),
    ("_entries", {"_encoding", "_source", "_options", "_models", "_settings"}),
    ("_disk", {"_encoding", "_source", "_options", "_models", "_settings", "_cache"}),
    ("_cache", {"_encoding", "_source", "_options", "_models", "_settings"}),
    ("_validation", {"_models", "_encoding", "_cache", "_source", "_options"}),
    ("_tables", {"_models", "_encoding", "_cache", "_source", "_options", "_streaming", "_cli"}),
    ("_columns", {"_models", "_encoding", "_cache", "_source", "_options", "_streaming", "_cli", "_tables"}),
    ("_encoding", {"_cache", "_disk", "_entries", "_source", "_settings"}),
    ("_options", {"_encoding", "_source", "_cache", "_settings"}),
    ("_layout", {"_models", "_encoding", "_batching", "_cache", "_source", "_options", "_settings"}),
])
def test_each_stage_imports_only_what_comes_before_it(module, forbidden):
    assert not _imports(module) & forbidden, (module, _imports(module) & forbidden)


def test_every_module_is_in_the_readmes_layout():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    missing = [m for m in MODULES if m not in ("__init__", "__main__") and f"skbert/{m}.py" not in layout]
    assert not missing

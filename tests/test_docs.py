"""The README's code blocks and the docstrings' examples run as written.

A block or example that needs an optional package (``skbert[dask]``, ``skbert[openvino]``)
is left out where that package is not installed; everything else runs.
"""

import doctest
import importlib.util
import re
from pathlib import Path

import skbert._embedder
import skbert._token_level
import skbert.dask
from support import minilm

README = Path(__file__).resolve().parent.parent / "README.md"
#: The optional extras, by the top-level module a block imports.
OPTIONAL = ("dask", "distributed", "openvino")


def _missing_optional(code: str) -> list[str]:
    """The optional packages ``code`` imports that are not installed here."""
    imported = set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", code, flags=re.M))
    return sorted(name for name in imported & set(OPTIONAL) if importlib.util.find_spec(name) is None)


def test_only_blocks_that_need_a_missing_optional_package_are_left_out(monkeypatch):
    block = "import pandas as pd\nimport dask.dataframe as dd\nfrom skbert.dask import embed\n"
    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dask" else installed(name, *a))
    assert _missing_optional(block) == ["dask"]
    assert _missing_optional("import numpy as np\nfrom skbert import BertEmbedder\n") == []  # required: never left out
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # everything installed
    assert _missing_optional(block) == []


@minilm
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        if _missing_optional(block):
            continue  # e.g. the Dask block, where Dask is not installed
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["X"].shape == (3, 1152)
    assert namespace["P"].shape == (2, 1152)
    assert namespace["tokens"][0].tokens == ["[CLS]", "river", "##bank", "##s", "flood", ".", "[SEP]"]


@minilm
def test_docstring_examples_run():
    tried = 0
    modules = [skbert._embedder, skbert._token_level]
    if importlib.util.find_spec("dask") is not None:  # skbert.dask's example needs Dask itself
        modules.append(skbert.dask)
    for module in modules:
        failed, ran = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert failed == 0, module.__name__
        tried += ran
    assert tried >= 8

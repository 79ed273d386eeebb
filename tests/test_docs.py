"""The README's code blocks and the docstrings' examples run as written."""

import doctest
import re
from pathlib import Path

import skbert._embedder
import skbert._token_level
import skbert.dask
from support import minilm

README = Path(__file__).resolve().parent.parent / "README.md"


@minilm
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["X"].shape == (3, 1152)
    assert namespace["P"].shape == (2, 1152)
    assert namespace["tokens"][0].tokens == ["[CLS]", "river", "##bank", "##s", "flood", ".", "[SEP]"]


@minilm
def test_docstring_examples_run():
    tried = 0
    for module in (skbert._embedder, skbert._token_level, skbert.dask):
        failed, ran = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert failed == 0, module.__name__
        tried += ran
    assert tried >= 8

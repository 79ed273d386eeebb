"""The README's code blocks and the docstrings' examples run as written."""

import doctest
import re
from pathlib import Path

import skbert._embedder
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
    assert namespace["tokens"][0].tokens == ["[CLS]", "river", "##bank", "##s", "flood", ".", "[SEP]"]


@minilm
def test_docstring_examples_run():
    failures, tried = doctest.testmod(skbert._embedder, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 8 and failures == 0

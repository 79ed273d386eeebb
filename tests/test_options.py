"""The encoding options object and the one fingerprint of what changes the numbers."""

import dataclasses
import warnings

import pytest

from skbert import BertEmbedder
from skbert._options import EncodingOptions, encoding_options, numbers_fingerprint
from skbert._runtimes import OpenVINO, TorchPacked, TorchPadded
from support import TEXTS

BASE = dict(max_length=32, long_text="truncate", stride=7, stored="float16", batch_size=None, token_budget=2048)


@pytest.fixture
def loaded(tiny_bert):
    return BertEmbedder(tiny_bert, precision="float32").fit(["a"])._load()


def test_options_are_frozen_and_say_which_fields_are_keyed(loaded):
    options = EncodingOptions(**BASE, runtime=TorchPadded(loaded))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_length = 8
    assert options.keyed() == {"max_length": 32, "long_text": "truncate", "stored": "float16",
                               "runtime": "torch"}  # stride: no effect
    chunked = dataclasses.replace(options, long_text="chunk")
    assert chunked.keyed() == {"max_length": 32, "long_text": "chunk", "stride": 7, "stored": "float16",
                               "runtime": "torch"}
    assert dataclasses.replace(options, runtime=TorchPacked(loaded)).keyed() == options.keyed()  # the layout: not
    assert dataclasses.replace(options, runtime=OpenVINO(loaded)).keyed()["runtime"] == "openvino"


def test_encoding_options_resolve_the_device_defaults(loaded):
    options = encoding_options(loaded, max_length=64, long_text="chunk", stride=4, precision="float32", batch_size=3,
                               token_budget=None, attention="auto")
    assert type(options.runtime) is TorchPadded and options.runtime.loaded is loaded  # a CPU: padded
    assert dataclasses.replace(options, runtime=None) == EncodingOptions(64, "chunk", 4, "float32", 3, 2048, None)
    packed = encoding_options(loaded, max_length=64, long_text="chunk", stride=4, precision="auto", batch_size=None,
                              token_budget=99, attention="packed")
    assert packed.stored == "float16" and packed.token_budget == 99 and type(packed.runtime) is TorchPacked


def test_the_fingerprint_changes_with_what_changes_numbers_and_nothing_else(loaded):
    base = EncodingOptions(**BASE, runtime=TorchPadded(loaded))
    same = numbers_fingerprint(loaded, base)
    for change in ({"batch_size": 2}, {"token_budget": 64}, {"runtime": TorchPacked(loaded)}, {"stride": 3}):
        assert numbers_fingerprint(loaded, dataclasses.replace(base, **change)) == same, change
    for change in ({"max_length": 16}, {"long_text": "head_tail"}, {"stored": "float32"}, {"long_text": "chunk"},
                   {"runtime": OpenVINO(loaded)}):
        assert numbers_fingerprint(loaded, dataclasses.replace(base, **change)) != same, change
    chunk = dataclasses.replace(base, long_text="chunk")
    assert numbers_fingerprint(loaded, chunk) != numbers_fingerprint(loaded, dataclasses.replace(chunk, stride=3))


def test_a_stride_only_change_is_served_from_the_cache_and_warns_that_it_does_nothing(tiny_bert):
    first = BertEmbedder(tiny_bert).fit(TEXTS)
    want = first.transform(TEXTS)
    with pytest.warns(UserWarning, match=r"stride=8 has no effect with long_text='truncate'"):
        strided = BertEmbedder(tiny_bert, stride=8).fit(TEXTS)
    got, report = strided.transform_with_report(TEXTS)
    assert report.n_encoded == 0 and report.n_cache_hits == len(set(TEXTS))
    assert (got == want).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under chunk, stride is used: no warning
        BertEmbedder(tiny_bert, stride=8, long_text="chunk").fit(TEXTS)


@pytest.mark.parametrize("params, message", [
    (dict(include_special_tokens=True, pooling="cls"), "include_special_tokens=True has no effect"),
    (dict(cache=None, cache_disk_bytes=10**6), "cache_disk_bytes has no effect with cache=None"),
])
def test_other_parameters_without_effect_warn_at_fit(tiny_bert, params, message):
    with pytest.warns(UserWarning, match=message):
        BertEmbedder(tiny_bert, **params).fit(["a"])

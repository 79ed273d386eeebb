import numpy as np
import pytest
from numpy.testing import assert_allclose

from skbert._layers import aggregate_layers, describe_layers, resolve_layers


@pytest.mark.parametrize(
    "spec, expected",
    [
        (-1, (12,)),
        (0, (0,)),
        (12, (12,)),
        (-13, (0,)),
        (np.int64(-2), (11,)),
        ((-1, 0), (12, 0)),
        ([3, -4], (3, 9)),
        ("last", (12,)),
        ("second_to_last", (11,)),
        ("last_four", (9, 10, 11, 12)),
        ("all", tuple(range(13))),
    ],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 12) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        (13, "layer 13 is out of range for a model with 12 encoder layers: use -13..12"),
        (-14, "out of range for a model with 12 encoder layers"),
        ((1, 13), "layer 13 is out of range"),
        ((2, -11), "more than once"),
        ("first", "not a known name"),
        (1.0, "expected an int"),
        (False, "expected an int"),
        ((1.5,), "1.5 is not an int"),
    ],
)
def test_resolve_layers_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_layers(spec, 12)


def test_aggregate_layers():
    per_layer = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert_allclose(aggregate_layers(per_layer, "concat")[1], np.arange(12, 24))
    assert_allclose(aggregate_layers(per_layer, "mean"), per_layer.mean(axis=1))
    assert_allclose(aggregate_layers(per_layer, "sum"), per_layer.sum(axis=1))
    assert aggregate_layers(per_layer, "sum").dtype == np.float32
    with pytest.raises(ValueError, match="layer_aggregation='max'"):
        aggregate_layers(per_layer, "max")


def test_describe_layers():
    assert describe_layers((9, 12), "concat") == ["layer9", "layer12"]
    assert describe_layers((9, 12), "mean") == ["layers9+12_mean"]
    assert describe_layers((12,), "sum") == ["layer12"]

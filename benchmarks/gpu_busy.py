"""Is the GPU kept busy? The share of a long ``transform``'s wall time the device spends running something.

What is measured
----------------
One ``transform`` of many distinct texts (a row number in front of each shipped
description), after a warm-up call, under ``torch.profiler`` with CUDA activity: the
union of every device interval (kernels, copies, memsets) that falls within the call,
over the call's wall time (its ``record_function`` range). 1.0 would be a device that
never waits for the host; the target is 0.9 on a long call. Each setting is a fresh
estimator (fitted on one text), both the default ``cache="memory"`` (a cold store: every
pass is computed) and ``cache=None``.

Beside it, for reading a low figure: the call's wall seconds, texts/s, the device
seconds of matrix products (kernels whose names say gemm/matmul, cuBLAS's nvjet and
cutlass kernels) and of attention kernels, and the largest gaps between device work.

On a CPU there are no device intervals: the script runs (the tests run it tiny) and
reports the busy share as not measured.

    python benchmarks/gpu_busy.py [--device cuda] [--models bert-base minilm] [--n 40000] [--kind short]

Writes benchmarks/results/gpu_busy-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import load_texts, markdown_table, model_path, write_results

#: Kernel names that are matrix products (cuBLAS/cuBLASLt, CUTLASS, Hopper's nvjet).
MATMUL_NAMES = ("gemm", "matmul", "nvjet", "cutlass", "addmm")
ATTENTION_NAMES = ("flash", "attention", "fmha", "sdpa", "varlen")
MAX_LENGTH = {"minilm": 256, "bert-base": 512}


def union_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Total length of the union of ``intervals`` (start, end) clipped to ``[start, end]`` (same units)."""
    total, reach = 0.0, start
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, end)
        if b > a:
            total += b - a
            reach = b
    return total


def largest_gaps(intervals: list[tuple[float, float]], start: float, end: float, n: int = 5) -> list[float]:
    """The ``n`` longest stretches of ``[start, end]`` that no interval covers, longest first."""
    gaps, reach = [], start
    for a, b in sorted(intervals):
        if a > reach:
            gaps.append(min(a, end) - reach)
        reach = max(reach, b)
        if reach >= end:
            break
    if reach < end:
        gaps.append(end - reach)
    return sorted((g for g in gaps if g > 0), reverse=True)[:n]


def device_events(profiler) -> list:
    """The profiler's events that ran on the device (kernels, copies, memsets)."""
    from torch.autograd import DeviceType

    # a record_function range is also reported on the device (a user annotation spanning the call's work): not work
    return [e for e in profiler.events()
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]


def profile_call(embedder, texts: list[str], device: str) -> dict:
    """One ``transform`` under the profiler: wall, device-busy share and where the device's time went."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        with record_function("skbert.transform"):
            out = embedder.transform(texts)
            if device == "cuda":
                torch.cuda.synchronize()
        wall = time.perf_counter() - start
    from torch.autograd import DeviceType

    (call,) = [e for e in profiler.events() if e.name == "skbert.transform" and e.device_type == DeviceType.CPU]
    begin, finish = call.time_range.start, call.time_range.end  # microseconds on the profiler's clock
    kernels = device_events(profiler)
    intervals = [(e.time_range.start, e.time_range.end) for e in kernels]
    busy = union_seconds(intervals, begin, finish) / (finish - begin) if kernels else float("nan")

    def seconds(names):
        return sum(e.time_range.elapsed_us() for e in kernels if any(n in e.name.lower() for n in names)) / 1e6

    return {
        "texts": len(texts), "rows_out": int(out.shape[0]), "wall_s": wall, "texts_per_s": len(texts) / wall,
        "device_busy": busy, "device_events": len(kernels),
        "matmul_device_s": seconds(MATMUL_NAMES), "attention_device_s": seconds(ATTENTION_NAMES),
        "largest_gaps_ms": [g / 1e3 for g in largest_gaps(intervals, begin, finish)] if kernels else [],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["bert-base", "minilm"])
    parser.add_argument("--kind", default="short", choices=["short", "long"])
    parser.add_argument("--n", type=int, default=40_000, help="distinct texts in the profiled call")
    parser.add_argument("--name", default="gpu_busy")
    args = parser.parse_args(argv)
    from skbert import BertEmbedder
    from skbert._cache import clear_stores

    texts = load_texts(args.kind, args.n)
    warm = [f"warm-up {k}: " + t for k, t in enumerate(texts[: max(1, args.n // 20)])]
    rows = []
    for name in args.models:
        for cache in ("memory", None):
            embedder = BertEmbedder(model_path(name), pooling="mean", max_length=MAX_LENGTH[name], cache=cache,
                                    device=args.device).fit(["warm"])
            embedder.transform(warm)  # kernels chosen, buffers made, the model's first calls done
            clear_stores()  # the profiled call is a cold one: every text computed
            row = {"model": name, "cache": repr(cache), "kind": args.kind,
                   **profile_call(embedder, texts, args.device), "runtime": embedder.runtime_}
            rows.append(row)
            print(row, flush=True)
    columns = ["model", "cache", "kind", "texts", "wall_s", "texts_per_s", "device_busy", "matmul_device_s",
               "attention_device_s", "largest_gaps_ms", "device_events", "runtime"]
    table = markdown_table(rows, columns, {"wall_s": "{:.3f}", "texts_per_s": "{:,.0f}", "device_busy": "{:.3f}",
                                           "matmul_device_s": "{:.3f}", "attention_device_s": "{:.3f}"})
    notes = (f"\n\n{args.n:,} distinct {args.kind} texts per profiled call (row number + shipped description), after a "
             "warm-up call; device_busy: union of the device's kernels, copies and memsets within the call over its "
             "wall time (torch.profiler), the target 0.9; not measured (nan) without CUDA.")
    write_results(args.name, args.device, {"rows": rows}, table + notes)
    return rows


if __name__ == "__main__":
    main()

"""Cached transform against cold transform, same texts, same estimator settings, one run.

Cold: ``cache=None``. Cached: the same texts again from the in-memory cache, and
from a disk cache with the in-memory copies dropped first (as a new process would
read them).

    python benchmarks/cached.py [--model minilm|bert-base] [--n 2000]

Writes benchmarks/results/cached-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch

from common import load_texts, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")


def best_of(repeats, run):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        best = min(best, time.perf_counter() - start)
    return best, output


def main():
    from skbert import BertEmbedder
    from pathlib import Path

    from skbert._cache import clear_stores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--kind", default="short", choices=["short", "long"])
    args = parser.parse_args()
    texts = load_texts(args.kind, args.n)
    path = model_path(args.model)
    settings = dict(pooling="mean_max", layers="last_four", max_length=256)

    cold = BertEmbedder(path, cache=None, **settings).fit(texts[:1])
    cold.transform(texts[:32])
    cold_s, reference = best_of(1, lambda: cold.transform(texts))

    clear_stores()
    memory = BertEmbedder(path, **settings).fit(texts[:1])
    memory.transform(texts)  # fills the cache
    memory_s, from_memory = best_of(3, lambda: memory.transform(texts))
    assert memory.transform_with_report(texts[:100])[1].n_encoded == 0

    with tempfile.TemporaryDirectory() as directory:
        disk = BertEmbedder(path, cache=Path(directory), **settings).fit(texts[:1])
        disk.transform(texts)
        clear_stores()
        disk_s, from_disk = best_of(1, lambda: disk.transform(texts))
        assert disk.cache_info()["disk_hits"] == len(set(texts)) and disk.cache_info()["misses"] == 0

    rows = [
        {"run": "cold (cache=None)", "seconds": cold_s, "texts_per_s": len(texts) / cold_s, "speedup": 1.0},
        {"run": "cached, memory", "seconds": memory_s, "texts_per_s": len(texts) / memory_s,
         "speedup": cold_s / memory_s,
         "max_abs_diff": float(np.abs(from_memory - reference).max())},
        {"run": "cached, disk (memory dropped)", "seconds": disk_s, "texts_per_s": len(texts) / disk_s,
         "speedup": cold_s / disk_s, "max_abs_diff": float(np.abs(from_disk - reference).max())},
    ]
    table = markdown_table(rows, ["run", "seconds", "texts_per_s", "speedup", "max_abs_diff"])
    note = (f"{len(texts)} {args.kind} texts, model {args.model}, {settings}. Target: cached >= 100x faster than "
            "cold. `max_abs_diff`: largest difference from the cold output.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = write_results(f"cached-{args.model}", device, {"rows": rows, "n_texts": len(texts)}, f"{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {out}")


if __name__ == "__main__":
    main()

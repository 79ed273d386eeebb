"""Compute only what a call needs: ``layers=4`` of a 12-layer model against the all-layer pass, cache=None.

The same texts, the same estimator settings but ``layers``, alternating repeats (these
machines drift); the ratio of the best times is what counts.

    python benchmarks/depth.py [--texts short|long] [--n 200] [--repeats 3]

Writes benchmarks/results/depth-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from common import load_texts, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", default="short", choices=["short", "long"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    from skbert import BertEmbedder

    path = model_path("bert-base")
    texts = load_texts(args.texts, args.n)
    settings = {"layers=-1 (all 12 run)": -1, "layers=4 (4 run)": 4, "layers='last_four'": "last_four",
                "layers=(2, 4)": (2, 4)}
    embedders = {name: BertEmbedder(path, layers=layers, pooling="mean", cache=None, max_length=256,
                                    precision=args.precision).fit(texts[:1]) for name, layers in settings.items()}
    for embedder in embedders.values():
        embedder.transform(texts[:16])  # warm up
    times = {name: [] for name in settings}
    for _ in range(args.repeats):  # alternating: every setting once per round
        for name, embedder in embedders.items():
            start = time.perf_counter()
            embedder.transform(texts)
            times[name].append(time.perf_counter() - start)
    # the cut model's numbers against the same layer read off a pass that runs every layer
    full = BertEmbedder(path, layers=(4, -1), pooling="mean", cache=None, max_length=256,
                        precision=args.precision).fit(texts[:1]).transform(texts)[:, :768]
    cut = embedders["layers=4 (4 run)"].transform(texts)
    cosine = (full * cut).sum(axis=1) / np.linalg.norm(full, axis=1) / np.linalg.norm(cut, axis=1)
    base = min(times["layers=-1 (all 12 run)"])
    rows = [{"setting": name, "n_texts": len(texts), "texts": args.texts, "best_s": min(runs),
             "texts_per_s": len(texts) / min(runs), "speedup_over_all_layers": base / min(runs),
             "runs_s": ", ".join(f"{t:.2f}" for t in runs)} for name, runs in times.items()]
    precision = next(iter(embedders.values())).precision_
    runtime = next(iter(embedders.values())).runtime_
    table = markdown_table(rows, ["setting", "texts", "n_texts", "best_s", "texts_per_s", "speedup_over_all_layers",
                                  "runs_s"])
    note = (f"bert-base-sized random BERT (12 layers, 768 wide), mean pooling, max_length 256, cache=None, "
            f"precision {precision}, runtime {runtime}; {args.repeats} alternating rounds, best of each. layers=4 against hidden state 4 of a "
            f"pass that runs all 12 layers: min cosine {cosine.min():.6f}, max abs difference {np.abs(full - cut).max():.3g}.")
    path = write_results(f"depth-{args.texts}", "cpu", {"rows": rows, "precision": precision, "runtime": runtime, "min_cosine_to_full_pass": float(cosine.min())},
                         f"## Results\n\n{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {path}")


if __name__ == "__main__":
    main()

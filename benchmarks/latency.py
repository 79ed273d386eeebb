"""Single-text ``predict`` of a fitted pipeline: the first call and the steady state, against sentence-transformers.

A ``make_pipeline(BertEmbedder(MiniLM), LogisticRegression())`` fitted on 200 real texts,
then ``predict([text])`` for one new text at a time: the first call after ``fit`` (what
an interactive user waits for) and the median and 90th percentile of the rest, in
rounds that alternate skbert's default (OpenVINO where installed), skbert in torch eager
and sentence-transformers ``encode([text])`` followed by the same classifier.

    python benchmarks/latency.py [--calls 100] [--rounds 5]

Writes benchmarks/results/latency-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd

from common import DATA, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skbert import BertEmbedder

    data = pd.read_csv(DATA)
    train, new = data.iloc[:200], data["text"].iloc[200 : 200 + args.calls + 1].tolist()
    path = model_path("minilm")

    def skbert(runtime):
        os.environ["SKBERT_RUNTIME"] = runtime
        start = time.perf_counter()
        pipe = make_pipeline(BertEmbedder(path, pooling="mean", include_special_tokens=True, max_length=256),
                             LogisticRegression(max_iter=1000)).fit(train["text"], train["section"])
        return pipe, time.perf_counter() - start, pipe[0].runtime_

    runners, fitted, first = {}, {}, {}
    for name, runtime in (("skbert default", "openvino"), ("skbert torch eager", "torch")):
        pipe, seconds, used = skbert(runtime)
        start = time.perf_counter()
        pipe.predict([new[0]])
        first[name] = time.perf_counter() - start
        runners[name] = (pipe.predict, runtime)
        fitted[name] = f"fit {seconds:.1f} s (model loading and runtime setup included), runtime {used}"
    start = time.perf_counter()
    model = SentenceTransformer(path, device="cpu")
    classifier = LogisticRegression(max_iter=1000).fit(model.encode(train["text"].tolist()), train["section"])
    fitted["sentence-transformers"] = f"fit {time.perf_counter() - start:.1f} s"
    start = time.perf_counter()
    classifier.predict(model.encode([new[0]], show_progress_bar=False))
    first["sentence-transformers"] = time.perf_counter() - start
    runners["sentence-transformers"] = (lambda x: classifier.predict(model.encode(x, show_progress_bar=False)), "torch")
    times = {name: [] for name in runners}
    per_round = max(1, args.calls // args.rounds)
    for r in range(args.rounds):
        for name, (predict, runtime) in runners.items():
            os.environ["SKBERT_RUNTIME"] = runtime
            for text in new[1 + r * per_round : 1 + (r + 1) * per_round]:
                start = time.perf_counter()
                predict([text])
                times[name].append(time.perf_counter() - start)
    rows = [{"runner": name, "first_call_ms": 1e3 * first[name], "median_ms": 1e3 * float(np.median(runs)),
             "p90_ms": 1e3 * float(np.percentile(runs, 90)), "calls": len(runs), "setup": fitted[name]}
            for name, runs in times.items()]
    table = markdown_table(rows, list(rows[0]))
    note = (f"all-MiniLM-L6-v2 + LogisticRegression fitted on 200 Debian descriptions; one new description per "
            f"call; {args.rounds} alternating rounds of {per_round} calls per runner.")
    where = write_results("latency", "cpu", {"rows": rows}, f"## Results\n\n{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {where}")


if __name__ == "__main__":
    main()

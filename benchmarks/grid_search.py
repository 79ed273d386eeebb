"""A grid search over pooling x layers x folds costs about one encoding pass.

GridSearchCV(Pipeline(BertEmbedder, LogisticRegression)) over 4 pooling modes x 4
layer specs x 5 folds on the shipped Debian descriptions (labelled by section).
Measured in one run: one cold ``fit_transform`` of all texts (no cache), then the
search with the default in-memory cache, counting the texts the model encodes, then
the classifier alone: the same 80 LogisticRegression fits and scores on the same
folds, on features taken from the cache, timed without skbert.

    python benchmarks/grid_search.py [--model minilm|bert-base] [--n 2318] [--precision auto]

Writes benchmarks/results/grid_search-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from common import DATA, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")

class TimedEmbedder:
    """Adds up the time spent inside BertEmbedder's fit and transform during the search."""

    seconds = 0.0


def timed_embedder_class():
    from skbert import BertEmbedder

    class BertEmbedder(BertEmbedder):  # same name, so the pipeline step is still "bertembedder"
        def fit(self, X, y=None):
            start = time.perf_counter()
            try:
                return super().fit(X, y)
            finally:
                TimedEmbedder.seconds += time.perf_counter() - start

        def transform(self, X):
            start = time.perf_counter()
            try:
                return super().transform(X)
            finally:
                TimedEmbedder.seconds += time.perf_counter() - start

    return BertEmbedder


GRID = {
    "bertembedder__pooling": ["cls", "mean", "max", "mean_max"],
    "bertembedder__layers": [-1, -2, "last_four", 0],
}


def main():
    from skbert import BertEmbedder
    from skbert._cache import clear_stores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--n", type=int, default=2318)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    data = pd.read_csv(DATA).sample(frac=1.0, random_state=0).head(args.n)
    texts, labels = data["text"].tolist(), data["section"].to_numpy()
    path = model_path(args.model)
    settings = dict(max_length=256, layer_aggregation="mean", device=args.device, precision=args.precision)

    cold = BertEmbedder(path, cache=None, **settings)
    cold.fit(texts[:1]).transform(texts[:32])  # load and warm up, outside the timing
    start = time.perf_counter()
    cold.fit_transform(texts)
    cold_seconds = time.perf_counter() - start

    clear_stores()
    embedder = timed_embedder_class()(path, **settings)
    encoded_before = embedder.cache_info()["n_encoded"]
    folds = StratifiedKFold(5)  # what cv=5 means for a classifier
    search = GridSearchCV(make_pipeline(embedder, LogisticRegression(max_iter=300)), GRID, cv=folds, n_jobs=1)
    start = time.perf_counter()
    search.fit(texts, labels)
    grid_seconds = time.perf_counter() - start
    encoded = embedder.cache_info()["n_encoded"] - encoded_before
    n_fits = len(search.cv_results_["params"]) * 5

    # the classifier alone: the same fits and scores on the same folds, features from the cache
    classifier_seconds = 0.0
    for params, searched in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
        features = BertEmbedder(path, **settings).set_params(
            **{k.removeprefix("bertembedder__"): v for k, v in params.items()}).fit_transform(texts)
        start = time.perf_counter()
        scores = cross_val_score(LogisticRegression(max_iter=300), features, labels, cv=folds)
        classifier_seconds += time.perf_counter() - start
        assert np.isclose(scores.mean(), searched), (params, scores.mean(), searched)  # the same fits

    results = pd.DataFrame(search.cv_results_)[["param_bertembedder__pooling", "param_bertembedder__layers",
                                               "mean_test_score"]]
    results.columns = ["pooling", "layers", "accuracy"]
    summary = {
        "model": args.model, "device": str(embedder._load().device), "precision": cold.precision_,
        "n_texts": len(texts),
        "unique_texts": len(set(texts)), "grid_points": len(search.cv_results_["params"]), "folds": 5,
        "texts_encoded_by_search": encoded, "texts_encoded_without_cache": n_fits * len(texts),
        "cold_fit_transform_s": cold_seconds, "grid_search_s": grid_seconds,
        "grid_over_cold": grid_seconds / cold_seconds,
        "skbert_s_in_search": TimedEmbedder.seconds,
        "skbert_in_search_over_cold": TimedEmbedder.seconds / cold_seconds,
        "classifier_and_rest_s": grid_seconds - TimedEmbedder.seconds,
        "classifier_alone_s": classifier_seconds,
        "classifier_alone_over_cold": classifier_seconds / cold_seconds,
        "grid_minus_classifier_over_cold": (grid_seconds - classifier_seconds) / cold_seconds,
        "best": str(search.best_params_),
        "best_accuracy": search.best_score_,
    }
    lines = [f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in summary.items()]
    table = markdown_table(results.sort_values("accuracy", ascending=False).to_dict("records"),
                           ["pooling", "layers", "accuracy"])
    note = ("Targets: every unique text encoded exactly once (`texts_encoded_by_search` = `unique_texts`), and "
            "`grid_over_cold` <= 2. `skbert_s_in_search` is the time spent inside BertEmbedder.fit/transform "
            "during the search (the one encoding pass plus pooling from the cache at every fit); the rest is "
            "LogisticRegression and scikit-learn. `classifier_alone_s` is measured separately in the same run: the "
            "same 80 LogisticRegression fits and scores on the same folds and the same features (their scores are "
            "checked equal to the search's), without skbert; `grid_minus_classifier_over_cold` is what the search "
            "costs beyond them, over one cold pass. `texts_encoded_without_cache` is computed, not measured: what "
            "re-encoding train and test texts at every fit would cost.")
    body = "## Summary\n\n" + "\n".join(lines) + f"\n\n{note}\n\n## 5-fold accuracy per grid point\n\n{table}"
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    path = write_results(f"grid_search-{args.model}", device, {"summary": summary, "cv": results.to_dict("records")},
                         body)
    print(body + f"\n\nwritten to {path}")


if __name__ == "__main__":
    main()

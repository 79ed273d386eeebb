"""Does this description belong to this package? Sentence pairs against encoding each side alone.

Real text nobody here wrote: the shipped Debian package descriptions (data/). Each
package's one-line synopsis is paired with its own long description (a match) and
with the long description of another package from the same Debian section (a
mismatch, so the topic alone does not give it away). A LogisticRegression learns to
tell them apart from:

- pair encoding: BertEmbedder(pairs=True) reads "[CLS] synopsis [SEP] description [SEP]",
  so each side attends to the other; pooled over the whole pair (cls, mean, max), or
  per side and compared (segments abs_diff and product: |a - b| and a * b of the
  sides' mean vectors), or the cosine similarity of the sides' mean vectors alone;
- each side alone: the synopsis and the description encoded separately, then the same
  comparison (|a - b| and a * b), and their cosine similarity alone;

for several layers. Folds are grouped by package, so no synopsis is seen in training
and testing. Every configuration reuses one encoding pass (the cache).

Run:  python examples/pair_matching.py [--packages 1000] [--model sentence-transformers/all-MiniLM-L6-v2]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skbert import BertEmbedder

DATA = Path(__file__).resolve().parent.parent / "data" / "debian_descriptions.csv.gz"
LAYERS = [2, 4, -1, "last_four"]


def load_pairs(n_packages: int, seed: int = 0) -> pd.DataFrame:
    """Matching and mismatched (synopsis, description) pairs, one of each per package.

    The shipped text is "synopsis. description"; it is split at the first ". ", which
    cuts a few synopses that hold ". " themselves (their rest stays in the description).
    """
    frame = pd.read_csv(DATA)
    parts = frame["text"].str.split(". ", n=1, regex=False)
    frame = frame.assign(synopsis=parts.str[0], description=parts.str[1]).dropna(subset=["description"])
    frame = frame.sample(n=min(n_packages, len(frame)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    other = np.empty(len(frame), dtype=np.int64)
    for rows in frame.groupby("section").indices.values():  # a mismatch from the same section
        order = rng.permutation(rows)
        other[order] = np.roll(order, 1)  # a cycle through a shuffled section: never the package itself
    matched = frame.assign(label=1)
    mismatched = frame.assign(description=frame["description"].to_numpy()[other], label=0)
    return pd.concat([matched, mismatched], ignore_index=True)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def score(features: np.ndarray, labels, groups) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    return cross_val_score(model, features, labels, groups=groups, cv=GroupKFold(n_splits=5)).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # long descriptions are truncated at --max-length, as intended

    pairs = load_pairs(args.packages)
    y, groups = pairs["label"].to_numpy(), pairs["package"].to_numpy()
    sides = pairs[["synopsis", "description"]]
    print(f"{len(pairs)} pairs from {pairs['package'].nunique()} packages ({y.mean():.0%} matching); "
          f"model {args.model}, max_length {args.max_length}, 5-fold CV grouped by package")

    start = time.perf_counter()
    results = {}
    common = dict(max_length=args.max_length, precision="float32")
    for layers in LAYERS:
        row = results.setdefault(str(layers), {})
        pair = BertEmbedder(args.model, pairs=True, layers=layers, layer_aggregation="mean", **common)
        for pooling in ("cls", "mean", "max"):  # fit checks the settings; the encoding is cached
            row[f"pair: {pooling}"] = score(pair.set_params(pooling=pooling).fit_transform(sides), y, groups)
        compared = pair.set_params(pooling="mean", segments=("abs_diff", "product")).fit_transform(sides)
        row["pair: abs_diff, product"] = score(compared, y, groups)
        side_a, side_b = np.split(pair.set_params(segments=("a", "b")).fit_transform(sides), 2, axis=1)
        row["pair: cosine"] = score(cosine(side_a, side_b)[:, None], y, groups)
        alone = BertEmbedder(args.model, pooling="mean", layers=layers, layer_aggregation="mean", **common)
        a, b = alone.fit_transform(sides["synopsis"]), alone.transform(sides["description"])
        row["apart: abs_diff, product"] = score(np.hstack([np.abs(a - b), a * b]), y, groups)
        row["apart: cosine"] = score(cosine(a, b)[:, None], y, groups)
    table = pd.DataFrame(results).T
    table.index.name = "layers"
    print(f"accuracy (encoding and fitting took {time.perf_counter() - start:.0f} s):")
    header = "| layers | " + " | ".join(table.columns) + " |"
    print("\n".join([header, "|" + " --- |" * (len(table.columns) + 1)] + [
        f"| {layers} | " + " | ".join(f"{value:.3f}" for value in row) + " |" for layers, row in table.iterrows()
    ]))


if __name__ == "__main__":
    main()

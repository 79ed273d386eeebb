"""An independent computation of BERT embeddings, one text at a time with numpy.

It loads the model through transformers directly (not through skbert), runs each
text alone (no padding), and pools with plain numpy loops.
"""

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer


class Reference:
    def __init__(self, path):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.n_layers = self.model.config.num_hidden_layers

    def token_states(self, text, max_length=None):
        """Hidden states (n_layers + 1, t, d), special mask (t,), pooler (d,) or None."""
        enc = self.tokenizer(
            text, truncation=max_length is not None, max_length=max_length, return_special_tokens_mask=True
        )
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            out = self.model(input_ids=ids, output_hidden_states=True)
        states = np.stack([h[0].numpy().astype(np.float64) for h in out.hidden_states])
        pooler = getattr(out, "pooler_output", None)
        pooler = None if pooler is None else pooler[0].numpy().astype(np.float64)
        return states, np.array(enc["special_tokens_mask"], dtype=bool), pooler

    def pool_one_layer(self, states_l, special, mode, include_special):
        t, d = states_l.shape
        if mode == "cls":
            return states_l[0]
        if mode == "last":
            return states_l[t - 1]
        keep = [i for i in range(t) if include_special or not special[i]]
        if not keep:  # an empty text: only [CLS] and [SEP]
            keep = list(range(t))
        if mode == "mean":
            total = np.zeros(d)
            for i in keep:
                total += states_l[i]
            return total / len(keep)
        if mode == "max":
            best = np.full(d, -np.inf)
            for i in keep:
                best = np.maximum(best, states_l[i])
            return best
        raise ValueError(mode)

    def embed(self, text, modes, layer_indices, aggregation="concat", include_special=False, max_length=None):
        states, special, pooler = self.token_states(text, max_length)
        blocks = []
        for mode in modes:
            if mode == "pooler":
                blocks.append(pooler)
                continue
            per_layer = [self.pool_one_layer(states[l], special, mode, include_special) for l in layer_indices]
            if aggregation == "concat":
                blocks.append(np.concatenate(per_layer))
            elif aggregation == "mean":
                blocks.append(np.mean(per_layer, axis=0))
            else:
                blocks.append(np.sum(per_layer, axis=0))
        return np.concatenate(blocks)

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


class PairReference(Reference):
    """Sentence pairs, one at a time: the tokenizer's own pair encoding and truncation, token types
    passed to the model, and each side told apart by its token type."""

    def pair_states(self, a, b, max_length=None):
        """Hidden states (n_layers + 1, t, d), special mask (t,), token types (t,)."""
        enc = self.tokenizer(  # the batched call: a one-pair call with b == "" drops the empty side
            [a], [b], truncation="longest_first" if max_length else False, max_length=max_length,
            return_special_tokens_mask=True, return_token_type_ids=True,
        )
        ids = torch.tensor(enc["input_ids"])
        with torch.no_grad():
            out = self.model(input_ids=ids, token_type_ids=torch.tensor(enc["token_type_ids"]), output_hidden_states=True)
        states = np.stack([h[0].numpy().astype(np.float64) for h in out.hidden_states])
        return states, np.array(enc["special_tokens_mask"][0], dtype=bool), np.array(enc["token_type_ids"][0])

    def side(self, states_l, special, types, side, mode, include_special):
        """Mean or max over one side's tokens; its special tokens are the [SEP] (or [CLS]) around it."""
        t = len(types)
        middle = [i for i in range(t) if special[i] and types[i] == 0][-1]
        bracket = [0, middle] if side == 0 else [middle, t - 1]
        own = [i for i in range(t) if types[i] == side and not special[i]]
        keep = own + bracket if include_special or not own else own
        rows = states_l[keep]
        return rows.mean(0) if mode == "mean" else rows.max(0)

    def embed_pair(self, a, b, modes, layer_indices, segments=("joint",), include_special=False, max_length=None):
        states, special, types = self.pair_states(a, b, max_length)
        blocks = []
        for segment in segments:
            for mode in modes:
                if segment == "joint":
                    per_layer = [self.pool_one_layer(states[l], special, mode, include_special) for l in layer_indices]
                    blocks.append(np.concatenate(per_layer))
                    continue
                sides = [
                    np.concatenate([self.side(states[l], special, types, s, mode, include_special)
                                    for l in layer_indices])
                    for s in (0, 1)
                ]
                blocks.append({"a": sides[0], "b": sides[1], "abs_diff": np.abs(sides[0] - sides[1]),
                               "product": sides[0] * sides[1]}[segment])
        return np.concatenate(blocks)

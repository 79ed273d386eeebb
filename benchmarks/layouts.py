"""Packed or padded: what one batch costs each way, as its padding grows. The data for ``attention="auto"``'s choice.

What is measured
----------------
One batch of windows, the same windows both ways, through skbert's own batch path
(:func:`skbert._encoding.run_batches`: the runtime makes the batch, copies it to the
device, runs the forward and reduces the hidden states to the statistics that mean
pooling of the last layer needs, ``cache=None``'s work; or to every kind of every
hidden state, the default cache's, with ``--all-layers``), and the copy back:

- ``packed``: :class:`~skbert._runtimes.TorchPacked`, one row of real tokens, the
  variable-length attention kernel (a batch without padding runs padded: p = 0);
- ``padded``: :class:`~skbert._runtimes.TorchPadded`, rows padded to the longest, with
  the padding mask SDPA takes.

A batch holds ``--tokens`` real tokens (the GPU's token budget) of windows whose
lengths are spread evenly below the longest, ``L``, so that padding them to ``L``
adds a share ``p`` of padding: lengths from ``L - 2pL`` to ``L``. ``p`` = 0 is a batch
of one length (sorted long texts cut into full windows); sorted short texts carry
about 0.07, long ones 0.01; an unsorted batch of short texts 0.4. Each (model, L, p)
times both layouts alternately, ``--repeats`` rounds after a warm-up, the device
synchronised around each batch; the best round counts. Random weights of bert-base's
and MiniLM's shapes (the cost is the shape's, not the weights'), bfloat16 on a GPU.

"packed/padded" below 1 says packing pays at that padding; the smallest ``p`` from
which it pays is what ``auto`` would use. On a CPU the script runs (the tests run it
tiny) through the per-window fallback of the packed attention: not a GPU's costs.

    python benchmarks/layouts.py [--device cuda] [--models bert-base minilm] [--lengths 64 512] [--all-layers]

Writes benchmarks/results/layouts-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import markdown_table, model_path, write_results

PADDING_SHARES = (0.0, 0.02, 0.07, 0.15, 0.3, 0.45)
GPU_TOKEN_BUDGET = 65_536


def spread_lengths(longest: int, share: float, tokens: int) -> np.ndarray:
    """Window lengths (special tokens included) evenly spread from ``longest - 2 * share * longest`` to ``longest``,
    about ``tokens`` of them in all, longest first: padded to ``longest`` they carry a share ``share`` of padding."""
    shortest = max(3, round(longest * (1 - 2 * share)))
    rows = max(1, round(tokens / ((longest + shortest) / 2)))
    return np.sort(np.linspace(shortest, longest, rows).round().astype(np.int64))[::-1]


def padding_share(lengths: np.ndarray) -> float:
    return 1 - lengths.sum() / (len(lengths) * lengths.max())


def synthetic_windows(lengths: np.ndarray, vocab_size: int, cls_id: int, sep_id: int, seed: int = 0):
    """Tokenised texts of exactly these lengths ([CLS], random word pieces from the upper half of the vocabulary,
    [SEP]) and their one window each."""
    from skbert._batching import TokenizedText, make_windows

    rng = np.random.default_rng(seed)
    tokenized = []
    for length in lengths:
        ids = rng.integers(vocab_size // 2, vocab_size, int(length))  # ordinary word pieces: no special ids
        ids[0], ids[-1] = cls_id, sep_id
        special = np.zeros(int(length), dtype=bool)
        special[[0, -1]] = True
        tokenized.append(TokenizedText(ids, special, None))
    windows = make_windows(tokenized, int(lengths.max()), "truncate", 0)
    return tokenized, windows


def reduction(loaded, all_layers: bool):
    """What a batch is reduced to on the device: mean pooling's statistics of the last layer (cache=None), or every
    kind of every hidden state in float16 (the default cache's)."""
    from skbert._statistics import KINDS, window_statistics

    layers = tuple(range(loaded.n_layers + 1)) if all_layers else (loaded.n_layers,)
    kinds = KINDS if all_layers else ("cls", "last", "mean")
    shipped = torch.float16 if all_layers else torch.float32

    def reduce(states, batch):
        return window_statistics((states[i] for i in layers), batch.attention_mask, batch.content_mask, kinds,
                                 batch.bounds, dtype=shipped, check=all_layers)

    return reduce


def time_batch(loaded, runtime, tokenized, windows, reduce, transfers) -> float:
    """Seconds of one batch, from making it to its statistics on the host."""
    from skbert._encoding import EncodingReport, run_batches

    synchronize = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _, copies in run_batches(loaded, runtime, tokenized, windows, reduce, EncodingReport(),
                                 transfers=transfers):
        copies.result()
    synchronize()
    return time.perf_counter() - start


def sweep(name: str, path: str, device: str, lengths: list[int], shares, tokens: int, repeats: int,
          all_layers: bool) -> list[dict]:
    from skbert._models import load_model
    from skbert._runtimes import TorchPacked, TorchPadded
    from skbert._transfer import Transfers

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    loaded = load_model(path, None, torch.device(device), dtype)
    tokenizer = loaded.tokenizer
    runtimes = {"packed": TorchPacked(loaded), "padded": TorchPadded(loaded)}
    reduce = reduction(loaded, all_layers)
    transfers = Transfers.for_device(loaded.device)
    rows = []
    for longest in lengths:
        for share in shares:
            spread = spread_lengths(longest, share, tokens)
            tokenized, windows = synthetic_windows(spread, tokenizer.vocab_size, tokenizer.cls_token_id,
                                                   tokenizer.sep_token_id)
            seconds = {layout: [] for layout in runtimes}
            with torch.inference_mode():
                for layout, runtime in runtimes.items():  # warm-up: kernels chosen, buffers grown
                    time_batch(loaded, runtime, tokenized, windows, reduce, transfers)
                for _ in range(repeats):  # alternating: every layout once per round
                    for layout, runtime in runtimes.items():
                        seconds[layout].append(time_batch(loaded, runtime, tokenized, windows, reduce, transfers))
            packed, padded = min(seconds["packed"]), min(seconds["padded"])
            rows.append({
                "model": name, "longest": longest, "padding_share": padding_share(spread), "rows": len(spread),
                "real_tokens": int(spread.sum()), "packed_ms": 1e3 * packed, "padded_ms": 1e3 * padded,
                "packed_over_padded": packed / padded, "packed_tokens_per_s": spread.sum() / packed,
                "padded_tokens_per_s": spread.sum() / padded,
                "rounds_ms": {layout: [round(1e3 * s, 3) for s in values] for layout, values in seconds.items()},
            })
            print(f"{name} L={longest} p={rows[-1]['padding_share']:.3f}: packed {rows[-1]['packed_ms']:.2f} ms, "
                  f"padded {rows[-1]['padded_ms']:.2f} ms, packed/padded {rows[-1]['packed_over_padded']:.3f}",
                  flush=True)
    return rows


def crossover(rows: list[dict]) -> list[dict]:
    """Per (model, L): the smallest padding share from which packed was faster at every larger share measured."""
    out = []
    for key in dict.fromkeys((row["model"], row["longest"]) for row in rows):
        group = sorted((row for row in rows if (row["model"], row["longest"]) == key),
                       key=lambda row: row["padding_share"])
        pays = None
        for row in reversed(group):
            if row["packed_over_padded"] >= 1:
                break
            pays = row["padding_share"]
        out.append({"model": key[0], "longest": key[1], "packed_pays_from_share": pays})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["bert-base", "minilm"])
    parser.add_argument("--model-path", default=None, help="a model folder instead of --models (the tests' tiny one)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 256, 512],
                        help="longest window of a batch (short texts: 64; long: 256, 512)")
    parser.add_argument("--shares", nargs="+", type=float, default=list(PADDING_SHARES))
    parser.add_argument("--tokens", type=int, default=GPU_TOKEN_BUDGET, help="real tokens a batch holds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-layers", action="store_true",
                        help="reduce to every kind of every hidden state (the default cache's work)")
    args = parser.parse_args(argv)
    targets = {"model": args.model_path} if args.model_path else {name: model_path(name) for name in args.models}
    rows = []
    for name, path in targets.items():
        rows += sweep(name, path, args.device, args.lengths, args.shares, args.tokens, args.repeats, args.all_layers)
    decisions = crossover(rows)
    text = "\n\n".join([
        "## One batch, packed against padded\n\n" + markdown_table(
            rows, ["model", "longest", "padding_share", "rows", "real_tokens", "packed_ms", "padded_ms",
                   "packed_over_padded", "packed_tokens_per_s", "padded_tokens_per_s"],
            {"padding_share": "{:.3f}", "packed_ms": "{:.2f}", "padded_ms": "{:.2f}", "packed_over_padded": "{:.3f}"}),
        "## Where packing pays\n\n" + markdown_table(decisions, ["model", "longest", "packed_pays_from_share"]),
        f"{args.tokens:,} real tokens a batch; reduced to {'every kind of every hidden state, float16' if args.all_layers else 'mean pooling of the last layer'}; "
        f"{args.repeats} alternating rounds after a warm-up, the best of each; the device synchronised around "
        "each batch (its making, copies both ways and the host's wait included).",
    ])
    suffix = "-all-layers" if args.all_layers else ""
    path = write_results(f"layouts{suffix}", args.device,
                         {"rows": rows, "crossover": decisions, "tokens": args.tokens, "repeats": args.repeats,
                          "all_layers": args.all_layers}, text)
    print(text + f"\n\nwritten to {path}")


if __name__ == "__main__":
    main()

"""Can one CPU core keep a GPU fed? The host's side of ``transform``, with the device's work taken out.

What is measured
----------------
Texts per second on one core (texts over the host's CPU seconds, with one torch
thread and the tokenizer in this thread; wall seconds beside them) of everything the
host does per text in skbert's own code path (``BertEmbedder.transform``, unchanged),
with the device's part costing nothing, as if the GPU were infinitely fast:

- input checks and deduplication;
- tokenisation (the real fast tokenizer, one thread), windows, length-sorted batches;
- batch making (``runtime.batch``: packed batches, as ``attention="auto"`` makes on a
  GPU, or padded with ``--layout padded``) and its copy into the staging buffers that
  ``Transfers`` reuses on a CUDA device;
- the device-to-host copy's host side: the copy of each batch's result out of the
  reused staging buffer (:meth:`PendingCopy.result`), as on a CUDA device;
- statistics finishing (the statistics come finished from the device, in the dtype
  they are kept in: what is left is :class:`Statistics` per batch, and
  ``finish_texts`` combining the windows of long texts);
- with ``cache="memory"`` (the default): keys, look-ups, entries (whole texts' arrays
  kept as shipped, float16, checked on the device), the memory tier's ``put``;
- pooling (:meth:`PoolingSpec.pool`) into the output array.

The device's part is replaced by stand-ins whose time is measured and subtracted
(reported as "device stand-in"): the forward (:class:`StandInRuntime` hands back
zero-cost tensors of the hidden states' shapes, ``n_layers + 1`` of
``(rows, longest, d)``), the reduction to per-layer statistics and the pooler
(:class:`StandInReduction` hands back a tensor of the real result's shape, found by
running the real reduction on one row per call), and the copies' device side
(:class:`HostSideOps`: the host-to-device and device-to-host copies are a copy
engine's work; the buffers the host reads are real memory, filled with synthetic
statistics when they are made, once per call). The model has no weights at all (built on torch's meta
device, with bert-base's and MiniLM's real configurations), and the real tokenizer:
bert-base-uncased and all-MiniLM-L6-v2 share one WordPiece vocabulary.

Texts are the shipped short descriptions, each prefixed with its row number so that
every text is distinct (skbert encodes a repeated text once). ``cache="memory"``
passes start from an empty store and stay within its memory budget (nothing is
spilled to disk: the "evicted" column says so); ``cache=None`` computes only what the
pooling needs. Settings are those of a GPU run: the GPU's token budget (65,536
tokens a batch), float16 entries, mean pooling of the last layer.

What is not measured
--------------------
CUDA's own host costs: kernel launches of the forward and the reduction (per batch,
not per text), pinning the staging buffers (once per call, per buffer), waiting on
events; tokenising the next chunk in a background thread (on a GPU it overlaps the
device's work; here it runs in line, and one core does all of it either way); a
working set beyond ``cache_memory_bytes`` (2 GiB: about 26,000 bert-base texts with
every hidden state), which spills to a disk tier. The targets are what a GPU is
expected to encode: 40,000 bert-base texts/s (every hidden state's statistics, the
cached default) and 100,000 MiniLM texts/s.

    python benchmarks/host_pipeline.py [--quick] [--n 20000] [--repeats 5] [--layout packed|padded]

Writes benchmarks/results/host_pipeline-cpu.{json,md} (``--quick``: host_pipeline-quick-cpu).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: the tokenizer's batches run in this thread
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import argparse
import gc
import hashlib
import statistics
import time
import warnings
from collections import defaultdict
from contextlib import ExitStack
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
from common import MINILM, distinct_texts, markdown_table, write_results

warnings.filterwarnings("ignore")

#: Per model: the name the estimator is given, and the texts/s a GPU is expected to reach.
MODELS = {"bert-base": ("bert-base-uncased", 40_000), "minilm": (MINILM, 100_000)}
GPU_TOKEN_BUDGET = 65_536  # skbert._device.default_token_budget on a CUDA device
DEVICE = "device stand-in (not counted)"
STAGES = ("input + dedupe", "tokenise + plan", "batch making", "copy to host", "statistics finishing",
          "cache entries + store", "pooling", "other (transform's glue)")
#: Everything after the forward: what must keep up with the device whatever runs before it (on a GPU machine,
#: tokenising runs in a background thread over the machine's cores).
AFTER_FORWARD = ("copy to host", "statistics finishing", "cache entries + store", "pooling")


class StageClock:
    """Exclusive CPU and wall seconds per (stage, function): a function's time leaves out that of the timed
    functions it calls.

    Wrapped functions run per chunk or per batch, not per text, so the clock costs
    microseconds per batch of over a thousand texts.
    """

    def __init__(self):
        self.cpu = defaultdict(float)
        self.wall = defaultdict(float)
        self.calls = defaultdict(int)
        self._stack = []

    def reset(self):
        for totals in (self.cpu, self.wall, self.calls):
            totals.clear()

    def enter(self, label):
        cpu, wall = time.process_time(), time.perf_counter()
        if self._stack:
            self._add(self._stack[-1], cpu, wall)
        self._stack.append([label, cpu, wall])
        self.calls[label] += 1

    def leave(self):
        cpu, wall = time.process_time(), time.perf_counter()
        self._add(self._stack.pop(), cpu, wall)
        if self._stack:
            self._stack[-1][1:] = cpu, wall

    def _add(self, entry, cpu, wall):
        label, cpu_start, wall_start = entry
        self.cpu[label] += cpu - cpu_start
        self.wall[label] += wall - wall_start

    def timed(self, stage, function, name=None):
        """``function``, its calls timed under ``stage``."""
        label = (stage, name or function.__name__)

        def timed(*args, **kwargs):
            self.enter(label)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        return timed

    def timed_steps(self, stage, function, name=None):
        """A generator function, each of its steps timed under ``stage`` (not the consumer's work between them)."""
        label = (stage, name or function.__name__)

        def timed(*args, **kwargs):
            iterator = function(*args, **kwargs)
            try:
                while True:
                    self.enter(label)
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    finally:
                        self.leave()
                    yield item
            finally:
                self.enter(label)
                try:
                    iterator.close()
                finally:
                    self.leave()

        return timed

    def stage_seconds(self, stage: str, clock: str = "cpu") -> float:
        return sum(seconds for (name, _), seconds in getattr(self, clock).items() if name == stage)


CLOCK = StageClock()


class _Done:
    """An event that has already happened."""

    @staticmethod
    def synchronize():
        pass


class HostSideOps:
    """:class:`skbert._transfer.CudaOps` with the device's side taken out.

    ``Transfers`` runs its CUDA path through it: the host's staging copies and the copy
    of each result out of the reused buffer are real; the copies between host and
    device (a copy engine's work) are skipped. A device-to-host buffer holds synthetic
    statistics, written once when it is made (timed as the device stand-in), so the
    host reads real memory, as it reads what the copy engine wrote.
    """

    PERIOD = 4099  # the synthetic values repeat with this period (a prime: no alignment with rows)

    def __init__(self):
        self.pattern = torch.randn(self.PERIOD, generator=torch.Generator().manual_seed(0))

    def pinned(self, numel, dtype):
        CLOCK.enter((DEVICE, "staging buffer made and filled"))
        try:
            buffer = torch.empty(numel, dtype=dtype)
            if dtype.is_floating_point:
                whole = numel // self.PERIOD * self.PERIOD
                buffer[:whole].view(-1, self.PERIOD).copy_(self.pattern.to(dtype))
                buffer[whole:] = self.pattern[: numel - whole].to(dtype)
            else:
                buffer.zero_()
            return buffer
        finally:
            CLOCK.leave()

    def to_device(self, staged):
        return staged

    def record(self):
        return _Done

    def copy_to_host(self, source, target):
        """Skipped for the statistics' zero-stride stand-ins (the buffer holds synthetic values); ``extras`` copied."""
        if all(stride for stride in source.stride()):
            CLOCK.enter((DEVICE, "copy engine (extras)"))
            try:
                target.copy_(source)
            finally:
                CLOCK.leave()
        return _Done


def host_side_transfers():
    """``Transfers`` as on a CUDA device, through :class:`HostSideOps`."""
    from skbert._transfer import Transfers

    class HostSideTransfers(Transfers):
        @classmethod
        def for_device(cls, device):
            return cls(device, HostSideOps())

        to_device = CLOCK.timed("batch making", Transfers.to_device, "Transfers.to_device (staging copies)")

    return HostSideTransfers


def stand_in_runtime(layout: str):
    """The runtime class: the real one's batches (packed or padded), a forward that costs nothing."""
    from skbert._runtimes import TorchPacked, TorchPadded

    base = TorchPacked if layout == "packed" else TorchPadded

    class StandInRuntime(base):
        batch = CLOCK.timed("batch making", base.batch, f"{base.__name__}.batch ({layout})")

        def hidden_states(self, batch, depth):
            """``depth + 1`` hidden states of the batch's padded shape, costing nothing (never read)."""
            CLOCK.enter((DEVICE, "forward"))
            try:
                n, longest = batch.attention_mask.shape
                depth = self.loaded.n_layers if depth is None else depth
                state = torch.zeros((), dtype=self.loaded.dtype).expand(n, longest, self.loaded.hidden_size)
                return (state,) * (depth + 1)
            finally:
                CLOCK.leave()

    return StandInRuntime


class StandInReduction:
    """A call's ``reduce`` (statistics and pooler, device work on a GPU), replaced by tensors of its results' shapes.

    The real reduction runs once per call, on the first row of its first batch, for
    the shapes and dtypes of what it hands back: the statistics (and the pooler), in
    the dtype they are shipped in, and the small ``extras`` array (content tokens per
    segment, the overflow flag). The statistics are zero-stride stand-ins whose copy
    to the host is skipped (the host then reads what :class:`HostSideOps`'s buffer
    holds); ``extras`` is computed for real (the content counts the host relies on;
    no overflow) and copied, a few bytes a row.
    """

    def __init__(self, reduce):
        self.reduce = reduce
        self.shapes = None

    def __call__(self, states, batch):
        CLOCK.enter((DEVICE, "reduction"))
        try:
            if self.shapes is None:
                one_row = SimpleNamespace(attention_mask=batch.attention_mask[:1], content_mask=batch.content_mask[:1],
                                          bounds=None if batch.bounds is None else batch.bounds[:1])
                self.shapes = [(out.shape[1:], out.dtype)
                               for out in self.reduce([state[:1] for state in states], one_row)]
            n = batch.attention_mask.shape[0]
            real = batch.attention_mask.bool()
            n_segments = self.shapes[1][0][0] - 1
            extras = torch.zeros((n, n_segments + 1), dtype=torch.float32)
            for segment in range(n_segments):
                extras[:, segment] = ((batch.content_mask == segment + 1) & real).sum(dim=1)
            outputs = [torch.zeros((), dtype=dtype).expand(n, *shape) for shape, dtype in self.shapes]
            outputs[1] = extras
            return tuple(outputs)
        finally:
            CLOCK.leave()


def weightless_model(name: str):
    """A :class:`~skbert._models.LoadedModel` with the model's real configuration and tokenizer and no weights."""
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

    from skbert._layout import special_layout
    from skbert._models import LoadedModel, _max_positions, resolve_source

    class WeightlessModel(LoadedModel):
        def pooler_output(self, first):  # only the one-row shape probe calls it
            return torch.zeros(len(first), self.hidden_size)

    vocabulary = resolve_source(MINILM).location  # bert-base-uncased's WordPiece vocabulary too
    config = BertConfig() if name == "bert-base" else AutoConfig.from_pretrained(vocabulary)
    tokenizer = AutoTokenizer.from_pretrained(vocabulary)
    with torch.device("meta"):
        model = BertModel(config).eval()
    max_positions, window_limit = _max_positions(config, tokenizer)
    loaded = WeightlessModel(
        model=model, tokenizer=tokenizer, source=resolve_source(MODELS[name][0]), device=torch.device("cpu"),
        dtype=torch.bfloat16, n_layers=config.num_hidden_layers, hidden_size=config.hidden_size, has_pooler=True,
        max_positions=max_positions, layout=special_layout(tokenizer), window_limit=window_limit,
    )
    loaded.derived.fingerprint = hashlib.blake2b(config.to_json_string().encode(), digest_size=32).digest()
    return loaded


def stand_ins(models: dict, layout: str) -> ExitStack:
    """Patch skbert so that ``BertEmbedder`` runs its own host code around the stand-ins, every stage timed."""
    import skbert._cache as cache
    import skbert._embedder as embedder
    import skbert._encoding as encoding
    import skbert._options as options
    import skbert._source as source
    import skbert._spec as spec
    import skbert._transfer as transfer
    from skbert._batching import TextTokenizer

    runtime = stand_in_runtime(layout)
    encoded_windows = encoding._encoded_windows

    def with_stand_in_reduction(loaded, texts, reduce, report, options, **kwargs):
        return encoded_windows(loaded, texts, StandInReduction(reduce), report, options, **kwargs)

    timed = {
        (embedder, "validate_texts"): "input + dedupe",
        (source, "deduplicate"): "input + dedupe",
        (encoding, "make_windows"): "tokenise + plan",
        (encoding, "_check_layout"): "tokenise + plan",
        (encoding, "finish_texts"): "statistics finishing",
        (transfer.PendingCopy, "result"): "copy to host",
        (source, "text_keys"): "cache entries + store",
        (source, "block_from_statistics"): "cache entries + store",
        (source, "non_finite_rows"): "cache entries + store",
        (source, "statistics_from_block"): "cache entries + store",
        (cache.Store, "get_many"): "cache entries + store",
        (cache.Store, "put"): "cache entries + store",
        (cache.Store, "flush"): "cache entries + store",
        (spec.PoolingSpec, "pool"): "pooling",
        (spec.PoolingSpec, "finish"): "pooling",
    }
    stepped = {
        (encoding, "_chunks"): "tokenise + plan",
        (encoding, "length_sorted_batches"): "tokenise + plan",
        (encoding, "run_batches"): "batch making",
        (source, "iter_statistics"): "statistics finishing",
        (source.StatisticsSource, "_cached"): "cache entries + store",
    }
    stack = ExitStack()
    for (owner, name), stage in timed.items():
        stack.enter_context(mock.patch.object(owner, name, CLOCK.timed(stage, getattr(owner, name))))
    for (owner, name), stage in stepped.items():
        stack.enter_context(mock.patch.object(owner, name, CLOCK.timed_steps(stage, getattr(owner, name))))
    stack.enter_context(mock.patch.object(TextTokenizer, "__call__", CLOCK.timed(
        "tokenise + plan", TextTokenizer.__call__, "TextTokenizer.__call__ (the fast tokenizer)")))
    stack.enter_context(mock.patch.object(encoding, "_encoded_windows", CLOCK.timed_steps(
        "tokenise + plan", with_stand_in_reduction, "_encoded_windows (glue)")))
    stack.enter_context(mock.patch.object(encoding, "Transfers", host_side_transfers()))
    stack.enter_context(mock.patch.object(embedder, "load_model", lambda name, *args, **kwargs: models[name]))
    for owner in (embedder, options):
        stack.enter_context(mock.patch.object(owner, "choose_runtime", lambda loaded, *args: runtime(loaded)))
    return stack


def memory_rates(total_bytes: int = 1 << 30, piece: int = 128 << 20, rounds: int = 3, pause: float = 3.0) -> dict:
    """This machine's rate of copying into memory touched for the first time (fresh pages: the kernel's, and on a
    virtual machine the host's, page faults), with one thread and with the threads a many-core machine's copy
    out of a pinned buffer uses (:func:`skbert._transfer.host_copy`), alternating, and into memory already
    touched; in GB/s of wall time, the best round of each. Each first-touch round starts ``pause`` seconds
    after the last freed its memory: a virtual machine that reports free pages to its host gives them back in
    that time, so every round writes memory as cold as a pass's.

    A cold ``cache="memory"`` pass stores every byte it ships in memory never touched before, so its copy
    to the host runs at the first rate, not the last; on some virtual machines the two differ by 20x.
    """
    from skbert._transfer import COPY_THREADS, MAX_COPY_THREADS, host_copy

    source = np.ones(piece // 2, np.float16)
    split = max(2, COPY_THREADS)
    fresh = {1: [], split: []}
    for _ in range(rounds):
        for threads in fresh:
            gc.collect()
            time.sleep(pause)
            kept, start = [], time.perf_counter()
            for _ in range(max(1, total_bytes // piece)):
                kept.append(host_copy(source, threads))
            fresh[threads].append(time.perf_counter() - start)
            del kept
    kept = [np.empty_like(source) for _ in range(max(1, total_bytes // piece))]
    for array in kept:
        array[:] = 0
    start = time.perf_counter()
    for array in kept:
        array[:] = source
    touched = time.perf_counter() - start
    del kept
    gc.collect()
    return {"first_touch_GB_per_s": total_bytes / min(fresh[1]) / 1e9,
            "first_touch_rounds_GB_per_s": [total_bytes / seconds / 1e9 for seconds in fresh[1]],
            "first_touch_split_rounds_GB_per_s": [total_bytes / seconds / 1e9 for seconds in fresh[split]],
            "first_touch_split_GB_per_s": total_bytes / min(fresh[split]) / 1e9, "split_threads": split,
            "copy_threads_here": COPY_THREADS, "max_copy_threads": MAX_COPY_THREADS,
            "touched_GB_per_s": total_bytes / touched / 1e9}


def _shipped_bytes(stored: dict) -> dict:
    """Bytes a cached single text ships (float16 statistics of every kind and hidden state, the pooler, and the
    float32 content count and flag), per model."""
    from skbert._statistics import KINDS

    return {label: 2 * loaded.hidden_size * (len(KINDS) * (loaded.n_layers + 1) + 1) + 4 * 2
            for label, loaded in stored.items()}


def one_pass(embedder, texts) -> dict:
    """One cold ``transform`` (an empty store), timed by stage: host seconds are the pass's less the stand-ins'."""
    from skbert._cache import clear_stores

    clear_stores()
    gc.collect()
    CLOCK.reset()
    CLOCK.enter(("other (transform's glue)", "transform"))
    try:
        output, report = embedder.transform_with_report(texts)
    finally:
        CLOCK.leave()
    info = embedder.cache_info()  # read before the next pass clears the store
    assert output.shape == (len(texts), embedder.hidden_size_) and np.isfinite(output).all()
    cpu, wall = sum(CLOCK.cpu.values()), sum(CLOCK.wall.values())
    device_cpu, device_wall = CLOCK.stage_seconds(DEVICE, "cpu"), CLOCK.stage_seconds(DEVICE, "wall")
    return {"host_cpu_s": cpu - device_cpu, "host_wall_s": wall - device_wall, "device_cpu_s": device_cpu,
            "cpu_s": cpu, "wall_s": wall, "n_tokens": report.n_tokens_encoded,
            "evicted": info.get("memory_evictions", 0), "seconds": dict(CLOCK.cpu), "calls": dict(CLOCK.calls)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (2,000 texts, 2 rounds): a smoke test")
    parser.add_argument("--n", type=int, default=20_000, help="texts per pass (distinct)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; the best of each setting counts")
    parser.add_argument("--layout", default="packed", choices=["packed", "padded"],
                        help="batches as a GPU makes them with attention='auto' (packed) or padded")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--core", type=int, default=None, help="pin the process to this CPU core")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = 2_000, 2
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    from skbert import BertEmbedder, _encoding

    texts = distinct_texts("short", args.n)
    models = {MODELS[name][0]: weightless_model(name) for name in args.models}
    settings = {(name, cache): None for name in args.models for cache in ("memory", None)}
    results = {key: [] for key in settings}
    with stand_ins(models, args.layout):
        for name, cache in settings:
            embedder = BertEmbedder(MODELS[name][0], pooling="mean", layers=-1, cache=cache, device="cpu",
                                    token_budget=GPU_TOKEN_BUDGET)
            settings[name, cache] = embedder.fit(texts[:1])
            one_pass(embedder, texts[: max(200, args.n // 10)])  # warm up
        for _ in range(args.repeats):  # alternating: every setting once per round (these machines drift)
            for key, embedder in settings.items():
                results[key].append(one_pass(embedder, texts))
    rates = memory_rates()
    tables, payload = summarised(results, len(texts))
    stored = {f"{name}, cache='memory'": models[MODELS[name][0]] for name in args.models}
    tables.append("## Memory on this machine\n\n" + (
        f"Copying into memory touched for the first time: {rates['first_touch_GB_per_s']:.2f} GB/s with one "
        f"thread, {rates['first_touch_split_GB_per_s']:.2f} GB/s split over {rates['split_threads']} threads as "
        "skbert copies a batch's result out of its pinned buffer on a machine of "
        f"{4 * rates['split_threads']}+ cores (here: {rates['copy_threads_here']} thread); into memory touched before: "
        f"{rates['touched_GB_per_s']:.2f} GB/s (wall time, 1 GiB in 128 MiB arrays, the best of 3 alternating "
        "rounds, each 3 s after the last freed its memory, measured after the passes; every round, one thread: "
        + ", ".join(f"{rate:.2f}" for rate in rates["first_touch_rounds_GB_per_s"]) + "; split: "
        + ", ".join(f"{rate:.2f}" for rate in rates["first_touch_split_rounds_GB_per_s"]) + " GB/s). A cold cache='memory' pass copies every statistic it ships into new "
        "memory (the store's), so its 'copy to host' stage costs up to (less where the pages "
        "are still warm from the pass before): "
        + "; ".join(f"{label}: {bytes_per_text / 1e3:.1f} kB shipped per text, "
                    f"{bytes_per_text / rates['first_touch_GB_per_s'] / 1e3:.1f} µs of first-touch copying "
                    f"({bytes_per_text / rates['first_touch_split_GB_per_s'] / 1e3:.1f} µs split)"
                    for label, bytes_per_text in _shipped_bytes(stored).items()) + ". On a virtual machine whose host takes "
        "freed memory back within seconds (a balloon's free page reporting) every pass's new memory is cold "
        "whatever ran before, and the first rate is the host's; a machine whose memory stays with it pays only "
        "the kernel's page faults."))
    payload_memory = {label: bytes_per_text for label, bytes_per_text in _shipped_bytes(stored).items()}
    note = (
        f"{len(texts):,} distinct short texts per pass (row number + description), {args.repeats} alternating "
        "rounds, the best of each (the median beside it). texts_per_s: texts over the host's CPU seconds (the "
        "process's, less the stand-ins'), with one torch thread and the tokenizer in this thread: one core's "
        "worth; after_forward_texts_per_s counts only the stages after the forward (copy to host, statistics "
        "finishing, cache entries + store, pooling: what must keep up with the device; the best round's), the "
        "issue's target; wall_texts_per_s is the same over wall seconds, and cpu_over_wall below 1 says the process "
        "waited for a core others were using. Weightless models with bert-base's (12 layers, 768 wide) and "
        "MiniLM's (6 layers, 384 wide) configurations and the real WordPiece tokenizer; mean pooling, "
        f"layers=-1, {args.layout} batches, token budget {GPU_TOKEN_BUDGET:,} (a GPU's), chunks of "
        f"{_encoding.CHUNK_SIZE:,} texts, float16 entries. cache='memory' keeps every kind of statistic of every "
        "hidden state, and the pooler; cache=None computes only what mean pooling of the last layer needs.\n\n"
        "Counted as host work: input checks, deduplication, tokenisation, windows, batches (made, and copied "
        "into the reused staging buffers), the copy of each batch's result out of its reused host buffer, "
        "statistics finishing (long texts' windows combined), cache keys, entries (float16 as shipped) and the memory tier, pooling "
        "into the output. Not counted: the forward, the reduction to statistics and the pooler (stand-ins that "
        "hand back tensors of the real shapes; their time, device_stand_in_cpu_s, is subtracted), the copies' "
        "device side, CUDA's launches, pinning and events, and spilling beyond the 2 GiB memory budget.")
    payload.update(memory={**rates, "shipped_bytes_per_text": payload_memory}, n_texts=len(texts), repeats=args.repeats, layout=args.layout, quick=args.quick,
                   token_budget=GPU_TOKEN_BUDGET, core=args.core, torch_threads=torch.get_num_threads())
    text = "\n\n".join([*tables, note])
    path = write_results("host_pipeline-quick" if args.quick else "host_pipeline", "cpu", payload, text)
    print(text + f"\n\nwritten to {path}")


def summarised(results: dict, n: int) -> tuple[list[str], dict]:
    """Markdown tables (texts/s against the targets, host time by stage, the largest costs by function) and
    the JSON payload, from each setting's best round."""
    rows, function_rows = [], []
    labels = [f"{name}, cache={cache!r}" for name, cache in results]
    stage_rows = {stage: {"stage": stage, **dict.fromkeys(labels, 0.0)} for stage in (*STAGES, DEVICE)}
    per_text = 1e6 / n
    for (name, cache), runs in results.items():
        best = min(runs, key=lambda run: run["host_cpu_s"])
        target = MODELS[name][1]
        label = f"{name}, cache={cache!r}"
        after = min(sum(seconds for (stage, _), seconds in run["seconds"].items() if stage in AFTER_FORWARD)
                    for run in runs)
        rows.append({
            "setting": label, "after_forward_texts_per_s": n / after, "target": target,
            "after_forward_ratio_to_target": n / after / target, "after_forward_us_per_text": after * per_text,
            "texts_per_s": n / best["host_cpu_s"], "ratio_to_target": n / best["host_cpu_s"] / target,
            "us_per_text": best["host_cpu_s"] * per_text,
            "median_texts_per_s": statistics.median(n / run["host_cpu_s"] for run in runs),
            "wall_texts_per_s": n / best["host_wall_s"], "cpu_over_wall": best["cpu_s"] / best["wall_s"],
            "batches": sum(count for (_, function), count in best["calls"].items() if function == "result"),
            "tokens_per_text": best["n_tokens"] / n, "evicted": best["evicted"],
            "device_stand_in_cpu_s": best["device_cpu_s"],
            "runs_texts_per_s": ", ".join(f"{n / run['host_cpu_s']:,.0f}" for run in runs),
        })
        for (stage, function), seconds in best["seconds"].items():
            stage_rows[stage][label] += seconds * per_text
            if stage != DEVICE:
                function_rows.append({"setting": label, "stage": stage, "function": function,
                                      "us_per_text": seconds * per_text, "calls": best["calls"][stage, function]})
    function_rows.sort(key=lambda row: -row["us_per_text"])
    tables = [
        "## Texts/s on one core\n\n" + markdown_table(
            rows, ["setting", "after_forward_texts_per_s", "target", "after_forward_ratio_to_target",
                   "after_forward_us_per_text", "texts_per_s", "ratio_to_target", "us_per_text", "median_texts_per_s",
                   "wall_texts_per_s", "cpu_over_wall", "batches", "tokens_per_text", "evicted",
                   "device_stand_in_cpu_s", "runs_texts_per_s"],
            {"ratio_to_target": "{:.3f}", "us_per_text": "{:.1f}", "after_forward_ratio_to_target": "{:.3f}",
             "after_forward_us_per_text": "{:.1f}", "cpu_over_wall": "{:.2f}",
             "tokens_per_text": "{:.1f}", "device_stand_in_cpu_s": "{:.3f}"}),
        "## Host CPU time by stage (µs per text)\n\n" + markdown_table(
            list(stage_rows.values()), ["stage", *labels], dict.fromkeys(labels, "{:.2f}")),
        "## The largest host costs by function (CPU µs per text, exclusive of the timed functions it calls)\n\n"
        + markdown_table(function_rows[:20], ["setting", "stage", "function", "us_per_text", "calls"],
                         {"us_per_text": "{:.2f}"}),
    ]
    runs = {f"{name}, cache={cache!r}": [
        {**run, "seconds": {" / ".join(k): v for k, v in run["seconds"].items()},
         "calls": {" / ".join(k): v for k, v in run["calls"].items()}} for run in settings_runs]
        for (name, cache), settings_runs in results.items()}
    payload = {"rows": rows, "stages_us_per_text": list(stage_rows.values()),
               "functions_us_per_text": function_rows, "runs": runs}
    return tables, payload


if __name__ == "__main__":
    main()

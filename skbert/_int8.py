"""int8 on the CPU: the model quantised with NNCF at ``fit``, calibrated on real text, and checked before use.

Optional (``pip install skbert[int8]``: OpenVINO and NNCF) and imported only when used.
``precision="int8"`` on a CPU where both are installed (and ``SKBERT_RUNTIME`` is not
``"torch"``):

1. Calibration texts (:func:`calibration_for`): the distinct texts given to ``fit``
   when there are at least :data:`MIN_FIT_TEXTS`, else a shipped sample of 256 real
   texts (Debian package descriptions, as written and cut to their first sentence or
   two). Up to :data:`MAX_CALIBRATION` of them calibrate, and up to
   :data:`MAX_HELD_OUT` others (every fourth) are held out for the check.
2. The model, converted to OpenVINO in float32, is quantised by NNCF's post-training
   quantisation (transformer preset: SmoothQuant, int8 weights per output channel,
   int8 activations per tensor, bias correction), the operations in
   :data:`KEPT_IN_BF16` left out: chosen by measured sensitivity
   (``benchmarks/int8.py``, ``benchmarks/results/int8-study-cpu.md``). The rest of
   the network computes in bfloat16 where the CPU has it natively, else float32.
3. The check (:func:`calibrate`): on the held-out texts, every hidden state after the
   embeddings, mean-pooled over each text's tokens, is compared with the float32
   network's; the lowest cosine over texts and layers must reach
   :data:`TARGET_MIN_COSINE`. Below it, or when quantisation fails, ``fit`` warns and
   the estimator runs as ``precision="auto"`` would (OpenVINO bfloat16 or float32);
   ``precision_`` says what runs. A network that passes is timed against the
   unquantised one on the same texts (:attr:`Int8Check.speedup`); below
   :data:`MIN_SPEEDUP` ``fit`` warns that int8 does not pay on this CPU (it still
   runs: a timing at ``fit`` is too noisy to decide the numbers by).

The quantised network is kept with the loaded model (:class:`~skbert._models.Derived`),
keyed by a digest of its calibration texts, the :data:`MAX_NETWORKS` most recently used;
an estimator unpickled, or a process that did not fit it, quantises again from the same
texts (the same network, without the check). A refit on the same texts in the same process
(each candidate of a grid search on one fold) reuses the check made first, the
:data:`MAX_CHECKS` most recently used. It always runs the whole model (no network cut at a
shallower depth). Its runtime's cache key names the calibration digest, so its entries are
never served to bfloat16, float32 or another calibration's calls.

Without OpenVINO and NNCF, ``precision="int8"`` is torch's dynamic int8 of the Linear
layers (:func:`~skbert._models.quantize_linear_layers`), with a warning at ``fit``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._warnings import warn_user

#: The check's bar: the lowest cosine to float32, over held-out texts and hidden states, mean-pooled. Not 0.999:
#: no int8 point measured on MiniLM reaches it at a speed-up over bfloat16 (benchmarks/results/int8-study-cpu.md);
#: the shipped point measures 0.9985 on MiniLM with this check, and a network quantised whole (0.993) fails it.
TARGET_MIN_COSINE = 0.997
#: Distinct texts ``fit`` must be given to calibrate on them (else the shipped sample).
MIN_FIT_TEXTS = 64
#: Texts that calibrate, at most.
MAX_CALIBRATION = 192
#: Texts held out for the check, at most.
MAX_HELD_OUT = 64
#: Operations left unquantised (bfloat16): each layer's feed-forward output projection, the most sensitive group
#: measured (``benchmarks/int8.py``), as patterns over OpenVINO's friendly names of transformers' modules.
KEPT_IN_BF16 = (
    r".*encoder\.layer\.\d+\.output\.dense/.*",  # BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DeBERTa-v2
    r".*transformer\.layer\.\d+\.ffn\.lin2/.*",  # DistilBERT
    r".*albert_layers\.\d+\.ffn_output/.*",  # ALBERT (one shared layer per group)
    r".*layers\.\d+\.mlp\.Wo/.*",  # ModernBERT
)
#: Quantised networks kept per loaded model.
MAX_NETWORKS = 2
#: Checks remembered per loaded model (a few numbers and the calibration's texts each).
MAX_CHECKS = 16
#: Where the shipped calibration sample is.
SAMPLE = Path(__file__).resolve().parent / "_data" / "calibration.txt"
#: Texts per calibration batch.
BATCH = 8
#: Alternating rounds timed at ``fit`` (:attr:`Int8Check.speedup`).
TIMED_ROUNDS = 2
#: Below this measured speed-up over ``precision="auto"``, ``fit`` warns that int8 does not pay here.
MIN_SPEEDUP = 0.9
#: One quantisation at a time in this process: NNCF's progress bars are kept off stdout by redirecting the
#: process's stdout for the length of one (two at once would restore each other's), and each holds a copy of
#: the model.
_QUANTIZING = threading.Lock()
#: Held while a kept network is made again (:func:`network`), so that two threads make it once.
_MAKING = threading.Lock()


def available() -> bool:
    """Whether ``precision="int8"`` quantises with NNCF here: OpenVINO and NNCF installed (nothing is imported to
    find out), and ``SKBERT_RUNTIME`` not ``"torch"``."""
    return (os.environ.get("SKBERT_RUNTIME", "openvino") != "torch"
            and importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None)


@functools.cache
def toolchain() -> str:
    """What makes this process's int8 numbers besides the calibration: the OpenVINO and NNCF versions, and whether
    the operations left unquantised compute in bfloat16 or float32 here (part of the int8 entries' cache key)."""
    from importlib.metadata import PackageNotFoundError, version

    from ._device import cpu_has_native_bf16

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    return f"openvino-{installed('openvino')}:nncf-{installed('nncf')}:{'bf16' if cpu_has_native_bf16() else 'f32'}"


def shipped_sample() -> list[str]:
    """The shipped calibration texts: 256 Debian package descriptions (``data/``), one per line."""
    return [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Calibration:
    """The texts a quantised network is made from and checked on.

    Attributes
    ----------
    texts : tuple of str
        The calibration texts.
    held_out : tuple of str
        Other texts, for the check.
    source : {"fit", "sample"}
        The texts given to ``fit``, or the shipped sample.
    max_length : int
        Tokens per text at most (the estimator's ``max_length_``).
    """

    texts: tuple
    held_out: tuple
    source: str
    max_length: int

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("digest", None)  # worked out again where unpickled: what makes the network is that skbert's
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @functools.cached_property
    def digest(self) -> str:
        """What the quantised network is made from, as 16 hex digits: the texts, the window and what is kept in
        bfloat16."""
        digest = hashlib.blake2b(digest_size=8)
        for text in (*self.texts, "\x00", *self.held_out):
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(repr((self.max_length, KEPT_IN_BF16)).encode())
        return digest.hexdigest()


def calibration_for(texts, max_length: int) -> Calibration:
    """The calibration of a ``fit`` on ``texts`` (None or pairs: the shipped sample).

    Parameters
    ----------
    texts : list of str or None
        What ``fit`` was given.
    max_length : int

    Returns
    -------
    Calibration
        An even spread of at most ``MAX_CALIBRATION + MAX_HELD_OUT`` distinct texts,
        every fourth held out.
    """
    distinct = list(dict.fromkeys(t for t in texts or () if isinstance(t, str) and t.strip()))
    source = "fit" if len(distinct) >= MIN_FIT_TEXTS else "sample"
    chosen = distinct if source == "fit" else shipped_sample()
    wanted = MAX_CALIBRATION + MAX_HELD_OUT
    if len(chosen) > wanted:
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, wanted).round().astype(int)]
    held_out = chosen[3::4][:MAX_HELD_OUT]
    rest = [t for i, t in enumerate(chosen) if i % 4 != 3][:MAX_CALIBRATION]
    return Calibration(tuple(rest), tuple(held_out), source, int(max_length))


@dataclass(frozen=True)
class Int8Check:
    """What ``fit`` found when it quantised (``BertEmbedder.int8_check_``).

    Attributes
    ----------
    calibration : Calibration
    min_cosine : float or None
        The lowest cosine to float32 over the held-out texts and hidden states
        (mean-pooled); None where quantisation failed.
    target : float
        The bar it had to reach (:data:`TARGET_MIN_COSINE`).
    passed : bool
        Whether int8 runs (else bfloat16 or float32, as ``precision="auto"``).
    reason : str
        Why not, in words ("" when it passed).
    seconds : float
        Converting, calibrating, quantising, compiling, checking and timing.
    speedup : float or None
        How much faster the int8 network ran the held-out texts than the OpenVINO
        network ``precision="auto"`` runs for the same layers (bfloat16 where the CPU
        has it natively, else float32; cut after the deepest layer read where the
        family allows, while int8 always runs the whole model), best of
        :data:`TIMED_ROUNDS` alternating rounds at ``fit``: a rough reading of whether
        int8 pays on this CPU (a few dozen texts, on a machine that may be busy).
        None where it did not pass or could not be timed.
    """

    calibration: Calibration
    min_cosine: float | None
    target: float
    passed: bool
    reason: str
    seconds: float
    speedup: float | None = None


def kept_operations(converted) -> list[str]:
    """The operations of a converted network that :data:`KEPT_IN_BF16` leaves unquantised (their friendly
    names)."""
    import re

    patterns = [re.compile(p) for p in KEPT_IN_BF16]
    return [op.get_friendly_name() for op in converted.get_ops()
            if any(p.fullmatch(op.get_friendly_name()) for p in patterns)]


def _feeds(loaded, texts, max_length: int) -> list[tuple[np.ndarray, dict]]:
    """Length-sorted padded batches of ``texts`` as network inputs, each with the rows it holds."""
    encoded = loaded.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = loaded.tokenizer.pad_token_id or 0
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = []
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        width = max(len(encoded[i]) for i in rows)
        ids = np.full((len(rows), width), pad, np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, : len(encoded[i])] = encoded[i]
            mask[r, : len(encoded[i])] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if loaded.has_token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        out.append((rows, feed))
    return out


def pooled_states(network, feeds, n: int) -> np.ndarray:
    """Every hidden state after the embeddings, mean-pooled over each text's tokens: ``(layers, n, d)``, rows in
    the texts' order."""
    request = network.create_infer_request()
    pooled = None
    for rows, feed in feeds:
        request.infer(feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        states = np.stack([np.array(request.get_output_tensor(i).data, dtype=np.float32)
                           for i in range(1, len(network.outputs))])
        means = (states * mask).sum(2) / mask.sum(1)
        if pooled is None:
            pooled = np.empty((means.shape[0], n, means.shape[2]), np.float32)
        pooled[:, rows] = means
    return pooled


def _seconds(network, feeds) -> float:
    """Wall time of one pass of ``network`` over ``feeds``."""
    request = network.create_infer_request()
    start = time.perf_counter()
    for _, feed in feeds:
        request.infer(feed)
    return time.perf_counter() - start


def measured_speedup(quantized, unquantized, feeds, rounds: int = TIMED_ROUNDS) -> float:
    """``unquantized``'s best time over ``feeds`` divided by ``quantized``'s, in alternating rounds."""
    times = {"int8": [], "plain": []}
    for _ in range(rounds):
        times["plain"].append(_seconds(unquantized, feeds))
        times["int8"].append(_seconds(quantized, feeds))
    return min(times["plain"]) / max(min(times["int8"]), 1e-9)


def lowest_cosine(got: np.ndarray, reference: np.ndarray) -> float:
    """The lowest cosine between matching rows of two ``(layers, n, d)`` arrays, over layers and rows."""
    dot = (got.astype(np.float64) * reference).sum(-1)
    norms = np.linalg.norm(got.astype(np.float64), axis=-1) * np.linalg.norm(reference.astype(np.float64), axis=-1)
    return float((dot / np.maximum(norms, 1e-30)).min())


def quantize_model(loaded, calibration: Calibration, converted=None):
    """The model quantised on ``calibration``'s texts by NNCF, :data:`KEPT_IN_BF16` left out, not compiled (raises
    what NNCF or OpenVINO raise)."""
    import nncf

    from ._openvino import to_openvino

    if converted is None:
        converted = to_openvino(loaded.model, loaded.has_token_types)
    feeds = [feed for _, feed in _feeds(loaded, calibration.texts, calibration.max_length)]
    # NNCF's progress bars go to stdout whatever its log level: the process's stdout is redirected meanwhile
    with _QUANTIZING, contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(converted, nncf.Dataset(feeds), subset_size=len(feeds),
                                  model_type=nncf.ModelType.TRANSFORMER,
                                  ignored_scope=nncf.IgnoredScope(patterns=list(KEPT_IN_BF16), validate=False))
    return quantized


def _quantized(loaded, calibration: Calibration, converted=None):
    """:func:`quantize_model`, compiled for this CPU."""
    from ._device import cpu_has_native_bf16
    from ._openvino import compile_for_cpu

    return compile_for_cpu(quantize_model(loaded, calibration, converted), bf16=cpu_has_native_bf16())


def _quiet():
    """NNCF's notices and progress bars off (they follow its log level)."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)


def calibrate(loaded, calibration: Calibration, target: float | None = None, depth: int | None = None) -> Int8Check:
    """Quantise the model on ``calibration`` and check it against float32; a network that passes is kept with the
    model for :func:`network`.

    Parameters
    ----------
    loaded : LoadedModel
        In float32, on the CPU.
    calibration : Calibration
    target : float or None, default=None
        The bar (None: :data:`TARGET_MIN_COSINE`).
    depth : int or None, default=None
        The deepest hidden state the estimator reads (None: all): the unquantised network
        the speed-up is measured against is the one ``precision="auto"`` runs for it (cut
        there where the family allows; the int8 network always runs the whole model).

    Returns
    -------
    Int8Check
        Never raises for a failed quantisation: it says so (``passed=False``), as for a
        family that runs on torch everywhere (:func:`~skbert._openvino.converts_exactly`),
        which is not quantised at all. A check this process made before for the same
        calibration and target is given again, as it was (its ``seconds`` and
        ``speedup`` those of the first); one whose quantisation failed, or whose
        network failed while running, is made again.
    """
    start = time.perf_counter()
    target = TARGET_MIN_COSINE if target is None else target
    key = (calibration.digest, target)
    with loaded.derived.lock:
        known = loaded.derived.int8_checks.get(key)
        if known is not None and calibration.digest not in loaded.derived.int8_failed:
            loaded.derived.int8_checks.move_to_end(key)
            return known  # the same texts make the same network: nothing to learn from quantising again
    check = _calibrate(loaded, calibration, target, depth, start)
    if check.min_cosine is not None:  # a check that ran (not a failed quantisation: a refit tries again)
        with loaded.derived.lock:
            loaded.derived.int8_checks[key] = check
            loaded.derived.int8_checks.move_to_end(key)
            while len(loaded.derived.int8_checks) > MAX_CHECKS:
                loaded.derived.int8_checks.popitem(last=False)
    return check


def _calibrate(loaded, calibration: Calibration, target: float, depth: int | None, start: float) -> Int8Check:
    """:func:`calibrate`'s work, for a check not made before."""
    from ._openvino import compile_for_cpu, converts_exactly, network, to_openvino

    if not converts_exactly(loaded.model.config):  # nothing to quantise: this family never runs on OpenVINO
        return Int8Check(calibration, None, target, False,
                         "OpenVINO does not run this model family exactly (attention within local windows), so "
                         "it runs on torch", time.perf_counter() - start)
    try:
        _quiet()  # an NNCF that is installed but cannot be imported fails here
        converted = to_openvino(loaded.model, loaded.has_token_types)
        held_out = _feeds(loaded, calibration.held_out, calibration.max_length)
        reference = pooled_states(compile_for_cpu(converted, bf16=False), held_out, len(calibration.held_out))
        compiled = _quantized(loaded, calibration, converted)
        got = pooled_states(compiled, held_out, len(calibration.held_out))
    except Exception as error:  # NNCF or OpenVINO could not quantise this model: it runs unquantised
        return Int8Check(calibration, None, target, False,
                         f"quantisation failed ({type(error).__name__}: {str(error)[:200]})",
                         time.perf_counter() - start)
    cosine = lowest_cosine(got, reference)
    passed = cosine >= target
    speedup = None
    if passed:
        _keep(loaded, calibration.digest, compiled)
        try:  # against the network "auto" runs at this depth (kept with the model: "auto" calls reuse it)
            plain = network(loaded, depth)
            speedup = None if plain is None else measured_speedup(compiled, plain, held_out)
        except Exception:  # a timing that cannot be taken is no reason to give int8 up (speedup stays None)
            pass
    reason = "" if passed else (f"its lowest cosine to float32 on {len(calibration.held_out)} held-out texts was "
                                f"{cosine:.5f}, below the target {target}")
    return Int8Check(calibration, cosine, target, passed, reason, time.perf_counter() - start, speedup)


def _keep(loaded, digest: str, compiled) -> None:
    state = loaded.derived
    with state.lock:
        state.int8_failed.discard(digest)  # a network made and checked again works (a refit after a failure)
        state.int8[digest] = compiled
        state.int8.move_to_end(digest)
        while len(state.int8) > MAX_NETWORKS:
            state.int8.popitem(last=False)


def network(loaded, check: Int8Check):
    """The quantised network of a passed check, kept with the model (made again from its calibration texts where
    this process has not made it), or None where it cannot be made or has failed (the caller runs unquantised)."""
    state = loaded.derived
    digest = check.calibration.digest

    def known():
        """(whether to stop looking, the network or None)."""
        with state.lock:
            if digest in state.int8_failed:
                return True, None
            compiled = state.int8.get(digest)
            if compiled is not None:
                state.int8.move_to_end(digest)
            return compiled is not None, compiled

    done, found = known()
    if done:
        return found
    with _MAKING:  # made once; the model's own lock stays free for its other users meanwhile
        done, found = known()
        if done:
            return found
        try:
            _quiet()
            compiled = _quantized(loaded, check.calibration)
        except Exception as error:
            with state.lock:
                state.int8_failed.add(digest)
            warn_user(f"skbert could not quantise this model to int8 ({type(error).__name__}: {str(error)[:200]}); "
                      "this call runs in float32 torch, later ones as precision='auto' would.")
            return None
        _keep(loaded, digest, compiled)
        return compiled


def give_up(loaded, check: Int8Check, error: Exception) -> None:
    """Forget a quantised network that failed while running (warns once): later batches run unquantised."""
    with loaded.derived.lock:
        loaded.derived.int8.pop(check.calibration.digest, None)
        loaded.derived.int8_failed.add(check.calibration.digest)
    warn_user(f"The int8 network failed while running ({type(error).__name__}: {str(error)[:200]}); skbert runs "
              "the rest of this call in float32 torch, later calls as precision='auto' would.")

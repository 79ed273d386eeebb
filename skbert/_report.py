"""What one call did, handed back to the caller instead of written on the estimator."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class TransformReport:
    """Counts of one ``transform`` call (see :meth:`~skbert.BertEmbedder.transform_with_report`).

    A fitted estimator does not change in ``transform``, so threads, joblib and Dask
    workers may share one; each call's counts come back with its result.

    Attributes
    ----------
    n_rows : int
        Texts given.
    n_unique : int
        Distinct texts among them (each encoded or looked up once).
    n_encoded : int
        Distinct texts the model encoded.
    n_cache_hits : int
        Distinct texts served from the cache.
    n_long : int
        Rows longer than ``max_length_`` tokens.
    n_truncated : int
        Rows that lost tokens (long rows under ``"truncate"`` or ``"head_tail"``).
    n_tokens_encoded : int, default=0
        Real (non-padding) tokens the model ran for this call: the work behind
        ``n_encoded``, for tokens-per-second figures (a text run again in float32
        after its 16-bit cache entry would overflow counts its tokens twice).
    runtime_setup_s : float, default=0.0
        Seconds this call spent converting and compiling a network for the runtime
        (OpenVINO, a depth not run before in this process; ``fit`` reports the whole
        model's in ``runtime_setup_s_``), within the call's time.
    """

    n_rows: int
    n_unique: int
    n_encoded: int
    n_cache_hits: int
    n_long: int
    n_truncated: int
    n_tokens_encoded: int = 0
    runtime_setup_s: float = 0.0


#: Seconds a call runs before ``show_progress`` draws its bar.
PROGRESS_DELAY_S = 1.0


def progress_bar(total: int, show: bool):
    """A tqdm bar over texts that appears only once a call has run for :data:`PROGRESS_DELAY_S`
    (nothing for a one-text ``predict``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="skbert", disable=not show, delay=PROGRESS_DELAY_S)


#: Whether the code around a call reports its truncation itself (:func:`caller_reports_truncation`).
_CALLER_REPORTS_TRUNCATION: ContextVar[bool] = ContextVar("skbert_caller_reports_truncation", default=False)


@contextmanager
def caller_reports_truncation():
    """Within this block, a call counts its truncated rows in its :class:`TransformReport` and does not warn.

    For a caller that reports truncation itself, from the report's counts: the
    command line sums ``n_truncated`` over a run's parts and says it once. A context
    variable, not a warnings filter: it holds in this thread only (threads, and Dask
    worker threads, transforming at the same time keep their warnings), and no
    message is matched by its text.
    """
    token = _CALLER_REPORTS_TRUNCATION.set(True)
    try:
        yield
    finally:
        _CALLER_REPORTS_TRUNCATION.reset(token)


def call_report(encoding, n_rows: int, n_unique: int, n_long: int, *, long_text: str, pairs: bool,
                max_length: int) -> TransformReport:
    """The counts of one call; warns (at the user's line) when rows were truncated, unless the caller
    reports that itself (:func:`caller_reports_truncation`).

    Parameters
    ----------
    encoding : EncodingReport
        What the encoder did.
    n_rows, n_unique, n_long : int
        Rows given, distinct rows, rows longer than ``max_length``.
    long_text : str
    pairs : bool
    max_length : int
    """
    from ._warnings import warn_user

    n_truncated = 0 if long_text == "chunk" else n_long
    if long_text == "truncate" and n_long and not _CALLER_REPORTS_TRUNCATION.get():
        what, remedy = ("pairs", " from the longer side") if pairs else (
            "texts", "; long_text='chunk' covers them whole")
        warn_user(
            f"{n_long} of {n_rows} {what} were longer than max_length={max_length} tokens and were "
            f"truncated{remedy}."
        )
    return TransformReport(n_rows, n_unique, encoding.n_encoded, encoding.n_cache_hits, n_long, n_truncated,
                           encoding.n_tokens, encoding.runtime_setup_s)

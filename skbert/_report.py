"""What one call did, handed back to the caller instead of written on the estimator."""

from __future__ import annotations

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
    """

    n_rows: int
    n_unique: int
    n_encoded: int
    n_cache_hits: int
    n_long: int
    n_truncated: int

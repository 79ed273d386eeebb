"""Embedding a Dask DataFrame: skbert on many worker processes, GPUs or machines.

Dask is optional (``pip install skbert[dask]``) and imported only here, so
``import skbert`` never imports it.

The fitted estimator travels to the workers pickled, without its weights; each
worker process loads the model once (skbert's process-wide registry) and reuses it
for every partition and every call, with its own cache. Partitions map one to one,
so the result keeps the input's index and divisions.

Examples
--------
>>> import dask.dataframe as dd, pandas as pd
>>> from skbert import BertEmbedder
>>> from skbert.dask import embed
>>> texts = dd.from_pandas(pd.Series(["a river bank", "a loan", ""], name="text"), npartitions=2)
>>> embedder = BertEmbedder("sentence-transformers/all-MiniLM-L6-v2").fit(["a"])
>>> embed(texts, embedder).compute().shape
(3, 384)

On a cluster, connect a ``distributed.Client`` first. With several GPUs, start one
worker process per GPU and keep ``device="auto"``: a worker that sees only its own GPU
(``CUDA_VISIBLE_DEVICES`` set per worker, as ``dask_cuda.LocalCUDACluster`` does) uses
it, and a numbered worker that sees them all (``LocalCluster(n_workers=n_gpus,
threads_per_worker=1)``, or ``dask worker --name 0`` ... on other machines) takes GPU
``number % n_gpus``; so each GPU gets one worker (how the throughput grows with N GPUs has not been
measured). Sentence pairs: ``embed(frame, BertEmbedder(..., pairs=True), column=["a", "b"])``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._columns import ColumnError, texts_in
from ._device import check_threads, torch_threads


def worker_environ() -> dict:
    """Dask's environment for new worker processes, without its malloc trim threshold.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, so glibc hands memory
    back to the system after every large free; torch's CPU inference allocates and
    frees large buffers for every batch, and ran about 1.2-1.35x slower for it here
    (MiniLM, 2 cores). Dask also sets ``OMP_NUM_THREADS=1``: give torch its threads
    with ``embed(..., threads=...)``.

    Returns
    -------
    dict
        For ``dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()})``
        around the creation of a ``LocalCluster`` (``skbert embed --workers`` does this).
    """
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def _embed_partition(part, embedder, names, threads=None) -> pd.DataFrame:
    if len(part) == 0:
        return pd.DataFrame(np.empty((0, len(names)), np.float32), index=part.index, columns=names)
    with torch_threads(threads):
        X = np.asarray(embedder.transform(part))  # an array whatever set_output says
    return pd.DataFrame(X, index=part.index, columns=names)


def _empty_index(texts):
    """The index of an empty partition like ``texts``' (a bag's ``to_dataframe`` makes a meta of one row)."""
    return texts._meta.index[:0]


def _check_pair_columns(texts, embedder) -> None:
    """With ``pairs=True`` and a ``fit`` on a frame, the columns ``column=`` names must be those ``fit`` saw, in
    order (said here, not by every task)."""
    fitted = getattr(embedder, "feature_names_in_", None)
    if getattr(texts, "ndim", 1) != 2 or fitted is None or list(texts.columns) == list(fitted):
        return
    raise ColumnError(f"column={list(texts.columns)!r} are not the columns fit saw, {list(fitted)!r}: the first is "
                      f"side A and the second side B, so other or reordered columns would embed other pairs; pass "
                      f"column={list(fitted)!r}.")


def embed(data, embedder, column=None, threads=None):
    """Embed a Dask Series of texts (or one column of a Dask DataFrame), lazily.

    Parameters
    ----------
    data : dask.dataframe.Series or dask.dataframe.DataFrame
        The texts; a frame needs ``column`` unless it has a single column.
    embedder : BertEmbedder
        Fitted (with ``pairs=True`` for sentence pairs).
    column : str or list of two str, optional
        The text column of a frame, or its two columns (A, B) of sentence pairs.
    threads : int, optional
        Threads torch uses in each task on a CPU worker. Dask starts worker
        processes with ``OMP_NUM_THREADS=1`` (one core each); with fewer workers
        than cores, give each its share (e.g. ``cores // n_workers``). None: leave it.

    Returns
    -------
    dask.dataframe.DataFrame
        One float32 column per feature (``embedder.get_feature_names_out()``), the
        input's index and divisions, one output partition per input partition.

    Raises
    ------
    ColumnError
        A ``ValueError``: for a column the frame lacks, a frame of several columns
        without ``column``, or columns that do not fit the embedder's ``pairs``
        (the command line's column errors are of the same type, and worded alike).
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(embedder)
    check_threads(threads)
    texts = texts_in(_dask_frame(data), column)
    if embedder.pairs != (getattr(texts, "ndim", 1) == 2):
        raise ColumnError(
            "embedder reads sentence pairs (pairs=True): pass column=[A, B], two columns of the frame."
            if embedder.pairs else
            f"column={column!r} names two columns (a sentence pair); the embedder needs pairs=True for that."
        )
    _check_pair_columns(texts, embedder)
    names = [str(name) for name in embedder.get_feature_names_out()]
    meta = pd.DataFrame(np.empty((0, len(names)), np.float32), columns=names, index=_empty_index(texts))
    return texts.map_partitions(_embed_partition, embedder, names, threads, meta=meta)


def _dask_frame(data):
    """``data`` if it is a Dask Series or DataFrame, else a TypeError saying what is taken."""
    import dask.dataframe as dd

    if not isinstance(data, (dd.Series, dd.DataFrame)):
        raise TypeError(f"a dask.dataframe Series or DataFrame of texts was expected, got {type(data).__name__}; "
                        "dask.dataframe.from_pandas (or from_dask_array, or a bag's to_dataframe) makes one")
    return data


def _predict_partition(part, pipeline, method, dtype, columns, threads=None):
    if len(part) == 0:
        values = np.empty((0,) if columns is None else (0, len(columns)), dtype)
    else:
        with torch_threads(threads):
            values = np.asarray(getattr(pipeline, method)(part))
    if columns is not None:
        return pd.DataFrame(values, index=part.index, columns=columns, dtype=dtype)
    if values.ndim != 1:
        raise ValueError(f"the pipeline's {method} gave {values.shape[1:]} values per text, where "
                         "skbert.dask.predict expected one for this method")
    return pd.Series(values, index=part.index, dtype=dtype, name=method)


#: Methods that give a score per class: one column per class in ``classes_`` (decision_function only for more
#: than two classes; for two it gives one score).
_PER_CLASS = ("predict_proba", "predict_log_proba", "decision_function")


def _class_columns(pipeline, method) -> list | None:
    """The columns of a method that gives a value per class (the classes), or None for one value per text."""
    if method not in _PER_CLASS:
        return None
    classes = getattr(pipeline, "classes_", None)
    if classes is None:
        raise ValueError(f"method={method!r} gives a value per class, but the pipeline has no classes_ to name them")
    if method == "decision_function" and len(classes) == 2:
        return None
    return list(classes)


def _first_step(pipeline):
    steps = getattr(pipeline, "steps", None)
    return steps[0][1] if steps else pipeline


def predict(data, pipeline, column=None, method="predict", threads=None):
    """Apply a fitted pipeline (``BertEmbedder`` first) to a Dask collection of texts, partition by partition.

    Parameters
    ----------
    data : dask.dataframe.Series or dask.dataframe.DataFrame
    pipeline : fitted estimator
        E.g. ``make_pipeline(BertEmbedder(...), LogisticRegression())``.
    column : str or list of two str, optional
        The text column of a frame, or its two columns (A, B) of sentence pairs.
    method : str, default="predict"
        The pipeline's method: ``"predict"`` (labels), or one that gives scores:
        ``"predict_proba"``, ``"predict_log_proba"`` and ``"decision_function"``
        give one column per class (``decision_function`` of two classes, one
        score), any other one value per text.
    threads : int, optional
        Threads torch uses in each task, as for :func:`embed`.

    Returns
    -------
    dask.dataframe.Series or dask.dataframe.DataFrame
        One value per text (a Series named after ``method``), or a frame of a
        column per class, with the input's index and divisions.

    Raises
    ------
    NotFittedError
        For a pipeline that is not fitted (here, not in the tasks).
    AttributeError
        For a method the pipeline does not have.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(pipeline)
    check_threads(threads)
    texts = texts_in(_dask_frame(data), column)
    if not hasattr(pipeline, method):
        raise AttributeError(f"the pipeline has no method {method!r}")
    _check_pair_columns(texts, _first_step(pipeline))
    columns = _class_columns(pipeline, method)
    # predict gives labels (the classes' dtype); the other methods give scores
    dtype = getattr(pipeline, "classes_", np.array([0.0])).dtype if method == "predict" else np.dtype(np.float64)
    index = _empty_index(texts)
    meta = (pd.Series([], index=index, dtype=dtype, name=method) if columns is None else
            pd.DataFrame(np.empty((0, len(columns)), dtype), index=index, columns=columns))
    return texts.map_partitions(_predict_partition, pipeline, method, dtype, columns, threads, meta=meta)

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
from ._device import use_torch_threads


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
    use_torch_threads(threads)
    if len(part) == 0:
        return pd.DataFrame(np.empty((0, len(names)), np.float32), index=part.index, columns=names)
    X = np.asarray(embedder.transform(part))  # an array whatever set_output says
    return pd.DataFrame(X, index=part.index, columns=names)


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
    texts = texts_in(_dask_frame(data), column)
    if embedder.pairs != (getattr(texts, "ndim", 1) == 2):
        raise ColumnError(
            "embedder reads sentence pairs (pairs=True): pass column=[A, B], two columns of the frame."
            if embedder.pairs else
            f"column={column!r} names two columns (a sentence pair); the embedder needs pairs=True for that."
        )
    names = [str(name) for name in embedder.get_feature_names_out()]
    meta = pd.DataFrame(np.empty((0, len(names)), np.float32), columns=names, index=texts._meta.index)
    return texts.map_partitions(_embed_partition, embedder, names, threads, meta=meta)


def _dask_frame(data):
    """``data`` if it is a Dask Series or DataFrame, else a TypeError saying what is taken."""
    import dask.dataframe as dd

    if not isinstance(data, (dd.Series, dd.DataFrame)):
        raise TypeError(f"a dask.dataframe Series or DataFrame of texts was expected, got {type(data).__name__}; "
                        "dask.dataframe.from_pandas (or from_dask_array, or a bag's to_dataframe) makes one")
    return data


def _predict_partition(part, pipeline, method, dtype, threads=None) -> pd.Series:
    use_torch_threads(threads)
    values = getattr(pipeline, method)(part) if len(part) else np.empty(0, dtype)
    return pd.Series(values, index=part.index, dtype=dtype, name=method)


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
        The pipeline's method giving one value per text.
    threads : int, optional
        Threads torch uses in each task, as for :func:`embed`.

    Returns
    -------
    dask.dataframe.Series
        One value per text, with the input's index and divisions.
    """
    texts = texts_in(_dask_frame(data), column)
    # predict gives labels (the classes' dtype); decision_function, predict_proba and the like give scores
    dtype = getattr(pipeline, "classes_", np.array([0.0])).dtype if method == "predict" else np.dtype(np.float64)
    meta = pd.Series([], index=texts._meta.index, dtype=dtype, name=method)
    return texts.map_partitions(_predict_partition, pipeline, method, dtype, threads, meta=meta)

"""Turning a fitted search over skbert parameters into a tidy table."""

from __future__ import annotations


def _label(value) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_label(v) for v in value) + ")"
    return str(value)


def _labels(values) -> list:
    """A searched parameter's values as text; None where a grid point does not set it (a masked entry of a search
    over a list of grids)."""
    import numpy as np

    missing = np.ma.getmaskarray(values)
    return [None if gone else _label(value) for value, gone in zip(np.ma.getdata(values), missing)]


def search_table(search):
    """One row per parameter combination of a fitted search, best first.

    Parameters
    ----------
    search : fitted GridSearchCV or RandomizedSearchCV
        Any search whose parameters include skbert's (``"bertembedder__pooling"``,
        ``"bertembedder__layers"``, ...), alone or with others.

    Returns
    -------
    pandas.DataFrame
        A column per searched parameter, named without its pipeline-step prefix
        when that is unambiguous (``pooling``, ``layers``), with values as text so
        that mixed values such as ``-1`` and ``"last_four"`` sort and pivot (missing
        where a grid of a list of grids leaves the parameter at its default); then
        ``mean_score``, ``std_score``, ``rank`` and ``mean_fit_time`` (seconds).
        With several metrics, the scores are those of ``search.refit`` (or the
        first).

    Examples
    --------
    >>> table = search_table(search)                                   # doctest: +SKIP
    >>> table.pivot(index="layers", columns="pooling", values="mean_score")  # doctest: +SKIP
    """
    import pandas as pd

    results = search.cv_results_
    metric = "score"
    if "mean_test_score" not in results:
        metrics = sorted(k[len("mean_test_") :] for k in results if k.startswith("mean_test_"))
        metric = search.refit if isinstance(search.refit, str) and search.refit in metrics else metrics[0]
    names = [key[len("param_") :] for key in results if key.startswith("param_")]
    short = [name.rsplit("__", 1)[-1] for name in names]
    columns = {(s if short.count(s) == 1 else n): _labels(results[f"param_{n}"]) for n, s in zip(names, short)}
    table = pd.DataFrame(columns)
    table["mean_score"] = results[f"mean_test_{metric}"]
    table["std_score"] = results[f"std_test_{metric}"]
    table["rank"] = results[f"rank_test_{metric}"]
    table["mean_fit_time"] = results["mean_fit_time"]
    return table.sort_values(["rank", "mean_fit_time"]).reset_index(drop=True)

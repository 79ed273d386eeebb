"""search_table on a synthetic grid result and on a real (tiny) search."""

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skbert import BertEmbedder, search_table


class FakeSearch:
    refit = True

    def __init__(self, cv_results):
        self.cv_results_ = cv_results


def test_search_table_from_a_synthetic_grid():
    layers = np.ma.masked_array([-1, "last_four", (0, -1), -1], dtype=object)
    results = {
        "param_bertembedder__pooling": np.ma.masked_array(["cls", "mean", "max", "mean"], dtype=object),
        "param_bertembedder__layers": layers,
        "param_logisticregression__C": np.ma.masked_array([1.0, 1.0, 1.0, 10.0], dtype=object),
        "mean_test_score": np.array([0.5, 0.9, 0.7, 0.8]),
        "std_test_score": np.array([0.1, 0.01, 0.05, 0.02]),
        "rank_test_score": np.array([4, 1, 3, 2]),
        "mean_fit_time": np.array([1.0, 2.0, 3.0, 4.0]),
    }
    table = search_table(FakeSearch(results))
    assert list(table.columns) == ["pooling", "layers", "C", "mean_score", "std_score", "rank", "mean_fit_time"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table["layers"].tolist() == ["last_four", "-1", "(0, -1)", "-1"]
    assert table["mean_score"].tolist() == [0.9, 0.8, 0.7, 0.5]
    pivot = table[table["C"] == "1.0"].pivot(index="layers", columns="pooling", values="mean_score")
    assert pivot.loc["last_four", "mean"] == 0.9 and np.isnan(pivot.loc["-1", "mean"])


def test_search_table_keeps_prefixes_when_names_clash_and_picks_the_refit_metric():
    results = {
        "param_a__alpha": np.ma.masked_array([1, 2], dtype=object),
        "param_b__alpha": np.ma.masked_array([3, 4], dtype=object),
        "mean_test_acc": np.array([0.2, 0.3]), "std_test_acc": np.array([0.0, 0.0]),
        "rank_test_acc": np.array([2, 1]),
        "mean_test_f1": np.array([0.6, 0.5]), "std_test_f1": np.array([0.0, 0.0]),
        "rank_test_f1": np.array([1, 2]),
        "mean_fit_time": np.array([1.0, 1.0]),
    }
    search = FakeSearch(results)
    search.refit = "f1"
    table = search_table(search)
    assert list(table.columns[:2]) == ["a__alpha", "b__alpha"]
    assert table["mean_score"].tolist() == [0.6, 0.5]


def test_search_table_on_a_real_search(tiny_bert):
    X = ["river bank", "money bank", "the water", "paid loan", "fish stream", "new account"] * 2
    y = [0, 1, 0, 1, 0, 1] * 2
    search = GridSearchCV(
        make_pipeline(BertEmbedder(tiny_bert), LogisticRegression()),
        {"bertembedder__pooling": ["cls", "mean"], "bertembedder__layers": [-1, "all"]},
        cv=2,
    ).fit(X, y)
    table = search_table(search)
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    assert set(table["layers"]) == {"-1", "all"} and table["rank"].iloc[0] == 1


def test_a_parameter_a_grid_leaves_unset_is_missing_not_the_text_of_a_masked_value():
    """A search over a list of grids masks the parameters a grid point does not set ("--" when printed)."""
    layers = np.ma.masked_array([-1, 0, -1], mask=[False, False, True], dtype=object)
    results = {
        "param_bertembedder__pooling": np.ma.masked_array(["cls", "cls", "pooler"], dtype=object),
        "param_bertembedder__layers": layers,
        "mean_test_score": np.array([0.5, 0.9, 0.7]), "std_test_score": np.zeros(3),
        "rank_test_score": np.array([3, 1, 2]), "mean_fit_time": np.ones(3),
    }
    table = search_table(FakeSearch(results))
    assert table["layers"][[0, 2]].tolist() == ["0", "-1"] and pd.isna(table["layers"][1])
    assert "--" not in table.pivot_table(index="layers", columns="pooling", values="mean_score").index

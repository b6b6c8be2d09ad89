"""Seed aggregation and table layout on a hand-made tidy table."""

import math

import pandas as pd
import pytest

from analysis.tables import seed_table, to_frame, to_markdown


def _frame():
    rows = []
    for label, imb, seed, acc in [
        ("ce", 10, 0, 0.60), ("ce", 10, 1, 0.64), ("ce", 100, 0, 0.30), ("ce", 100, 1, 0.34),
        ("focal gamma=1", 10, 0, 0.62), ("focal gamma=1", 10, 1, 0.70), ("focal gamma=1", 100, 0, 0.28),
    ]:
        rows.append({"label": label, "method": label.split()[0], "seed": seed, "dataset.imbalance": imb,
                     "metric.test_acc": acc, "stop_reason": "completed"})
    rows[-1]["stop_reason"] = "stopped by the scheduler at epoch 2"
    return pd.DataFrame(rows)


def test_mean_sample_std_n_and_best_per_column():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"])
    assert t.rows == ["ce", "focal gamma=1"] and t.cols == [10, 100]
    ce10 = t.cells[("ce", 10)]
    assert ce10.mean == pytest.approx(0.62) and ce10.n == 2
    assert ce10.std == pytest.approx(math.sqrt(((0.60 - 0.62) ** 2 + (0.64 - 0.62) ** 2) / 1))
    f100 = t.cells[("focal gamma=1", 100)]
    assert f100.n == 1 and math.isnan(f100.std) and f100.early_stopped == 1
    assert t.best == {10: "focal gamma=1", 100: "ce"}


def test_markdown_marks_best_in_bold_and_shows_n():
    md = to_markdown(seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"]))
    lines = md.splitlines()
    assert lines[0] == "| config | dataset.imbalance=10 | dataset.imbalance=100 |"
    assert lines[2] == "| ce | 62.00 ± 2.83 (n=2) | **32.00 ± 2.83 (n=2)** |"
    assert lines[3] == "| focal gamma=1 | **66.00 ± 5.66 (n=2)** | 28.00 (n=1, 1 early-stopped) |"


def test_lower_is_better_for_losses_and_csv_long_form():
    df = _frame().assign(**{"metric.train_loss": [1.0, 1.2, 2.0, 2.2, 0.9, 1.1, 1.0]})
    t = seed_table(df, "train_loss", rows="method")
    assert t.best == {"train_loss": "focal"} and not t.percent
    csv = to_frame(t)
    assert set(csv.columns) == {"row", "col", "mean", "std", "n", "early_stopped", "best"}
    assert csv.loc[csv["best"], "row"].tolist() == ["focal"]


def test_unknown_keys_name_the_allowed_ones():
    with pytest.raises(KeyError, match="metric: unknown 'nope'; allowed: test_acc"):
        seed_table(_frame(), "nope")
    with pytest.raises(KeyError, match="cols: unknown key 'dataset.rho'"):
        seed_table(_frame(), "test_acc", cols="dataset.rho")

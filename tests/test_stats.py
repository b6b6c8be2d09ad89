"""analysis.stats against scipy and against hand computations, on hand-built frames."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (
    adjust,
    compare,
    critical_difference,
    expected_max,
    expected_max_curve,
    holm,
    pair,
    paired_test,
    sign_flip_pvalue,
    tied_best,
    verdict,
    welch_test,
)

A = [0.62, 0.58, 0.71, 0.66, 0.60]
B = [0.55, 0.57, 0.60, 0.61, 0.52]


def _trials(values, seeds=None, data_seeds=None, **extra):
    seeds = list(range(len(values))) if seeds is None else seeds
    data_seeds = [0] * len(values) if data_seeds is None else data_seeds
    return pd.DataFrame({"seed": seeds, "dataset.data_seed": data_seeds, "metric.test_acc": values, **extra})


def test_paired_t_equals_scipy_ttest_rel_with_its_interval():
    c = paired_test(A, B)
    ref = stats.ttest_rel(A, B)
    d = np.subtract(A, B)
    assert c.test == "paired_t" and c.n_pairs == 5
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert c.mean_diff == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)  # the textbook interval
    assert (c.ci_low, c.ci_high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))


def test_welch_equals_scipy_ttest_ind_unequal_variances():
    a, b = [0.5, 0.7, 0.9, 0.65], [0.4, 0.41, 0.43]
    c = welch_test(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.test == "welch" and c.n_pairs == 0 and (c.n_a, c.n_b) == (4, 3)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert c.mean_diff == pytest.approx(np.mean(a) - np.mean(b))


def test_fewer_than_three_pairs_is_not_tested_and_says_why():
    c = paired_test([0.6, 0.7], [0.5, 0.5])
    assert not c.tested and c.test == "" and math.isnan(c.p_value) and "2 pairs" in c.reason
    assert verdict(c, math.nan, higher=True) == ""
    w = welch_test([0.6, 0.7], [0.5, 0.5, 0.4])
    assert not w.tested and "Welch" in w.reason


def test_identical_results_are_same_with_p_one_and_a_constant_shift_is_exact():
    c = paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert c.p_value == 1.0 and c.mean_diff == 0 and verdict(c, 1.0, higher=True) == "same"
    shift = paired_test([0.75, 0.5, 1.0], [0.5, 0.25, 0.75])  # binary fractions: every difference exactly 0.25
    assert shift.p_value == 0.0 and shift.ci_low == shift.ci_high == 0.25


def test_sign_flip_p_is_exact_for_small_n():
    d = np.array([0.3, -0.1, 0.2, 0.4, 0.25, 0.05])
    observed = abs(d.mean())
    flips = [abs(np.mean(d * np.array(s))) for s in itertools.product([1, -1], repeat=d.size)]
    exact = np.mean([f >= observed - 1e-12 for f in flips])  # share of the 64 sign patterns as extreme
    assert sign_flip_pvalue(d) == pytest.approx(exact, abs=1e-12)
    # by hand: sum 1.1 as observed, 1.3 with -0.1 flipped, 1.2 with -0.1 and 0.05 flipped, and their mirrors
    assert exact == pytest.approx(6 / 64)
    c = paired_test(d, np.zeros_like(d), test="permutation")
    assert c.test == "permutation" and c.p_value == pytest.approx(exact)
    with pytest.raises(ValueError, match="test must be one of paired_t, permutation"):
        paired_test(d, d, test="wilcoxon")


def test_holm_by_hand_and_bh_is_scipys():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(1*0.04, 0.06)=0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    assert adjust(p, "bh").tolist() == pytest.approx(stats.false_discovery_control(p, method="bh").tolist())
    assert adjust(p, "none").tolist() == p
    with_nan = adjust([0.01, math.nan, 0.04], "holm")
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1]) and with_nan[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="correction must be one of holm, bh, none"):
        adjust(p, "bonferroni")


def test_pairing_on_seed_and_data_seed_drops_missing_partners():
    a = _trials([0.6, 0.7, 0.8, 0.9], seeds=[0, 1, 2, 3], data_seeds=[0, 0, 1, 1])
    b = _trials([0.5, 0.6, 0.7, 0.8], seeds=[0, 1, 2, 3], data_seeds=[0, 0, 0, 1])  # seed 2 on another data seed
    pairs = pair(a, b, "metric.test_acc")
    assert pairs[["seed", "dataset.data_seed"]].values.tolist() == [[0, 0], [1, 0], [3, 1]]
    c = compare(a, b, "metric.test_acc")
    assert c.n_pairs == 3 and (c.n_a, c.n_b) == (4, 4)
    assert c.mean_diff == pytest.approx(0.1) and c.test == "paired_t"
    # an extra pairing key (a data axis) never pairs across its levels
    a2 = _trials([0.6, 0.7, 0.8], imbalance=[10, 10, 10])
    b2 = _trials([0.5, 0.6, 0.7], imbalance=[100, 100, 100])
    assert pair(a2, b2, "metric.test_acc", on=("seed", "dataset.data_seed", "imbalance")).empty


def test_no_shared_seed_falls_back_to_welch_and_pooled_configurations_pair_by_seed_mean():
    a, b = _trials([0.6, 0.7, 0.9], seeds=[0, 1, 2]), _trials([0.5, 0.52, 0.55], seeds=[3, 4, 5])
    c = compare(a, b, "metric.test_acc")
    assert c.test == "welch" and c.p_value == pytest.approx(stats.ttest_ind([0.6, 0.7, 0.9], [0.5, 0.52, 0.55],
                                                                            equal_var=False).pvalue)
    pooled = _trials([0.6, 0.8, 0.5, 0.7, 0.9, 0.9], seeds=[0, 0, 1, 1, 2, 2])  # two configurations per seed
    pairs = pair(pooled, _trials([0.5, 0.5, 0.6]), "metric.test_acc")
    assert pairs["a"].tolist() == pytest.approx([0.7, 0.6, 0.9])


def test_verdict_follows_direction_alpha_and_the_adjusted_p():
    better = paired_test(A, B)
    assert verdict(better, better.p_value, higher=True) == "better"
    assert verdict(better, better.p_value, higher=False) == "worse"  # e.g. a loss: larger is worse
    assert verdict(better, 0.2, higher=True) == "same"


def test_tied_best_set_is_holm_over_paired_tests_against_the_best():
    best = [0.70, 0.72, 0.71, 0.69, 0.73]
    close = [0.69, 0.72, 0.70, 0.70, 0.72]  # within noise of the best
    far = [0.60, 0.63, 0.61, 0.58, 0.62]  # clearly worse
    cells = {"best": _trials(best), "close": _trials(close), "far": _trials(far)}
    t = tied_best(cells, "metric.test_acc", higher=True)
    assert t.best == "best" and t.members == {"best", "close"}
    p_close, p_far = stats.ttest_rel(close, best).pvalue, stats.ttest_rel(far, best).pvalue
    assert t.p_adjusted["close"] == pytest.approx(holm([p_close, p_far])[0])
    assert t.p_adjusted["far"] == pytest.approx(holm([p_close, p_far])[1]) and t.p_adjusted["far"] < 0.05
    two = tied_best({k: v.iloc[:2] for k, v in cells.items()}, "metric.test_acc", higher=True)
    assert two.members == set() and "2 pairs" in two.reason
    low = tied_best(cells, "metric.test_acc", higher=False)  # minimising: the far cell is the best
    assert low.best == "far" and low.members == {"far"}


def test_expected_max_formula_by_hand_and_its_limits():
    v = [0.3, 0.1, 0.2]
    # sorted 0.1, 0.2, 0.3; n=2: weights 1/9, 3/9, 5/9
    mean, std = expected_max(v, 2)
    assert mean == pytest.approx((0.1 * 1 + 0.2 * 3 + 0.3 * 5) / 9)
    second = (0.01 * 1 + 0.04 * 3 + 0.09 * 5) / 9
    assert std == pytest.approx(math.sqrt(second - mean ** 2))
    assert expected_max(v, 1)[0] == pytest.approx(0.2)
    assert expected_max(v, 500)[0] == pytest.approx(0.3) and expected_max(v, 500)[1] < 1e-6
    assert expected_max(v, 2, higher=False)[0] == pytest.approx((0.3 * 1 + 0.2 * 3 + 0.1 * 5) / 9)
    curve = expected_max_curve(v)
    assert curve["n"].tolist() == [1, 2, 3] and curve["expected_max"].is_monotonic_increasing


def test_critical_difference_is_friedman_then_nemenyi():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.8, size=6)
    scores = pd.DataFrame({"ce": base, "bs": base + 0.05, "cb": base + 0.02 + rng.normal(0, 0.01, 6)})
    cd = critical_difference(scores)
    ref = stats.friedmanchisquare(scores["ce"], scores["bs"], scores["cb"])
    assert cd.statistic == pytest.approx(ref.statistic) and cd.p_value == pytest.approx(ref.pvalue)
    assert cd.ranks.index.tolist() == ["bs", "cb", "ce"] and cd.ranks["bs"] == 1.0
    q = stats.studentized_range.ppf(0.95, 3, np.inf) / math.sqrt(2)
    assert cd.cd == pytest.approx(q * math.sqrt(3 * 4 / (6 * 6)))
    assert cd.pairwise.shape == (3, 3)
    with pytest.raises(ValueError, match="at least 3 methods over 5"):
        critical_difference(scores.iloc[:4])

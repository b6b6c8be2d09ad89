"""Significance for seed-averaged tables: paired comparisons, multiple-testing corrections, the tied-best set,
the expected best score under a trial budget, and critical-difference ranks.

Pure functions on tidy frames (one row per trial, as :mod:`analysis.mlflow_io` reads them) or plain arrays.
Every test is scipy's: ``ttest_rel`` (paired t), ``ttest_ind(equal_var=False)`` (Welch), ``permutation_test``
(exact sign flips), ``false_discovery_control`` (Benjamini-Hochberg), ``friedmanchisquare``; Nemenyi ranks
come from scikit-posthocs. Holm's step-down is here because scipy has none.

Why pairing: every configuration of a sweep trains on the same seeds and data seeds, so the seed-to-seed
noise is shared and a paired test on per-seed differences sees effects that the two cells' stds hide.
Differences are ``a - b`` (the cell minus the baseline, or the cell minus the column's best), in the
value's own units; callers scale for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ("seed", "dataset.data_seed")  # trials pair when they share these (and whatever the caller adds)
MIN_PAIRS = 3  # a test on fewer pairs (or Welch on fewer trials a side) decides nothing: no mark is made
TESTS = ("paired_t", "permutation")
CORRECTIONS = ("holm", "bh", "none")
ALPHA = 0.05
CONFIDENCE = 0.95
EXACT_PERMUTATION_MAX_N = 16  # 2^16 sign flips enumerated; above, 20000 random flips (seeded)
PERMUTATION_RESAMPLES = 20000
VERDICTS = ("better", "worse", "same", "")


@dataclass(frozen=True)
class Comparison:
    """One cell against a reference cell: ``a - b``.

    ``test`` is ``paired_t``, ``permutation``, ``welch`` or ``""`` (not tested: ``reason`` says why). With
    a paired test, ``mean_diff`` is the mean of the per-pair differences and the interval is the 95 % t
    interval of that mean; with Welch, the difference of the two means and Welch's interval.
    """

    n_pairs: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n_a: int = 0
    n_b: int = 0
    reason: str = ""

    @property
    def tested(self) -> bool:
        return bool(self.test) and not math.isnan(self.p_value)


def _finite(values) -> np.ndarray:
    xs = np.asarray(values, dtype=float)
    return xs[np.isfinite(xs)]


def pair(a: pd.DataFrame, b: pd.DataFrame, value: str, on: Sequence[str] = PAIR_KEYS) -> pd.DataFrame:
    """The pairs of two groups of trials: one row per key of ``on`` present on both sides, columns ``on``
    plus ``a`` and ``b``.

    Keys in ``on`` that neither frame has are ignored (a sweep without data seeds pairs on the seed). A key
    held by several trials of one side (a cell pooling configurations) is represented by their mean, so a
    pair is always one seed's comparison. Trials without a finite value, and keys missing on one side, drop
    out: ``len(result)`` is the number of pairs.
    """
    keys = [k for k in on if k in a.columns or k in b.columns]
    if not keys:
        raise KeyError(f"pair: none of the pairing keys {', '.join(on)} is a column")
    missing = [k for k in keys if k not in a.columns or k not in b.columns]
    if missing:
        raise KeyError(f"pair: key {missing[0]!r} is a column of one side only")

    # Plain dictionaries: a report pairs thousands of small cells, where pandas' groupby and merge dominate.
    def side(frame: pd.DataFrame) -> dict[tuple, float]:
        values = pd.to_numeric(frame[value], errors="coerce").to_numpy(dtype=float)
        sums: dict[tuple, list[float]] = {}
        for key, v in zip(frame[keys].itertuples(index=False, name=None), values, strict=True):
            if np.isfinite(v):  # a missing key value (NaN) matches another missing one, as in a merge
                key = tuple(None if isinstance(x, float) and math.isnan(x) else x for x in key)
                sums.setdefault(key, []).append(v)
        return {k: math.fsum(vs) / len(vs) for k, vs in sums.items()}

    left, right = side(a), side(b)
    shared = [k for k in left if k in right]
    frame = pd.DataFrame(shared, columns=keys) if shared else pd.DataFrame(columns=keys)
    return frame.assign(a=[left[k] for k in shared], b=[right[k] for k in shared])


def _identical(diffs: np.ndarray) -> bool:
    return bool(np.all(diffs == diffs[0]))


def sign_flip_pvalue(diffs: Sequence[float]) -> float:
    """Two-sided p of the sign-flip permutation test of mean(diffs) = 0, exact up to
    ``EXACT_PERMUTATION_MAX_N`` differences (all 2^n sign patterns), seeded Monte Carlo above.

    scipy's one-sample ``permutation_type='samples'`` flips signs; its two-sided p doubles the smaller tail,
    which for this symmetric null equals the share of sign patterns with |mean| >= the observed |mean|.
    """
    d = _finite(diffs)
    if d.size == 0:
        return math.nan
    if _identical(d) and d[0] == 0:
        return 1.0
    exact = d.size <= EXACT_PERMUTATION_MAX_N
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=np.inf if exact else PERMUTATION_RESAMPLES,
                                    alternative="two-sided", rng=np.random.default_rng(0))
    return float(result.pvalue)


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "paired_t") -> Comparison:
    """``a - b`` pair by pair: the mean difference, its 95 % t interval, and the two-sided p of ``test``
    (``paired_t``: ``scipy.stats.ttest_rel``; ``permutation``: exact sign flips). Fewer than ``MIN_PAIRS``
    pairs: not tested, with the reason.

    Pairs that differ by the same amount every time have no spread: the interval is that amount and p is
    1 when it is 0 (identical results), 0 otherwise (scipy's t would be 0/0 or infinite).
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {a.size} values against {b.size}; pairs need equal lengths")
    d = a - b
    n = int(d.size)
    if n < MIN_PAIRS:
        mean = float(d.mean()) if n else math.nan
        return Comparison(n, mean, math.nan, math.nan, math.nan, "", n, n,
                          reason=f"{n} pair{'s' if n != 1 else ''}: a test needs at least {MIN_PAIRS}")
    mean = float(d.mean())
    if _identical(d):
        p = 1.0 if d[0] == 0 else 0.0
        return Comparison(n, mean, mean, mean, p if test == "paired_t" else sign_flip_pvalue(d), test, n, n)
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(CONFIDENCE)
    p = float(result.pvalue) if test == "paired_t" else sign_flip_pvalue(d)
    return Comparison(n, mean, float(ci.low), float(ci.high), p, test, n, n)


def welch_test(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(a) - mean(b) with Welch's 95 % interval and two-sided p (``ttest_ind(equal_var=False)``), for
    groups that share no seed. Fewer than ``MIN_PAIRS`` finite values on a side: not tested."""
    a, b = _finite(a), _finite(b)
    diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if min(a.size, b.size) < MIN_PAIRS:
        return Comparison(0, diff, math.nan, math.nan, math.nan, "", int(a.size), int(b.size),
                          reason=f"no shared seeds and {min(a.size, b.size)} trials on a side: "
                                 f"Welch's test needs at least {MIN_PAIRS} each")
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread on either side: the difference is exact
        return Comparison(0, diff, diff, diff, 1.0 if diff == 0 else 0.0, "welch", int(a.size), int(b.size))
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(CONFIDENCE)
    return Comparison(0, diff, float(ci.low), float(ci.high), float(result.pvalue), "welch", int(a.size),
                      int(b.size))


def compare(a: pd.DataFrame, b: pd.DataFrame, value: str, *, on: Sequence[str] = PAIR_KEYS,
            test: str = "paired_t") -> Comparison:
    """Trials ``a`` against trials ``b`` on the column ``value``: paired on ``on`` (see :func:`pair`) when
    any key is shared; Welch's test only when no pair exists at all. ``n_a``/``n_b`` count the trials with a
    value on each side, so ``n_pairs < min(n_a, n_b)`` shows a dropped partner."""
    pairs = pair(a, b, value, on)
    n_a, n_b = int(np.isfinite(pd.to_numeric(a[value], errors="coerce")).sum()), \
        int(np.isfinite(pd.to_numeric(b[value], errors="coerce")).sum())
    if pairs.empty:
        result = welch_test(a[value], b[value])
    else:
        result = paired_test(pairs["a"].to_numpy(), pairs["b"].to_numpy(), test)
    return Comparison(result.n_pairs, result.mean_diff, result.ci_low, result.ci_high, result.p_value,
                      result.test, n_a, n_b, result.reason)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def adjust(pvalues: Sequence[float], correction: str = "holm") -> np.ndarray:
    """``pvalues`` corrected over the family of the finite ones (NaN = not tested stays NaN): ``holm``,
    ``bh`` (Benjamini-Hochberg, ``scipy.stats.false_discovery_control``) or ``none``."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    p = np.asarray(pvalues, dtype=float)
    out = p.copy()
    tested = np.isfinite(p)
    if correction == "none" or not tested.any():
        return out
    out[tested] = holm(p[tested]) if correction == "holm" else stats.false_discovery_control(p[tested], method="bh")
    return out


def verdict(comparison: Comparison, p_adjusted: float, higher: bool, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` when the adjusted p is below ``alpha`` (in the direction of the mean
    difference, ``higher`` = larger values are better), ``same`` when tested and not significant, ``""``
    when not tested."""
    if not comparison.tested or math.isnan(p_adjusted):
        return ""
    if p_adjusted >= alpha or comparison.mean_diff == 0:
        return "same"
    return "better" if (comparison.mean_diff > 0) == higher else "worse"


@dataclass
class TiedBest:
    """The cells of one column that are not significantly worse than its best cell.

    ``best`` is the key of the best mean (None when the column is empty); ``members`` the tied set (the best
    included) or empty when nothing could be tested (``reason`` says why); ``comparisons`` and ``p_adjusted``
    hold each other cell's test against the best.
    """

    best: Hashable | None
    members: set = field(default_factory=set)
    comparisons: dict = field(default_factory=dict)
    p_adjusted: dict = field(default_factory=dict)
    reason: str = ""


def tied_best(cells: Mapping[Hashable, pd.DataFrame], value: str, higher: bool, *, on: Sequence[str] = PAIR_KEYS,
              test: str = "paired_t", correction: str = "holm", alpha: float = ALPHA) -> TiedBest:
    """The statistically tied best of a column: every cell (trials frame) not significantly worse than the
    cell with the best mean, each tested against the best (:func:`compare`), ``correction`` across the
    column. A cell that cannot be tested (fewer than ``MIN_PAIRS`` pairs) is left out; when none can be,
    the set is empty and ``reason`` says why: a bold cell must mean something.
    """
    means = {k: float(np.mean(_finite(f[value]))) for k, f in cells.items() if _finite(f[value]).size}
    if not means:
        return TiedBest(None, reason="no cell has a value")
    best = (max if higher else min)(means, key=lambda k: means[k])
    others = [k for k in means if k != best]
    if not others:
        return TiedBest(best, reason="one cell: nothing to compare")
    comparisons = {k: compare(cells[k], cells[best], value, on=on, test=test) for k in others}
    adjusted = dict(zip(others, adjust([comparisons[k].p_value for k in others], correction), strict=True))
    if not any(c.tested for c in comparisons.values()):
        reasons = sorted({c.reason for c in comparisons.values() if c.reason})
        return TiedBest(best, set(), comparisons, adjusted, reason="; ".join(reasons) or "nothing tested")
    members = {best} | {k for k in others if comparisons[k].tested
                        and verdict(comparisons[k], adjusted[k], higher, alpha) != "worse"}
    return TiedBest(best, members, comparisons, adjusted)


def expected_max(scores: Sequence[float], n: int, higher: bool = True) -> tuple[float, float]:
    """Dodge et al. (2019): the expected best of ``n`` i.i.d. draws (with replacement) from the empirical
    distribution of ``scores``, and its standard deviation.

    With v_(1) <= ... <= v_(N) sorted, P(max_n = v_(i)) = (i/N)^n - ((i-1)/N)^n, so
    E[max_n] = sum_i v_(i) ((i/N)^n - ((i-1)/N)^n). For ``higher=False`` the best is the minimum.
    """
    v = np.sort(_finite(scores))
    if v.size == 0:
        raise ValueError("expected_max needs at least one finite score")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not higher:
        v = -v[::-1]
    size = v.size
    i = np.arange(1, size + 1)
    weights = (i / size) ** n - ((i - 1) / size) ** n
    mean = float(np.dot(weights, v))
    var = max(0.0, float(np.dot(weights, (v - mean) ** 2)))
    return (mean if higher else -mean), math.sqrt(var)


def expected_max_curve(scores: Sequence[float], budgets: Sequence[int] | None = None,
                       higher: bool = True) -> pd.DataFrame:
    """:func:`expected_max` for each budget (default 1 .. len(scores)): columns ``n``, ``expected_max``,
    ``std``."""
    size = _finite(scores).size
    budgets = list(budgets) if budgets is not None else list(range(1, size + 1))
    rows = [(n, *expected_max(scores, n, higher)) for n in budgets]
    return pd.DataFrame(rows, columns=["n", "expected_max", "std"])


CD_MIN_METHODS = 3
CD_MIN_SETTINGS = 5


@dataclass
class CriticalDifference:
    """Friedman's test over settings (blocks) x methods, then Nemenyi's pairwise p-values.

    ``ranks`` are average ranks (1 = best); ``cd`` is Nemenyi's critical difference of average ranks at
    ``alpha``: two methods whose ranks differ by less are not significantly different.
    """

    statistic: float
    p_value: float
    ranks: pd.Series
    pairwise: pd.DataFrame
    cd: float
    n_settings: int
    alpha: float = ALPHA


def critical_difference(scores: pd.DataFrame, higher: bool = True, alpha: float = ALPHA) -> CriticalDifference:
    """``scores``: one row per setting (dataset x imbalance x noise level), one column per method, each the
    method's score there. Rows with a missing method are dropped. Needs ``CD_MIN_METHODS`` methods and
    ``CD_MIN_SETTINGS`` complete settings (fewer make Friedman's chi-square approximation meaningless)."""
    import scikit_posthocs as sp

    data = scores.dropna(axis=0, how="any").astype(float)
    k, n = data.shape[1], data.shape[0]
    if k < CD_MIN_METHODS or n < CD_MIN_SETTINGS:
        raise ValueError(f"critical_difference needs at least {CD_MIN_METHODS} methods over {CD_MIN_SETTINGS} "
                         f"complete settings, got {k} over {n}")
    friedman = stats.friedmanchisquare(*(data[c].to_numpy() for c in data.columns))
    ranked = (-data if higher else data).rank(axis=1, method="average")
    ranks = ranked.mean(axis=0).sort_values()
    pairwise = sp.posthoc_nemenyi_friedman(-data if higher else data)
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    cd = float(q * math.sqrt(k * (k + 1) / (6.0 * n)))
    return CriticalDifference(float(friedman.statistic), float(friedman.pvalue), ranks, pairwise, cd, n, alpha)


__all__ = ["PAIR_KEYS", "MIN_PAIRS", "TESTS", "CORRECTIONS", "ALPHA", "VERDICTS", "Comparison", "pair",
           "paired_test", "welch_test", "sign_flip_pvalue", "compare", "holm", "adjust", "verdict", "TiedBest",
           "tied_best", "expected_max", "expected_max_curve", "CriticalDifference", "critical_difference",
           "CD_MIN_METHODS", "CD_MIN_SETTINGS"]

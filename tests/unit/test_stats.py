"""Statistics of the timing guards: quantiles, trimmed means, random-effects pooling, decisions."""

from __future__ import annotations

import math
import random

import pytest

from pytest_mmperf.timing import stats
from pytest_mmperf.timing.stats import Decision


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [  # reference values from standard t tables
        (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 9, 2.2622),
        (0.95, 3, 2.3534), (0.995, 10, 3.1693), (0.975, math.inf, 1.95996),
    ],
)
def test_t_quantile_matches_tables(p: float, df: float, expected: float) -> None:
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=2e-4)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-4)


def test_t_cdf_inverts_quantile() -> None:
    for df in (1.5, 3.0, 17.0):
        assert stats.t_cdf(stats.t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-9)


def test_t_quantile_rejects_bad_probability() -> None:
    with pytest.raises(ValueError, match="in \\(0, 1\\), got 1.0"):
        stats.t_quantile(1.0, 3)


def test_trimmed_mean_ignores_outliers_and_matches_known_values() -> None:
    values = [0.0, 0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.0, 3.0]  # one outlier round
    est = stats.trimmed_mean_se(values, trim=0.2)
    assert abs(est.estimate) < 0.01  # a plain mean would be ~0.3
    assert est.n == 10 and est.df == 10 - 2 * 2 - 1
    # No trimming: the ordinary mean and standard error.
    plain = stats.trimmed_mean_se([1.0, 2.0, 3.0, 4.0], trim=0.0)
    assert plain.estimate == pytest.approx(2.5)
    assert plain.se == pytest.approx(math.sqrt(5 / 3) / 2)


def test_trimmed_mean_needs_two_values() -> None:
    with pytest.raises(ValueError, match="at least 2 values for a standard error, got 1"):
        stats.trimmed_mean_se([0.1])


def _process(rng: random.Random, mu: float, bias_sd: float, noise_sd: float, n: int = 25
             ) -> list[float]:
    bias = rng.gauss(0.0, bias_sd)
    return [mu + bias + rng.gauss(0.0, noise_sd) for _ in range(n)]


def test_pooled_interval_covers_known_ratio_with_process_bias() -> None:
    rng = random.Random(1234)
    true = math.log(0.5)  # candidate twice as fast
    trials, covered, estimates = 300, 0, []
    for _ in range(trials):
        per_process = [_process(rng, true, 0.03, 0.05) for _ in range(3)]
        pooled = stats.pool_log_ratios(per_process, confidence=0.95)
        covered += pooled.ci_low <= true <= pooled.ci_high
        estimates.append(pooled.estimate)
    assert sum(estimates) / trials == pytest.approx(true, abs=0.01)
    assert covered / trials >= 0.93  # nominal 95 %; random effects must not be anti-conservative


def test_random_effects_widens_interval_when_processes_disagree() -> None:
    rng = random.Random(7)
    agree = [[rng.gauss(0.0, 0.02) for _ in range(30)] for _ in range(3)]
    disagree = [[b + rng.gauss(0.0, 0.02) for _ in range(30)] for b in (-0.15, 0.0, 0.15)]
    p_agree = stats.pool_log_ratios(agree)
    p_disagree = stats.pool_log_ratios(disagree)
    assert p_disagree.tau_dl > 0.1 > p_agree.tau_dl
    assert (p_disagree.ci_high - p_disagree.ci_low) > 3 * (p_agree.ci_high - p_agree.ci_low)


def test_single_process_interval_includes_tau_floor() -> None:
    rs = [0.001 * (i % 3) for i in range(40)]  # tiny within-process noise
    narrow = stats.pool_log_ratios([rs], tau_floor=0.0)
    floored = stats.pool_log_ratios([rs], tau_floor=0.02)
    assert floored.k == 1 and floored.tau == 0.02
    assert (floored.ci_high - floored.ci_low) > 10 * (narrow.ci_high - narrow.ci_low)


def test_single_process_tau_widens_one_process_only() -> None:
    rs = [0.001 * (i % 3) for i in range(40)]
    one = stats.pool_log_ratios([rs], tau_floor=0.03, single_process_tau=0.15)
    assert one.tau == 0.15 and one.ci_high - one.ci_low > 2 * 1.96 * 0.15
    two_with = stats.pool_log_ratios([rs, rs], tau_floor=0.03, single_process_tau=0.15)
    two_without = stats.pool_log_ratios([rs, rs], tau_floor=0.03)
    assert two_with == two_without  # two processes: the random-effects model, unchanged
    assert stats.pool_log_ratios([rs], tau_floor=0.03, single_process_tau=0.01).tau == 0.03
    with pytest.raises(ValueError, match="single_process_tau must be >= 0"):
        stats.pool_log_ratios([rs], single_process_tau=-0.1)


def test_pool_rejects_empty_and_bad_confidence() -> None:
    with pytest.raises(ValueError, match="at least one process"):
        stats.pool([])
    with pytest.raises(ValueError, match="confidence must be in"):
        stats.pool_log_ratios([[0.0, 0.1]], confidence=1.5)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(1.5, 2.0, Decision.PASS), (1.2, 1.49, Decision.FAIL), (1.4, 1.6, Decision.INCONCLUSIVE),
     (1.49999, 1.5, Decision.INCONCLUSIVE)],
)
def test_at_least_boundaries(low: float, high: float, expected: Decision) -> None:
    assert stats.decide_at_least(low, high, 1.5) is expected


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.9, 1.1, Decision.PASS), (1.1000001, 1.3, Decision.FAIL), (1.0, 1.2, Decision.INCONCLUSIVE)],
)
def test_at_most_boundaries(low: float, high: float, expected: Decision) -> None:
    assert stats.decide_at_most(low, high, 1.1) is expected


def test_speedup_and_slowdown_transform_log_scale() -> None:
    pooled = stats.pool_log_ratios([[math.log(0.5) + 0.01 * (i % 5 - 2) for i in range(30)]] * 3)
    speed = stats.speedup_decision(pooled, at_least=1.5)
    assert speed.estimate == pytest.approx(2.0, rel=0.01)
    assert speed.ci_low < speed.estimate < speed.ci_high
    assert speed.decision is Decision.PASS
    slow = stats.slowdown_decision(pooled, tolerance=0.1)
    assert slow.estimate == pytest.approx(0.5, rel=0.01) and slow.threshold == pytest.approx(1.1)
    assert slow.decision is Decision.PASS
    assert stats.speedup_decision(pooled, at_least=3.0).decision is Decision.FAIL


def test_point_decision() -> None:
    assert stats.point_decision(1.6, 1.5, at_least=True) is Decision.PASS
    assert stats.point_decision(1.4, 1.5, at_least=True) is Decision.FAIL
    assert stats.point_decision(1.05, 1.1, at_least=False) is Decision.PASS
    assert stats.point_decision(1.15, 1.1, at_least=False) is Decision.FAIL
    assert str(Decision.INCONCLUSIVE) == "inconclusive" and Decision.PASS == "pass"


def test_fit_loglog_slope_recovers_exponents() -> None:
    sizes = [64, 128, 256, 512]
    slope, intercept, r2 = stats.fit_loglog_slope(sizes, [3.0 * s**2 for s in sizes])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(math.log(3.0))
    assert r2 == pytest.approx(1.0)
    flat = stats.fit_loglog_slope(sizes, [5.0] * 4)
    assert flat[0] == pytest.approx(0.0) and flat[2] == 1.0
    noisy = stats.fit_loglog_slope(sizes, [s * f for s, f in zip(sizes, (1, 1.5, 0.7, 1.2),
                                                                 strict=True)])
    assert 0.5 < noisy[0] < 1.5 and noisy[2] < 1.0


def test_fit_loglog_slope_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        stats.fit_loglog_slope([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="2 distinct sizes"):
        stats.fit_loglog_slope([4, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        stats.fit_loglog_slope([1, 2, 3], [1.0, 2.0])

"""Ratio estimates, confidence intervals and decisions for the timing guards.

Everything here works on the logarithm of a time ratio, where "2x faster" and "2x slower" are
symmetric and the per-round ratios of interleaved blocks are close to normally distributed.
Within one process the per-round log ratios are summarised by a 20 % trimmed mean
(:func:`trimmed_mean_se`), so that a round hit by a context switch barely moves the estimate.
Across processes, whose estimates differ by far more than their own intervals
(docs/measurements.md#between-process-noise), they are pooled with a random-effects model
(:func:`pool`). A :class:`Decision` compares the interval with the guard's threshold
(:func:`speedup_decision`, :func:`slowdown_decision`). The whole rule: docs/statistics.md.

Student-t quantiles come from the regularised incomplete beta function (no scipy). This module
imports neither pytest nor torch.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TRIM = 0.2
# Between-process standard deviation of a log time ratio that we assume at least: the spread of
# identical work between fresh processes (docs/measurements.md#between-process-noise); different
# kernels spread more, which the DerSimonian–Laird estimate then picks up.
DEFAULT_TAU_FLOOR = 0.03


class Decision(str, enum.Enum):
    """Outcome of a statistical comparison; compares equal to its string value."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------------------------
# Student-t quantiles without scipy
# --------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom (``df = inf`` gives the normal)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df!r}")
    if math.isinf(df):
        return statistics.NormalDist().cdf(t)
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf`: the ``p`` quantile of Student's t (bisection, ~1e-10 accurate)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile probability must be in (0, 1), got {p!r}")
    if math.isinf(df) or df > 1e7:
        return statistics.NormalDist().inv_cdf(p)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------
# Within one process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessEstimate:
    """Summary of one process's per-round log ratios: trimmed mean, its standard error, df."""

    estimate: float
    se: float
    df: float
    n: int

    def interval(self, confidence: float) -> tuple[float, float]:
        q = t_quantile(0.5 + confidence / 2.0, self.df)
        return self.estimate - q * self.se, self.estimate + q * self.se


def trimmed_mean_se(values: Sequence[float], trim: float = DEFAULT_TRIM) -> ProcessEstimate:
    """Trimmed mean of ``values`` with its Tukey–McLaughlin standard error.

    ``g = floor(trim * n)`` values are cut from each end; the standard error is
    ``s_w / ((1 - 2g/n) sqrt(n))`` where ``s_w`` is the standard deviation of the winsorised
    sample, with ``n - 2g - 1`` degrees of freedom. Needs at least 2 values.
    """
    n = len(values)
    if n < 2:
        raise ValueError(f"need at least 2 values for a standard error, got {n}")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}")
    xs = sorted(float(v) for v in values)
    if not all(math.isfinite(v) for v in xs):
        raise ValueError(f"values must be finite, got {[v for v in xs if not math.isfinite(v)]}")
    g = int(math.floor(trim * n))
    if n - 2 * g < 2:
        g = (n - 2) // 2
    kept = xs[g : n - g]
    winsorised = [xs[g]] * g + kept + [xs[n - g - 1]] * g
    s_w = statistics.stdev(winsorised)
    se = s_w / ((1.0 - 2.0 * g / n) * math.sqrt(n))
    return ProcessEstimate(statistics.fmean(kept), se, float(n - 2 * g - 1), n)


# --------------------------------------------------------------------------------------------
# Across processes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PooledEstimate:
    """Random-effects pooled log ratio across processes (:func:`pool`)."""

    estimate: float  # mu, log scale
    ci_low: float  # log scale
    ci_high: float
    se: float
    tau: float  # between-process standard deviation used (>= tau_floor)
    tau_dl: float  # DerSimonian–Laird estimate before the floor
    df: float
    k: int  # number of processes
    confidence: float
    per_process: tuple[ProcessEstimate, ...]


def pool(
    per_process: Sequence[ProcessEstimate],
    confidence: float = 0.95,
    tau_floor: float = DEFAULT_TAU_FLOOR,
    single_process_tau: float | None = None,
) -> PooledEstimate:
    """Pool per-process estimates with a random-effects model (DL tau², floor, modified HKSJ).

    The per-process log ratios ``y_k`` with variances ``v_k`` follow ``y_k = mu + b_k + e_k``,
    ``b_k ~ N(0, tau²)``:

    * ``tau²`` by DerSimonian–Laird, but never below ``tau_floor²``: two or three processes
      cannot estimate it reliably, and an estimate of 0 would pretend that the processes are
      exchangeable blocks of one process;
    * ``mu`` as the inverse-variance weighted mean with weights ``1 / (v_k + tau²)``;
    * the interval ``mu ± t(k - 1) · se`` with the Hartung–Knapp–Sidik–Jonkman variance (the
      weighted spread of the ``y_k`` around ``mu``, never smaller than the model variance: the
      "modified HKSJ" rule) and a Student-t quantile.

    One process cannot estimate the between-process sd: its interval is its own trimmed-mean
    interval widened by ``single_process_tau`` (default ``tau_floor``; the larger of the two is
    used). All estimates are on the log scale.
    """
    if not per_process:
        raise ValueError("pool() needs at least one process estimate, got none")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    if tau_floor < 0:
        raise ValueError(f"tau_floor must be >= 0, got {tau_floor!r}")
    if single_process_tau is not None and not single_process_tau >= 0:
        raise ValueError(f"single_process_tau must be >= 0 or None, got {single_process_tau!r}")
    k = len(per_process)
    ys = [p.estimate for p in per_process]
    vs = [max(p.se, 1e-12) ** 2 for p in per_process]
    if k == 1:
        p = per_process[0]
        tau = max(tau_floor, single_process_tau or 0.0)
        se = math.sqrt(vs[0] + tau**2)
        q = t_quantile(0.5 + confidence / 2.0, p.df)
        return PooledEstimate(
            p.estimate, p.estimate - q * se, p.estimate + q * se, se,
            tau, 0.0, p.df, 1, confidence, tuple(per_process),
        )
    w = [1.0 / v for v in vs]
    sw = sum(w)
    y_fixed = sum(wi * yi for wi, yi in zip(w, ys, strict=True)) / sw
    q_stat = sum(wi * (yi - y_fixed) ** 2 for wi, yi in zip(w, ys, strict=True))
    denom = sw - sum(wi * wi for wi in w) / sw
    tau2_dl = max(0.0, (q_stat - (k - 1)) / denom) if denom > 0 else 0.0
    tau2 = max(tau2_dl, tau_floor**2)
    ws = [1.0 / (v + tau2) for v in vs]
    sws = sum(ws)
    mu = sum(wi * yi for wi, yi in zip(ws, ys, strict=True)) / sws
    model_var = 1.0 / sws
    # Hartung–Knapp: the observed weighted spread; "modified" = never below the model variance.
    hk_var = sum(wi * (yi - mu) ** 2 for wi, yi in zip(ws, ys, strict=True)) / ((k - 1) * sws)
    var = max(model_var, hk_var)
    se = math.sqrt(var)
    df = float(k - 1)
    q = t_quantile(0.5 + confidence / 2.0, df)
    return PooledEstimate(
        mu, mu - q * se, mu + q * se, se, math.sqrt(tau2), math.sqrt(tau2_dl), df, k,
        confidence, tuple(per_process),
    )


def pool_log_ratios(
    per_process_log_ratios: Sequence[Sequence[float]],
    confidence: float = 0.95,
    tau_floor: float = DEFAULT_TAU_FLOOR,
    trim: float = DEFAULT_TRIM,
    single_process_tau: float | None = None,
) -> PooledEstimate:
    """:func:`pool` over :func:`trimmed_mean_se` of each process's per-round log ratios."""
    return pool([trimmed_mean_se(r, trim) for r in per_process_log_ratios], confidence, tau_floor,
                single_process_tau)


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


def decide_at_least(low: float, high: float, threshold: float) -> Decision:
    """Quantity must be >= threshold: pass if ``low >= threshold``, fail if ``high < threshold``."""
    if low >= threshold:
        return Decision.PASS
    if high < threshold:
        return Decision.FAIL
    return Decision.INCONCLUSIVE


def decide_at_most(low: float, high: float, threshold: float) -> Decision:
    """Quantity must be <= threshold: pass if ``high <= threshold``, fail if ``low > threshold``."""
    if high <= threshold:
        return Decision.PASS
    if low > threshold:
        return Decision.FAIL
    return Decision.INCONCLUSIVE


@dataclass(frozen=True)
class RatioDecision:
    """A decision about a time ratio, on the natural (not log) scale of the guarded quantity."""

    decision: Decision
    estimate: float
    ci_low: float
    ci_high: float
    threshold: float
    pooled: PooledEstimate


def speedup_decision(pooled: PooledEstimate, at_least: float) -> RatioDecision:
    """Speedup ``t_baseline / t_candidate`` = ``exp(-log ratio)`` must be >= ``at_least``.

    Pass if the interval's lower bound is >= ``at_least``, fail if its upper bound is below it,
    else inconclusive.
    """
    est, low, high = math.exp(-pooled.estimate), math.exp(-pooled.ci_high), math.exp(-pooled.ci_low)
    return RatioDecision(decide_at_least(low, high, at_least), est, low, high, at_least, pooled)


def slowdown_decision(pooled: PooledEstimate, tolerance: float) -> RatioDecision:
    """Slowdown ``t_candidate / t_baseline`` must be <= ``1 + tolerance``.

    Pass if the interval's upper bound is <= ``1 + tolerance``, fail if its lower bound is
    above it, else inconclusive.
    """
    est, low, high = math.exp(pooled.estimate), math.exp(pooled.ci_low), math.exp(pooled.ci_high)
    limit = 1.0 + tolerance
    return RatioDecision(decide_at_most(low, high, limit), est, low, high, limit, pooled)


def point_decision(estimate: float, threshold: float, *, at_least: bool,
                   margin: float = 0.0) -> Decision:
    """Decision by the point estimate (the ``inconclusive="estimate"`` policy): fail only when
    the estimate is beyond the threshold by more than ``margin`` (log scale; the guards pass the
    between-process spread, so that an estimate within the machine's own noise of the threshold
    passes, with a warning, instead of raising a false alarm)."""
    beyond = math.log(threshold / estimate) if at_least else math.log(estimate / threshold)
    return Decision.FAIL if beyond > margin else Decision.PASS


# --------------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------------


def fit_loglog_slope(
    sizes: Sequence[float], values: Sequence[float]
) -> tuple[float, float, float]:
    """Least-squares fit ``log(value) = slope * log(size) + intercept``; returns
    ``(slope, intercept, r2)``. ``r2`` is 1.0 when all values are equal (a perfect flat fit).

    Needs at least 2 distinct positive sizes and positive values.
    """
    if len(sizes) != len(values):
        raise ValueError(f"sizes and values differ in length: {len(sizes)} vs {len(values)}")
    if len(sizes) < 2:
        raise ValueError(f"need at least 2 sizes to fit a slope, got {list(sizes)}")
    bad = [(s, v) for s, v in zip(sizes, values, strict=True) if not (s > 0 and v > 0)]
    if bad:
        raise ValueError(f"sizes and values must be > 0 for a log-log fit, got (size, value) {bad}")
    xs = [math.log(s) for s in sizes]
    ys = [math.log(v) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError(f"need at least 2 distinct sizes to fit a slope, got {list(sizes)}")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 if ss_tot == 0 else max(0.0, 1.0 - ss_res / ss_tot)
    return slope, intercept, r2


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``values`` (linear interpolation between order statistics, as
    numpy's default); one value gives it three times. Raises ``ValueError`` when empty."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("quartiles() of no values")
    if len(data) == 1:
        return data[0], data[0], data[0]
    q1, q2, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return q1, q2, q3

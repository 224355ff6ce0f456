"""Privacy accounting of a data owner: zero-concentrated DP, composed across jobs, shown as (ε, δ).

PROTOCOL.md section 8. Every job an owner protects costs it ρ-zCDP (Bun and Steinke 2016): the
discrete Gaussian mechanism of :mod:`data_owner.release` is ρ-zCDP, ρ-zCDP releases compose by
adding their ρ, and ρ-zCDP implies (ε, δ)-DP for every δ > 0. The conversion is OpenDP's
(``make_zCDP_to_approxDP``, the bound of Canonne, Kamath and Steinke 2020), which is tighter than
the classic ε = ρ + 2√(ρ log(1/δ)); the library is used, not a copy of its formula, so that the
bound is the one its proofs cover.

The owner's operator states what a job may cost and what all jobs together may cost as (ε, δ):
:func:`rho_for` finds the largest ρ whose conversion stays within them, so a budget of 3.0 at
δ = 1e-5 admits more than three jobs of ε = 1.0 (their ρ add up, not their ε).
"""

from __future__ import annotations

import math
from functools import lru_cache

import opendp.prelude as dp

# make_gaussian is in OpenDP's "contrib" set (proof written, not yet vetted by its own reviewers);
# "honest-but-curious" lets a measurement state its own ρ, which is how a composed ρ is converted.
dp.enable_features("contrib", "honest-but-curious")

#: Bisection steps of :func:`rho_for`: its result is within 2**-60 (relative) of the largest ρ.
_BISECTION_STEPS = 60


def epsilon_of(rho: float, delta: float) -> float:
    """The ε of (ε, δ)-DP that ρ-zCDP implies at ``delta``; 0 for ρ = 0."""
    if rho <= 0:
        return 0.0
    stated = dp.m.make_user_measurement(
        dp.atom_domain(T=int),
        dp.absolute_distance(T=int),
        dp.zero_concentrated_divergence(),
        lambda value: value,
        lambda _distance: float(rho),
    )
    profile = dp.c.make_zCDP_to_approxDP(stated).map(1)  # type: ignore[no-untyped-call]
    return float(profile.epsilon(delta))


@lru_cache(maxsize=64)
def rho_for(epsilon: float, delta: float) -> float:
    """The largest ρ whose (ε, δ) conversion at ``delta`` is at most ``epsilon`` (never above it).

    Raises
    ------
    ValueError
        When ``epsilon`` or ``delta`` is not a finite positive number, or ``delta`` is not below 1.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite positive number, not {epsilon!r}")
    if not (0 < delta < 1):
        raise ValueError(f"delta must lie strictly between 0 and 1, not {delta!r}")
    low, high = 0.0, max(1.0, epsilon)
    while epsilon_of(high, delta) <= epsilon:
        low, high = high, 2 * high
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if epsilon_of(middle, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low

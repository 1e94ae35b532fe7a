"""Parsing and comparing agreement thresholds (θ)."""

from __future__ import annotations

from fractions import Fraction

# CONTRACT: a tier is accepted when agreement ≥ θ − 0.005, so 0.67 and "2/3" both mean two of three.
THRESHOLD_TOLERANCE = 0.005


def parse_threshold(value: str | float | int) -> float:
    """Read θ from a decimal or a fraction ("2/3"); it must lie in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError("threshold must be a number or a fraction such as 2/3")
    if isinstance(value, int | float):
        theta = float(value)
    else:
        text = value.strip()
        try:
            theta = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"threshold {value!r} is not a decimal or a fraction such as 2/3"
            ) from None
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"threshold {value!r} must be in (0, 1]")
    return theta


def reaches(agreement: float, theta: float) -> bool:
    """Whether an agreement fraction meets θ, with the contract's tolerance."""
    return agreement >= theta - THRESHOLD_TOLERANCE

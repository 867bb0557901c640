"""Checks of user-supplied Python arguments (counts, seeds, ratios), each failing with one line that says what
was wrong and what is expected. Host-side only: call them where the values are plain Python data, never
inside a sampling step."""
from __future__ import annotations

import math
import numbers
import operator

__all__ = ["ArgumentTypeError", "integer", "positive_int", "seeds", "real_in_range", "non_negative_real"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Also a ValueError, so entrypoints that turn ValueErrors into usage
    errors (``pgdm CMD: error: ...``) report it the same way."""


def integer(name: str, value: object) -> int:
    """``value`` as an int: Python and NumPy integers and one-element integer tensors; bools, floats
    (even 2.0) and strings raise :class:`ArgumentTypeError`."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def positive_int(name: str, value: object) -> int:
    """``value`` as an int ≥ 1 (a count: steps, samples, batch size)."""
    n = integer(name, value)
    if n < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {n}")
    return n


def seeds(seed: object, batch: int) -> list[int]:
    """One int seed per image: an int gives seed, seed + 1, …; a sequence must hold ``batch`` ints."""
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__iter__") or getattr(seed, "ndim", 1) == 0:
        first = integer("seed", seed)
        return [first + i for i in range(batch)]
    values = [integer("seed", s) for s in seed]  # type: ignore[union-attr]
    if len(values) != batch:
        raise ValueError(f"seed must be an int or one int per image ({batch}), got {len(values)} seeds")
    return values


def real_in_range(name: str, value: object, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi]; NaN, bools and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
        raise ArgumentTypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {type(value).__name__} {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {v}")
    return v


def non_negative_real(name: str, value: object) -> float:
    """``value`` as a finite float ≥ 0 (a regularisation weight, a noise level); NaN and ±inf are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
        raise ArgumentTypeError(f"{name} must be a finite number ≥ 0, got {type(value).__name__} {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number ≥ 0, got {v}")
    return v

"""Argument checks: the one place that says what counts as an integer or a number.

    check_int("MTPConfig.d_model", value, minimum=1)
    check_number("lr", value, above=0)                   # a finite number > 0
    check_number("top_p", value, above=0, maximum=1, optional=True)

Both refuse bool (True is not a count), check_number refuses NaN and, unless finite=False, the
infinities. A value of the wrong type raises TypeError, a value out of range ValueError; the message
names the argument and says what is allowed. Both return the value unchanged.
"""
from __future__ import annotations

import math
from typing import Any


def _allowed(kind: str, minimum=None, maximum=None, above=None, below=None, optional=False, note="") -> str:
    bounds = [f"{op} {x}" for op, x in ((">=", minimum), (">", above), ("<=", maximum), ("<", below)) if x is not None]
    text = " ".join([kind, " and ".join(bounds)]).strip()
    return ("None or " if optional else "") + text + (f" ({note})" if note else "")


def _refuse(error: type[Exception], name: str, value: Any, allowed: str):
    raise error(f"{name}={value!r} is not allowed: must be {allowed}")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, *,
              optional: bool = False, note: str = "") -> Any:
    """`value` if it is an int (not a bool) in [minimum, maximum], or None when `optional`."""
    if value is None and optional:
        return value
    allowed = _allowed("an integer", minimum, maximum, optional=optional, note=note)
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(TypeError, name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _refuse(ValueError, name, value, allowed)
    return value


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
                 above: float | None = None, below: float | None = None, finite: bool = True,
                 optional: bool = False, note: str = "") -> Any:
    """`value` if it is an int or float (not a bool, not NaN, finite unless finite=False) within the
    bounds: minimum <= value <= maximum, above < value < below (each bound optional)."""
    if value is None and optional:
        return value
    allowed = _allowed("a finite number" if finite else "a number", minimum, maximum, above, below, optional, note)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _refuse(TypeError, name, value, allowed)
    if isinstance(value, float) and (math.isnan(value) or (finite and math.isinf(value))):
        _refuse(ValueError, name, value, allowed)
    if ((minimum is not None and not value >= minimum) or (maximum is not None and not value <= maximum)
            or (above is not None and not value > above) or (below is not None and not value < below)):
        _refuse(ValueError, name, value, allowed)
    return value

"""Argument checks: the one place that says what counts as an integer or a number.

    check_int("MTPConfig.d_model", value, minimum=1)
    check_number("lr", value, above=0)                   # a finite number > 0
    check_number("top_p", value, above=0, maximum=1, optional=True)

Both refuse bool (True is not a count), check_number refuses NaN and, unless finite=False, the
infinities. A value of the wrong type raises TypeError, a value out of range ValueError; the message
names the argument and says what is allowed. Both return the value unchanged.

    check_token_ids("input_ids", ids, 2, "(batch, T)", device=model_device)

checks a tensor of token ids (int64 or int32, never bool, on `device`); it raises ValueError for
every problem, the models' long-standing contract for `input_ids`.
"""
from __future__ import annotations

import math
from typing import Any

import torch

TOKEN_ID_DTYPES = (torch.int64, torch.int32)    # what nn.Embedding takes; int32 is exact for any vocabulary


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


def check_token_ids(name: str, value: Any, dims: int, layout: str, *, device: torch.device | None = None) -> Any:
    """`value` if it is a `dims`-d int64 or int32 tensor with values (not meta) on `device` (if given).

    Only the kind of tensor is checked here; the range of its values is the caller's (it differs:
    [0, V) for inputs, [0, V) or ignore_index for targets)."""
    allowed = f"a {dims}-d integer tensor {layout} of dtype int64 or int32"
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be {allowed}; got {type(value).__name__}")
    if value.dim() != dims or value.dtype not in TOKEN_ID_DTYPES:
        raise ValueError(f"{name} must be {allowed}; got a {value.dim()}-d {value.dtype} tensor")
    if value.is_meta:
        raise ValueError(f"{name} is on the meta device, which holds no values; give a tensor with token ids")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but the model is on {device}; "
                         f"move it there with {name}.to({str(device)!r})")
    return value

"""The argument checks every part of the package uses (mtp_edu.checks)."""
import math

import pytest

from mtp_edu.checks import check_int, check_number
from mtp_edu.train import TrainConfig


@pytest.mark.parametrize("value", [True, False, 2.0, "3", None, math.nan, math.inf])
def test_check_int_refuses_what_is_not_an_int_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^steps=.* is not allowed: must be an integer >= 1$"):
        check_int("steps", value, minimum=1)


@pytest.mark.parametrize("value", [True, "0.5", None, [1]])
def test_check_number_refuses_what_is_not_a_number_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^lr=.* is not allowed: must be a finite number > 0$"):
        check_number("lr", value, above=0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1e-9])
def test_check_number_refuses_nan_inf_and_out_of_range_with_a_value_error(value):
    with pytest.raises(ValueError, match=r"^lr=.* is not allowed: must be a finite number > 0$"):
        check_number("lr", value, above=0)


def test_bounds_none_and_the_values_returned():
    assert check_int("k", 3, minimum=0, maximum=3) == 3 and check_int("k", None, optional=True) is None
    assert check_number("p", 1, above=0, maximum=1) == 1 and check_number("x", math.inf, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"must be None or an integer >= 0 and <= 3 \(D at most\)$"):
        check_int("k", 4, minimum=0, maximum=3, optional=True, note="D at most")
    with pytest.raises(ValueError, match=r"must be a finite number >= 0 and < 1$"):
        check_number("dropout", 1.0, minimum=0, below=1)
    with pytest.raises(ValueError, match="must be a number > 0"):
        check_number("x", math.nan, above=0, finite=False)


@pytest.mark.parametrize("field,value,error", [
    ("lr", math.inf, ValueError), ("lr", math.nan, ValueError), ("steps", True, TypeError),
    ("steps", 2.0, TypeError), ("min_lr_ratio", 1.5, ValueError), ("threads", 0, ValueError),
    ("seed", 1.5, TypeError), ("lambda_schedule", "deepseek-step", ValueError),
])
def test_train_config_names_the_field_and_what_is_allowed(field, value, error):
    with pytest.raises(error, match=f"TrainConfig.{field}=.* is not allowed: must be"):
        TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="must be one of constant, deepseek"):
        TrainConfig(lambda_schedule="cosine")

"""The shared argument checks (lstm_jax.checks): one line naming the field,
the value and what is allowed; normalised return values."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_jax import checks


def test_choice():
  assert checks.choice("mode", "a", ("a", "b")) == "a"
  assert checks.choice("n", 3, (2, 3)) == 3
  with pytest.raises(ValueError, match=r"^mode='c' is not allowed; allowed: 'a', 'b'$"):
    checks.choice("mode", "c", ("a", "b"))
  for bad in (True, ["a"], {"a": 1}):  # a bool is no choice; unhashable values are refused
    with pytest.raises(ValueError, match=r"^mode="):
      checks.choice("mode", bad, ("a", "b", 1))


def test_integer():
  assert checks.integer("n", np.int64(5), 1) == 5 and type(checks.integer("n", np.int64(5))) is int
  assert checks.integer("n", 0) == 0
  for bad in (0, -3, 2.0, True, "4", None):
    with pytest.raises(ValueError, match=r"^n=.* is not allowed; expected an integer >= 1$"):
      checks.integer("n", bad, 1)
  with pytest.raises(ValueError, match=r"expected an integer in \[2, 3\] \(two or three\)$"):
    checks.integer("k", 4, 2, 3, meaning="two or three")
  # Lengths and lags are int32 inside compiled programs.
  assert checks.integer("lag", checks.INT32_MAX) == 2**31 - 1
  with pytest.raises(ValueError, match=r"lag=2147483648 is not allowed; .*<= 2147483647"):
    checks.integer("lag", 2**31, 1)
  assert checks.integer("big", 2**40, 0, None) == 2**40  # no upper bound when asked


def test_number_and_boolean():
  assert checks.number("lr", 1e-3, 0.0, strict=True) == 1e-3
  assert checks.number("clip", 0, 0.0) == 0.0
  for bad in (0.0, -1.0, float("nan"), float("inf"), "1", True):
    with pytest.raises(ValueError, match=r"^lr=.* is not allowed; expected a finite number > 0$"):
      checks.number("lr", bad, 0.0, strict=True)
  assert checks.boolean("flag", np.bool_(True)) is True
  with pytest.raises(ValueError, match=r"^flag=1 is not allowed; expected True or False$"):
    checks.boolean("flag", 1)

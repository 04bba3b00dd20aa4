"""Argument checks shared by the whole library.

Each check takes the name of the field as the user wrote it (``"hidden_size"``,
``"config.model.cell"``, ``"hs2c: p"``), the value, and what is allowed; it
returns the value (normalised where that helps, e.g. NumPy integers to
``int``) or raises ``ValueError`` with one line naming all three::

    hidden_size=0 is not allowed; expected an integer >= 1
    cell='bogus' is not allowed; allowed: 'vanilla', 'lstm1997', ...

A value is checked once, where it enters: a :class:`lstm_jax.Cell`, a
:class:`lstm_jax.models.SequenceModel` or a task checks its own options when
built, the public sequence functions check their call arguments, and the
experiment config checks only the fields that exist in the config alone.
Lower layers trust what they are given.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

INT32_MAX = int(np.iinfo(np.int32).max)
"""The largest length, lag or count the library accepts: time steps and
lengths are ``int32`` inside compiled programs."""


def fail(field: str, value: Any, allowed: str) -> None:
  """Raise ``ValueError("{field}={value!r} is not allowed; {allowed}")``."""
  raise ValueError(f"{field}={value!r} is not allowed; {allowed}")


def is_int(value: Any) -> bool:
  """Whether ``value`` is a Python or NumPy integer (``bool`` is not)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def choice(field: str, value: Any, allowed: Iterable[Any]) -> Any:
  """Return ``value`` if it is one of ``allowed`` (compared by equality, never a bool)."""
  allowed = tuple(allowed)
  try:
    ok = not isinstance(value, (bool, np.bool_)) and value in allowed
  except TypeError:  # unhashable or incomparable values
    ok = False
  if not ok:
    fail(field, value, "allowed: " + ", ".join(map(repr, allowed)))
  return value


def integer(field: str, value: Any, minimum: int = 0, maximum: int | None = INT32_MAX,
            meaning: str = "") -> int:
  """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``.

  ``maximum`` defaults to :data:`INT32_MAX` (what a compiled program can
  index); ``None`` means no upper bound. ``meaning`` is added in brackets.
  """
  ok = is_int(value) and value >= minimum and (maximum is None or value <= maximum)
  if not ok:
    if maximum is not None and maximum < INT32_MAX:
      allowed = f"an integer in [{minimum}, {maximum}]"
    else:
      allowed = f"an integer >= {minimum}"
      if maximum is not None and is_int(value) and value > maximum:
        allowed += f" and <= {maximum} (2**31 - 1, the largest int32)"
    fail(field, value, "expected " + allowed + (f" ({meaning})" if meaning else ""))
  return int(value)


def number(field: str, value: Any, minimum: float = 0.0, *, strict: bool = False) -> float:
  """Return ``value`` as a ``float`` if it is a finite real number ``>= minimum``
  (``> minimum`` with ``strict``)."""
  ok = (isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
        and (value > minimum if strict else value >= minimum))
  if not ok:
    fail(field, value, f"expected a finite number {'>' if strict else '>='} {minimum:g}")
  return float(value)


def boolean(field: str, value: Any) -> bool:
  """Return ``value`` as a ``bool`` if it is ``True`` or ``False``."""
  if not isinstance(value, (bool, np.bool_)):
    fail(field, value, "expected True or False")
  return bool(value)

"""Result-table configs (``get_config(arg)`` files for
``python -m experiments.table --config=configs/tables/<name>.py[:quick]``;
lstm_jax.tables) and what they share."""

from typing import Any, Sequence

import ml_collections

BUDGET_FACTOR = 3
"""Each row's budget: this many times the published sequences to criterion."""


def table(arg: str | None, title: str, rows: Sequence[dict[str, Any]],
          seeds: int = 5) -> ml_collections.ConfigDict:
  """A table config: ``title``, ``seeds`` and ``rows`` (lstm_jax.tables).

  Raises:
    ValueError: ``arg`` other than none or ``quick``.
  """
  if arg not in (None, "", "quick"):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: none, quick")
  c = ml_collections.ConfigDict()
  c.title, c.seeds, c.rows = title, seeds, list(rows)
  return c

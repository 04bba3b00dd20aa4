"""Delayed recall: one of K symbols, ``lag`` distractor steps, then a query.

Command:
  python -m experiments.run --config=configs/delayed_recall.py --workdir=/tmp/dr
Expected: a 32-unit LSTM meets the criterion (held-out accuracy >= 0.99) at
lag 50 within the budget; ``--config.model.cell=elman`` does not.
Tiny variant for tests: ``--config=configs/delayed_recall.py:quick``.
"""

from lstm_jax.config import default_config, shrink_for_tests


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "delayed_recall"
  c.lag = 50
  c.budget_sequences = 200_000
  if arg == "quick":
    shrink_for_tests(c, lag=3)
  return c

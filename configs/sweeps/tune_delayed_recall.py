"""Tuning example: the chrono-initialised LSTM on delayed recall, learning
rate x batch size, at 2 lags with 2 seeds per point.

Command:
  python -m experiments.sweep --config=configs/sweeps/tune_delayed_recall.py --workdir=/tmp/tune_dr
This is an example of the grid mechanism (lstm_jax.sweep: ``grid``,
``best_settings``), not a measured result: 2 lags x 2 learning rates x 2
batch sizes = 8 points, each with 2 seeds and a budget of 4,000 sequences.
It writes results.md (one row per point, one column per swept field),
best.md (per lag, the setting with the highest solved fraction, then the
fewest median sequences to criterion, then the highest final accuracy, with
the tuning spend of all 4 settings tried) and memory_vs_lag.png (each lag's
best setting).
Measured once (2-core CPU shared with other work, 27 s wall): every setting
solved both seeds at both lags; the chosen setting was batch 16, learning
rate 0.01 at both lags (median 800 sequences to criterion at lag 10, 1,200
at lag 40), with tuning spends of 12,800 and 19,200 training sequences (all
4 settings, both seeds). Two seeds per point are too few to rank settings
with confidence; the example shows the mechanism.
Tiny variant for tests: ``--config=configs/sweeps/tune_delayed_recall.py:quick``.
"""

import ml_collections

from lstm_jax.config import default_config


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = default_config()
  c.base.task = "delayed_recall"
  c.base.model.hidden_size = 32
  c.base.budget_sequences = 4_000
  c.base.eval_size = 256
  c.base.log_every = 25
  c.base.eval_every = 25
  c.base.checkpoint_every = 250
  c.lags = (10, 40)
  c.models = [{"label": "LSTM chrono", "cell": "vanilla", "bias_init": "chrono"}]
  # Swept fields: the leaves' dotted paths (optimizer.learning_rate, batch_size).
  c.grid = {"optimizer": {"learning_rate": [3e-3, 1e-2]}, "batch_size": [16, 32]}
  c.num_seeds = 2
  c.metric = "accuracy"
  if arg == "quick":
    c.base.model.hidden_size = 8
    c.base.budget_sequences = 64
    c.base.eval_size = 16
    c.base.log_every = 2
    c.base.eval_every = 2
    c.base.checkpoint_every = 8
    c.lags = (2,)
    c.grid = {"optimizer": {"learning_rate": [3e-3, 1e-2]}, "batch_size": [8, 16]}
  return c

"""Sweep and horizon-search configs, and what they share."""

import ml_collections


def shrink_for_tests(base: ml_collections.ConfigDict, *, budget: int = 48, every: int = 2,
                     checkpoint_every: int = 6) -> None:
  """Shrink the experiment config ``base`` in place to the tiny size the
  ``:quick`` variants use in tests: 8 units, batches of 8, ``budget``
  training sequences, 16 evaluation sequences, a log line and an evaluation
  every ``every`` steps and a checkpoint every ``checkpoint_every``."""
  base.model.hidden_size = 8
  base.batch_size = 8
  base.budget_sequences = budget
  base.eval_size = 16
  base.log_every = base.eval_every = every
  base.checkpoint_every = checkpoint_every


def horizon_from_sweep(sweep: ml_collections.ConfigDict, *, start_lag: int, max_lag: int,
                       growth: float = 2.0, resolution: float = 0.25, threshold: float = 0.5,
                       budget_rule: str = "constant",
                       max_budget: int = 0) -> ml_collections.ConfigDict:
  """A horizon-search config (:mod:`lstm_jax.horizon`) over the base, models,
  seeds and metric of the sweep config ``sweep``: lags from ``start_lag``
  growing by ``growth`` up to ``max_lag`` until fewer than ``threshold`` of
  the seeds solve, then bisected to ``resolution``; ``budget_rule``
  ``"constant"`` or ``"linear"`` (``base.budget_sequences x lag /
  start_lag``, capped at ``max_budget``; 0: no cap)."""
  c = ml_collections.ConfigDict()
  c.base = sweep.base
  c.models = sweep.models
  c.num_seeds = sweep.num_seeds
  c.metric = sweep.metric
  c.start_lag = start_lag
  c.growth = growth
  c.max_lag = max_lag
  c.resolution = resolution
  c.threshold = threshold
  c.budget_rule = budget_rule
  c.max_budget = max_budget
  return c

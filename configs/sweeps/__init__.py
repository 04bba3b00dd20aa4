"""Sweep and horizon-search configs, and what they share."""

import ml_collections


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

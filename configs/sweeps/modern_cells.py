"""The modern recurrent cells side by side: LSTM (chrono), GRU, minGRU,
minLSTM, sLSTM and mLSTM on delayed recall, copy, selective copying and
parity with length extrapolation, at lags a 2-core CPU trains in minutes.

Command (one task per run; the argument picks it):
  python -m experiments.sweep --config=configs/sweeps/modern_cells.py:delayed_recall --workdir=/tmp/modern_dr
  python -m experiments.sweep --config=configs/sweeps/modern_cells.py:copy --workdir=/tmp/modern_copy
  python -m experiments.sweep --config=configs/sweeps/modern_cells.py:selective_copy --workdir=/tmp/modern_sc
  python -m experiments.sweep --config=configs/sweeps/modern_cells.py:parity --workdir=/tmp/modern_parity
Models (64 units each; ``MODELS``): the LSTM with chrono initialisation and
the GRU as one plain layer, as they are usually run; minGRU and minLSTM as 3
pre-norm residual blocks (``model.block="residual"``, each cell followed by
an MLP of width 128), the depth Feng et al. 2024 use; sLSTM (4 heads,
exponential forget gate) and mLSTM (4 heads of 16) as 2 residual blocks.
Adam, learning rate 3e-3, batch 32, 2 seeds per point; the budgets
(``BUDGETS``) are small, so "not solved" means "not within this budget".
Measured results, with wall times, are in docs/RESULTS.md.
``:selective_copy,long``: the two models closest to the criterion at
64,000 sequences (minGRU x3 and minLSTM x3) with ``LONG_BUDGET`` sequences
per seed, the same L = 64:
  python -m experiments.sweep --config=configs/sweeps/modern_cells.py:selective_copy,long --workdir=/tmp/modern_sc_long
``:<task>,quick``: a tiny version for tests.
"""

import ml_collections

from configs.sweeps import shrink_for_tests
from lstm_jax.config import default_config

MODELS = (
    {"label": "LSTM chrono", "cell": "vanilla", "bias_init": "chrono"},
    {"label": "GRU", "cell": "gru"},
    {"label": "minGRU x3", "cell": "mingru", "num_layers": 3, "block": "residual"},
    {"label": "minLSTM x3", "cell": "minlstm", "num_layers": 3, "block": "residual"},
    {"label": "sLSTM x2", "cell": "slstm", "num_layers": 2, "block": "residual", "num_heads": 4,
     "forget_fn": "exp"},
    {"label": "mLSTM x2", "cell": "mlstm", "num_layers": 2, "block": "residual",
     "num_heads": 4},
)
"""The compared models: overrides of ``base.model`` (64 units each)."""

TASKS = {
    # task: (lags, metric, budget in sequences, task_params)
    "delayed_recall": ([30, 300], "accuracy", 16_000, {}),
    "copy": ([20, 100], "symbol_accuracy", 32_000, {}),
    "selective_copy": ([64], "step_accuracy", 64_000, {"num_tokens": 16, "num_symbols": 16}),
    "parity": ([40], "accuracy", 32_000, {"train_min": 3, "test_min": 40, "test_max": 256}),
}
"""Per task: lags, the plotted metric, the training budget and task parameters."""

LONG_BUDGET = 320_000
"""Training sequences per seed of ``:selective_copy,long`` (5x the sweep's)."""

LONG_MODELS = ("minGRU x3", "minLSTM x3")
"""The models of ``:selective_copy,long``: labels of ``MODELS``."""


def get_config(arg: str | None = None):
  task, _, size = (arg or "delayed_recall").partition(",")
  if (task not in TASKS or size not in ("", "quick", "long")
      or (size == "long" and task != "selective_copy")):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: one of "
                     f"{', '.join(TASKS)}, optionally followed by ',quick', or "
                     "'selective_copy,long'")
  lags, metric, budget, params = TASKS[task]
  c = ml_collections.ConfigDict()
  c.base = default_config()
  c.base.task = task
  c.base.task_params.update(params)
  c.base.model.hidden_size = 64
  c.base.optimizer.learning_rate = 3e-3
  c.base.optimizer.grad_clip = 1.0
  c.base.batch_size = 32
  c.base.budget_sequences = budget
  c.base.eval_size = 256
  c.base.log_every = 50
  c.base.eval_every = 100
  c.base.checkpoint_every = 500
  c.lags = tuple(lags)
  c.models = [dict(m) for m in MODELS]
  c.num_seeds = 2
  c.metric = metric
  if size == "long":
    c.base.budget_sequences = LONG_BUDGET
    c.base.checkpoint_every = 2000
    c.models = [dict(m) for m in MODELS if m["label"] in LONG_MODELS]
  if size == "quick":
    shrink_for_tests(c.base)
    c.lags = ({"delayed_recall": 3, "copy": 3, "selective_copy": 4, "parity": 6}[task],)
    if task == "selective_copy":
      c.base.task_params.update(dict(num_tokens=2, num_symbols=3))
    if task == "parity":
      c.base.task_params.update(dict(train_min=3, test_min=6, test_max=9))
    c.models = [dict(m, num_heads=2) if "num_heads" in m else dict(m) for m in MODELS]
  return c

"""Quick start: LSTM vs GRU vs Elman RNN on delayed recall, lags 5..300, on the CPU.

Command:
  python -m experiments.sweep --config=configs/sweeps/quickstart.py --workdir=/tmp/quickstart
Expected (2-core CPU, about 2 minutes): the chrono-initialised LSTM recalls the
symbol at every lag up to 300; the Elman RNN's accuracy falls to chance (0.25)
as the lag grows; with the default forget bias 1 the LSTM needs more than this
budget beyond lag ~50.
Tiny variant for tests: ``--config=configs/sweeps/quickstart.py:quick``.
"""

import ml_collections

from configs.sweeps import shrink_for_tests
from lstm_jax.config import default_config


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = default_config()
  c.base.task = "delayed_recall"
  c.base.model.hidden_size = 32
  c.base.batch_size = 32
  c.base.budget_sequences = 16_000
  c.base.eval_size = 256
  c.base.log_every = 25
  c.base.eval_every = 50
  c.base.checkpoint_every = 250
  c.base.optimizer.learning_rate = 3e-3
  c.lags = (5, 20, 50, 100, 300)
  c.models = [
      # Chrono initialisation (Tallec & Ollivier 2018), T_max = 1.5 x sequence length.
      {"label": "LSTM chrono", "cell": "vanilla", "bias_init": "chrono"},
      {"label": "LSTM b_f=1", "cell": "vanilla", "bias_init": "forget", "forget_bias": 1.0},
      {"label": "GRU", "cell": "gru"},
      {"label": "Elman RNN", "cell": "elman"},
  ]
  c.num_seeds = 3
  c.metric = "accuracy"
  if arg == "quick":
    shrink_for_tests(c.base, budget=160, every=10, checkpoint_every=20)
    c.lags = (2, 4)
    c.models = [c.models[0], c.models[3]]
    c.num_seeds = 2
  return c

"""Copy task at large T: the LSTM with forget bias 0, forget bias 1 and chrono
initialisation, T = 100, 200, 500, 1000, 2000.

Command:
  python -m experiments.sweep --config=configs/sweeps/copy_chrono.py --workdir=/tmp/copy_chrono
Claim checked (Tallec & Ollivier 2018, "Can recurrent neural networks warp
time?"): on the copy task (Arjovsky et al. 2016) at large T an LSTM with the
standard initialisation stalls at the memoryless baseline (loss / baseline
about 1: it outputs blanks, then uniform guesses), while chrono
initialisation (b_f ~ log U[1, T_max - 1], b_i = -b_f) makes it learnable.
The sweep writes results.md (solved fraction and median sequences to
criterion, per-symbol recall >= 0.99 on 1,024 held-out sequences, per model
and T), memory_vs_lag.png (final symbol accuracy against T) and
learning_curves.png (eval loss / baseline against sequences seen, one panel
per T, dashed at the baseline; lstm_jax.sweep.plot_learning_curves).
Base: configs/copy.py (modern LSTM, 128 units, Adam 1e-3, gradient clipping
1.0, batch 32, chrono T_max = 3/2 of the sequence length T + 20), with the
budget cut to ``BUDGET_SEQUENCES`` per seed so that a 2-core CPU runs the
whole sweep (3 models x 5 lags x ``NUM_SEEDS`` seeds); the published
experiments train far longer, so "not solved" means "not within this
budget". Cost on a 2-core CPU (timed over 3 updates at T = 2000 while
another job shared the cores, not a full run): about 1.6 updates/s at
T = 2000, so about 2.5 hours for the whole sweep. Memory: a T = 2000 point
(2,020 steps, 128 units, batch 32, full backpropagation through time) peaked
at 2.0 GB resident, fine on a CPU host, so ``base.remat`` stays "none"; the
runner refuses a point that would not fit (then ``--config.base.remat=sqrt``).
Measured results are in docs/RESULTS.md.
``:long``: forget bias 1 and chrono only, at T = 100 and 500, with
``LONG_BUDGET`` sequences per seed (10x the sweep's), to see whether either
leaves the baseline given more updates:
  python -m experiments.sweep --config=configs/sweeps/copy_chrono.py:long --workdir=/tmp/copy_chrono_long
Tiny variant for tests: ``--config=configs/sweeps/copy_chrono.py:quick``.
"""

import importlib

import ml_collections

from configs.sweeps import shrink_for_tests

BUDGET_SEQUENCES = 32_000
"""Training sequences per seed and point (1,000 updates of batch 32)."""

NUM_SEEDS = 2
"""Seeds per point."""

LONG_BUDGET = 320_000
"""Training sequences per seed of ``:long`` (10,000 updates of batch 32)."""

LONG_LAGS = (100, 500)
"""T of ``:long``."""

LAGS = [100, 200, 500, 1000, 2000]
"""T: the copy task's lag (T - 1 blanks and the delimiter between data and recall)."""

MODELS = (
    {"label": "LSTM b_f=0", "cell": "vanilla", "bias_init": "forget", "forget_bias": 0.0},
    {"label": "LSTM b_f=1", "cell": "vanilla", "bias_init": "forget", "forget_bias": 1.0},
    # Chrono initialisation (Tallec & Ollivier 2018), T_max = 1.5 x sequence length.
    {"label": "LSTM chrono", "cell": "vanilla", "bias_init": "chrono"},
)
"""The compared initialisations: overrides of ``base.model``."""


def get_config(arg: str | None = None):
  if arg not in (None, "", "quick", "long"):
    raise ValueError(
        f"config argument {arg!r} is not allowed; allowed: none, 'quick' or 'long'")
  c = ml_collections.ConfigDict()
  c.base = importlib.import_module("configs.copy").get_config()
  c.base.budget_sequences = BUDGET_SEQUENCES
  c.base.log_every = 50
  c.base.eval_every = 100
  c.base.checkpoint_every = 200
  c.lags = tuple(LAGS)
  c.models = [dict(m) for m in MODELS]
  c.num_seeds = NUM_SEEDS
  c.metric = "symbol_accuracy"
  c.curve_metric = "loss_over_baseline"
  if arg == "long":
    c.base.budget_sequences = LONG_BUDGET
    c.base.eval_every = 500
    c.base.checkpoint_every = 500
    c.lags = LONG_LAGS
    c.models = [dict(MODELS[1]), dict(MODELS[2])]
  if arg == "quick":
    shrink_for_tests(c.base)
    c.lags = (3, 5)
    c.models = [dict(MODELS[1]), dict(MODELS[2])]
  return c

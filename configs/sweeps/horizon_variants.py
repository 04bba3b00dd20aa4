"""Memory horizons of every LSTM variant and the baselines, found by search,
on delayed recall and on H&S 1997 Exp 2c; and the chrono LSTM's horizon up to
10,000 steps.

Commands (the argument picks the search):
  python -m experiments.horizon --config=configs/sweeps/horizon_variants.py:delayed_recall --workdir=/tmp/horizon_variants_dr
  python -m experiments.horizon --config=configs/sweeps/horizon_variants.py:exp2c --workdir=/tmp/horizon_variants_2c
  python -m experiments.horizon --config=configs/sweeps/horizon_variants.py:chrono_long --workdir=/tmp/horizon_chrono_long
Models (``MODELS``): the LSTM with chrono initialisation (Tallec & Ollivier
2018) and with forget bias 1, the GRU, the Elman RNN, the 1997 cell (no
forget gate) and Greff et al.'s (2017) eight variants of the peephole LSTM
("V"): NIG (no input gate), NFG (no forget gate), NOG (no output gate), NIAF
(no input activation), NOAF (no output activation), NP (no peepholes), CIFG
(coupled input and forget gate), FGR (full gate recurrence).

``:delayed_recall``: the setup of configs/sweeps/modern_cells.py (64 units,
Adam 3e-3, clipping 1.0, batch 32), 16,000 training sequences at every lag,
2 seeds; lags double from 10 up to 640, then are bisected until the first
failed lag is within 25% of the last solved one.
``:exp2c``: configs/hs2c.py's modern setup (8 cells, batch 16, Adam 1e-3,
clipping 1.0, softmax outputs; p = 100 distractor symbols), q = lag from 50
doubling up to 800, 40,000 sequences at every lag (the criterion, 10,000
successive correct training sequences, counts its window); the 1997 cell
keeps that config's 1997 initialisation (uniform weights, staircase biases),
the other models get the library's defaults (LeCun-normal inputs,
orthogonal recurrence, forget bias 1) and chrono for "LSTM chrono".
``:chrono_long``: the chrono LSTM alone on delayed recall as in
``:delayed_recall``, lags 1,250, 2,500, 5,000, 10,000 (the horizon search
of ``:delayed_recall`` already solves every lag up to 640), 32,000
sequences at every lag, an evaluation every 50 updates.
Measured results, with wall times, are in docs/RESULTS.md.
``:<search>,quick``: a tiny version for tests.
"""

import importlib

from configs.sweeps import horizon_from_sweep, modern_cells, shrink_for_tests

_GREFF = ("peephole", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")

MODELS = (
    {"label": "LSTM chrono", "cell": "vanilla", "bias_init": "chrono"},
    {"label": "LSTM b_f=1", "cell": "vanilla", "bias_init": "forget", "forget_bias": 1.0},
    {"label": "GRU", "cell": "gru"},
    {"label": "Elman", "cell": "elman"},
    {"label": "LSTM 1997", "cell": "lstm1997"},
    *({"label": "V (peephole)" if v == "peephole" else v.upper(), "cell": v} for v in _GREFF),
)
"""The compared models: overrides of ``base.model``."""

MODERN_INIT = {"kernel_init": "lecun_normal", "recurrent_init": "orthogonal",
               "bias_init": "forget", "forget_bias": 1.0}
"""On ``:exp2c``, every model but the 1997 cell gets these initialisers (the
library's defaults) in place of hs2c's 1997 ones."""

SEARCHES = ("delayed_recall", "exp2c", "chrono_long")


def _exp2c_models() -> list[dict]:
  out = []
  for m in MODELS:
    if m["cell"] == "lstm1997":
      out.append(dict(m))  # hs2c's own 1997 initialisation
    else:
      out.append({**MODERN_INIT, **m})
  return out


def get_config(arg: str | None = None):
  search, _, size = (arg or "delayed_recall").partition(",")
  if search not in SEARCHES or size not in ("", "quick"):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: one of "
                     f"{', '.join(SEARCHES)}, optionally followed by ',quick'")
  quick = size == "quick"
  if search == "exp2c":
    sweep = modern_cells.get_config("delayed_recall")  # models, seeds and metric
    sweep.base = importlib.import_module("configs.hs2c").get_config()
    sweep.base.budget_sequences = 40_000
    sweep.models = _exp2c_models()
    if quick:
      shrink_for_tests(sweep.base, budget=64)
      sweep.base.task_params.p = 3
      sweep.models = sweep.models[:5]
    return horizon_from_sweep(sweep, start_lag=2 if quick else 50,
                              max_lag=4 if quick else 800, resolution=0.5 if quick else 0.25)
  sweep = modern_cells.get_config("delayed_recall" + (",quick" if quick else ""))
  if search == "chrono_long":
    sweep.models = [dict(MODELS[0])]
    if quick:
      return horizon_from_sweep(sweep, start_lag=3, max_lag=12, resolution=0.5)
    sweep.base.budget_sequences = 32_000
    sweep.base.eval_every = 50
    return horizon_from_sweep(sweep, start_lag=1250, max_lag=10_000)
  sweep.models = [dict(m) for m in (MODELS[:5] if quick else MODELS)]
  return horizon_from_sweep(sweep, start_lag=2 if quick else 10, max_lag=4 if quick else 640,
                            resolution=0.5 if quick else 0.25)

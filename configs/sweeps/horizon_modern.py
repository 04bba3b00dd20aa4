"""Memory horizons of the modern recurrent cells on delayed recall, found by search.

Command:
  python -m experiments.horizon --config=configs/sweeps/horizon_modern.py --workdir=/tmp/horizon_modern
The models of configs/sweeps/modern_cells.py (LSTM chrono and GRU as one
plain layer; minGRU and minLSTM as 3 residual blocks; sLSTM and mLSTM as 2;
64 units each), on delayed recall with 16,000 training sequences at every
lag and 2 seeds. Per model the lag doubles from 10 (10, 20, ... up to 640)
until fewer than half the seeds solve, then is bisected until the first
failed lag is within 25% of the last solved one. Measured results, with the
wall time, are in docs/RESULTS.md.
Tiny variant for tests: ``--config=configs/sweeps/horizon_modern.py:quick``.
"""

from configs.sweeps import horizon_from_sweep, modern_cells


def get_config(arg: str | None = None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: none, 'quick'")
  quick = arg == "quick"
  sweep = modern_cells.get_config("delayed_recall" + (",quick" if quick else ""))
  return horizon_from_sweep(sweep, start_lag=2 if quick else 10, max_lag=4 if quick else 640,
                            resolution=0.5 if quick else 0.25)

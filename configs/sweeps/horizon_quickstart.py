"""Memory horizons of the quick-start models on delayed recall, found by search.

Command:
  python -m experiments.horizon --config=configs/sweeps/horizon_quickstart.py --workdir=/tmp/horizon_quickstart
The quick start's models, task and budget (configs/sweeps/quickstart.py: LSTM
with chrono initialisation, LSTM with forget bias 1, GRU, Elman RNN; 32 units;
16,000 training sequences at every lag; 3 seeds). Per model the lag doubles
from 5 (5, 10, 20, ... up to 320) until fewer than half the seeds solve, then
is bisected until the first failed lag is within 25% of the last solved one.
Expected (2-core CPU, about 3 minutes, 26 points): the chrono-initialised LSTM
solves every lag tried (horizon ">= 320"); with forget bias 1 the LSTM's
horizon is about 40 at this budget, the GRU's and the Elman RNN's between 20
and 40 (measured: LSTM b_f=1 40, GRU 24, Elman RNN 28; with 3 seeds the
boundary lags are noisy, so the order of GRU and Elman is not settled).
Tiny variant for tests: ``--config=configs/sweeps/horizon_quickstart.py:quick``
(8 units, batch 8, 160 sequences, lags 2..8, two models, two seeds).
"""

from configs.sweeps import horizon_from_sweep, quickstart


def get_config(arg: str | None = None):
  quick = arg == "quick"
  return horizon_from_sweep(quickstart.get_config(arg), start_lag=2 if quick else 5,
                            max_lag=8 if quick else 320, resolution=0.5 if quick else 0.25)

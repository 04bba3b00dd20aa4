"""Selective copying (Gu & Dao 2023, the Mamba paper; Feng et al. 2024): L
steps of noise (L = lag) hold 16 data tokens from 16 symbols at random
distinct positions; during 16 marker steps that follow, the net must output
the data tokens in order. Cross-entropy on the 16 answer steps only.

Command:
  python -m experiments.run --config=configs/selective_copy.py --workdir=/tmp/selcopy
Expected (published, Feng et al. 2024, "Were RNNs All We Needed?", Table 1,
accuracy in %, L = 4096, 16 tokens): minGRU with 1 / 2 / 3 layers 37.0 / 96.8 /
99.5; minLSTM 37.6 / 85.7 / 96.0 (``--config.model.cell=mingru
--config.model.num_layers=3``); Gu & Dao 2023: S6 (Mamba) solves the task,
S4, H3 and Hyena do not. A memoryless predictor has loss ln 16 = 2.77 and
per-token accuracy 1/16. The criterion (per-token accuracy >= 0.99 on 1,024
held-out sequences) is this project's; no sequence count is published.
Shorter sequences: ``--config.lag=256``.
Model: modern LSTM (forget gate, forget bias 1), 128 units, LeCun-normal
input and orthogonal recurrent weights; other cells with
``--config.model.cell`` (``gru``, ``mingru``, ``minlstm``). For the LSTM at
large L, chrono initialisation (Tallec & Ollivier 2018) may help:
``--config.model.bias_init=chrono`` (T_max = 3/2 of the sequence length).
Changed from the sources: 16 data symbols besides the noise and marker tokens
(the Mamba setup's vocabulary of 16 counts the noise token:
``--config.task_params.num_symbols=15``), inputs one-hot, Adam with lr 1e-3,
gradient clipping 1.0, minibatches of 32. The full budget is meant for an
accelerator.
Tiny variant for tests: ``--config=configs/selective_copy.py:quick`` (L = 12,
4 tokens from 4 symbols).
"""

from configs import modern_benchmark


def get_config(arg: str | None = None):
  return modern_benchmark("selective_copy", 4096, arg, hidden_size=128,
                          budget_sequences=2_000_000, quick_lag=12,
                          task_params=dict(num_tokens=16, num_symbols=16),
                          quick_params=dict(num_tokens=4, num_symbols=4))

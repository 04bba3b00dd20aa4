"""H&S 1997 Exp 3a (Bengio et al.'s 2-sequence problem): one real input; the
first N = 3 elements are +1 or -1 (the class), the rest Gaussian noise; the
sequence length is drawn from T..T + T/10 (T = lag); target 1.0 / 0.0 at the end.

Command:
  python -m experiments.run --config=configs/hs3a.py --workdir=/tmp/hs3a
Expected (published, H&S 1997, Table 4): T = 100, N = 3: 39,850 sequences to
stop rule ST2; T = 1000, N = 3: 452,460 (``--config.lag=1000``).
Model close to the paper: the 1997 cell (no forget gate), 8 cells, small uniform
weights (U[-0.1, 0.1]), staircase of negative input/output-gate biases
(bias_init "hs1997").
Changed from the paper: minibatches of 16 sequences and Adam (lr 1e-3, clip
1.0) instead of online SGD; linear output unit. ST2 is checked on 256 fresh
test sequences every 100 updates (1,600 sequences).
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 17,600 sequences in 4 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 3 blocks of 1 cell, weights U[-0.1, 0.1], input- and output-gate
biases -1, -2, -3, learning rate 1.0, sigmoid output units on squared error,
online learning (plain gradient descent, the weights changed after every time
step). These values are this project's reading of the paper's Table 10 and Sec.
5; they could not be checked against the paper here. Measured
(configs/tables/paper1997.py, 5 seeds, 2-core CPU): 5 of 5 seeds, median 25,000
sequences (15,000-30,000; the paper: 39,850).
Tiny variants for tests: ``--config=configs/hs3a.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=3, block_size=1, learning_rate=1.0, init_scale=0.1)


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "hs3a"
  c.lag = 100
  c.task_params.update(dict(n=3, stop="ST2"))
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 200_000
  c.eval_size = 256
  c.log_every = 50
  c.eval_every = 100
  c.checkpoint_every = 2000
  return finish(c, arg, paper=PAPER, quick_lag=10)

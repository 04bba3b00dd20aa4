"""H&S 1997 Exp 3c: the 2-sequence problem (as Exp 3a, N = 3, lengths from
T..T + T/10, T = lag) with targets 0.2 / 0.8 plus Gaussian target noise
(variance 0.1); a sequence is correct if the output is within 0.1 of the
noise-free target.

Command:
  python -m experiments.run --config=configs/hs3c.py --workdir=/tmp/hs3c
Expected (published, H&S 1997, Table 6): T = 100, N = 3: 269,650 sequences
until none of 256 test sequences is wrong and the mean absolute difference to
the noise-free target is < 0.015.
Model close to the paper: the 1997 cell (no forget gate), 8 cells, small uniform
weights (U[-0.1, 0.1]), staircase of negative input/output-gate biases
(bias_init "hs1997").
Changed from the paper: minibatches of 16 sequences and Adam (lr 1e-3, clip
1.0) instead of online SGD; linear output unit. The rule is checked on 256
fresh test sequences every 200 updates (3,200 sequences).
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 57,600 sequences in 7 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 3 blocks of 1 cell, weights U[-0.1, 0.1], input- and output-gate
biases -1, -2, -3, learning rate 0.1, sigmoid output units on squared error,
online learning (plain gradient descent, the weights changed after every time
step). These values are this project's reading of the paper's Table 10 and Sec.
5; they could not be checked against the paper here. Measured
(configs/tables/paper1997.py, 5 seeds, 2-core CPU): 5 of 5 seeds, median 60,000
sequences (40,000-150,000; the paper: 269,650).
Tiny variants for tests: ``--config=configs/hs3c.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=3, block_size=1, learning_rate=0.1, init_scale=0.1)


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "hs3c"
  c.lag = 100
  c.task_params.update(dict(n=3, stop="ST2"))
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 600_000
  c.eval_size = 256
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 2000
  return finish(c, arg, paper=PAPER, quick_lag=10)

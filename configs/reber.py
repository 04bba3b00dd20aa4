"""Embedded Reber grammar (H&S 1997, Exp 1): next-symbol prediction; the second
symbol (T or P) must be remembered until the second-to-last one.

Command:
  python -m experiments.run --config=configs/reber.py --workdir=/tmp/reber
Expected (published, H&S 1997, Table 1): LSTM solved 100% of trials, 8,440
training sequences at best.
Model close to the paper: the 1997 cell (no forget gate), a few cells (8 here),
small uniform weights (U[-0.1, 0.1]) and the staircase of negative input- and
output-gate biases (bias_init "hs1997").
Changed from the paper: minibatches of 16 freshly drawn strings and Adam (lr
1e-2, clip 1.0) instead of online SGD on a fixed 256-string training set; the
rule is checked on 512 fresh strings (see lstm_jax/tasks/reber.py). Not a lag
task: lag is fixed at 9.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 41,600 sequences in 7 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 4 blocks of 1 cell, weights U[-0.2, 0.2], output-gate biases -1
to -4, zero input-gate biases, learning rate 0.5, sigmoid output units on
squared error, online learning (plain gradient descent, the weights changed
after every time step). These values are this project's reading of the paper's
Table 10 and Sec. 5; they could not be checked against the paper here. Measured
(configs/tables/paper1997.py, 5 seeds, 2-core CPU): 3 of 5 seeds within 25,320
sequences, median 20,000 (the paper: 8,440); one update per sequence instead of
after every step: 0 of 5 within 30,000.
Tiny variants for tests: ``--config=configs/reber.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=4, block_size=1, learning_rate=0.5, init_scale=0.2, gate_bias_steps=(0.0, 1.0))


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "reber"
  c.lag = 9
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-2
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 200_000
  c.eval_size = 512
  c.log_every = 50
  c.eval_every = 100
  c.checkpoint_every = 2000
  return finish(c, arg, paper=PAPER)

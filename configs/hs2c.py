"""H&S 1997 Exp 2c: very long time lags among distractors. After ``b`` and the
class symbol (x or y) come at least q = lag distractors (p distractor symbols),
then a trigger; the net must then name the class.

Command:
  python -m experiments.run --config=configs/hs2c.py --workdir=/tmp/hs2c
Expected (published, H&S 1997, Table 3): q = p = 100: 31,000 sequences to
criterion (q = p = 50, 200, 500, 1000: 30k, 33k, 38k, 49k; q = 1000 with
p = 500, 200, 100, 50: 49k, 75k, 135k, 203k). Other rows:
``--config.lag=1000 --config.task_params.p=1000``.
Model close to the paper: the 1997 cell (no forget gate), 8 cells, small uniform
weights (U[-0.1, 0.1]), staircase of negative input/output-gate biases
(bias_init "hs1997").
Changed from the paper: minibatches of 16 sequences and Adam (lr 1e-3, clip
1.0) instead of online SGD; softmax outputs with cross-entropy. The criterion
(10,000 successive correct training sequences) is counted in sequences, so the
reported count includes that window.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 14,400 sequences in 6 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 2 blocks of 1 cell, no bias weights, weights U[-0.2, 0.2],
learning rate 0.01, sigmoid output units on squared error, online learning
(plain gradient descent, the weights changed after every time step). These
values are this project's reading of the paper's Table 10 and Sec. 5; they could
not be checked against the paper here. Measured (5 seeds, 2-core CPU): 0 of 5
seeds within 103,000 sequences; training errors fall to about 1 in 500
sequences, short of 10,000 successive correct ones. Learning rate 0.1: 2 of 5
within 120,000 (45,000 and 54,000); 1.0: all wrong. The paper's gates also saw
the previous step's gate activations; these see only the cell outputs. Not
reproduced.
Tiny variants for tests: ``--config=configs/hs2c.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=2, block_size=1, learning_rate=0.01, init_scale=0.2, use_bias=False)


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "hs2c"
  c.lag = 100
  c.task_params.update(dict(p=100))
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 200_000
  c.eval_size = 256
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 2000
  if arg in ("quick", "paper_quick"):
    c.task_params.p = 5
  return finish(c, arg, paper=PAPER, quick_lag=5)

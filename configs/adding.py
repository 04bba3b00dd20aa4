"""Adding problem, modern form (Le, Jaitly & Hinton 2015; Arjovsky et al.
2016): values U[0, 1] and one marker in each half of a length-T sequence
(T = lag); the target is the sum of the two marked values; MSE.

Command:
  python -m experiments.run --config=configs/adding.py --workdir=/tmp/adding
Expected (published baseline, TASKS.md after Le et al. 2015 / Arjovsky et al.
2016): always predicting 1 gives MSE 0.167; a model that learns the task goes
far below it (criterion here: test MSE <= 0.01 on 1,024 held-out sequences,
this project's threshold; the sources report curves, not sequence counts).
Typical T: 100, 200, 400, 750 (``--config.lag=400``). Not a published figure:
TASKS.md records that this plain JAX LSTM (H = 32, batch 32, Adam 1e-3,
clip 1.0, forget bias 1) trains at T = 100 in about 64,000 sequences.
Model: the modern LSTM (forget gate, forget bias 1, Jozefowicz et al. 2015),
32 units, LeCun-normal input and orthogonal recurrent weights.
Changed from the sources: Adam with lr 1e-3 and gradient clipping 1.0,
minibatches of 32.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved at T = 100 after 76,800 sequences in 16 s (test MSE 0.0069).
Tiny variant for tests: ``--config=configs/adding.py:quick``.
"""

from lstm_jax.config import default_config, shrink_for_tests


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "adding"
  c.lag = 100
  c.model.cell = "vanilla"
  c.model.hidden_size = 32
  c.model.bias_init = "forget"
  c.model.forget_bias = 1.0
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 32
  c.budget_sequences = 300_000
  c.eval_size = 1024
  c.log_every = 50
  c.eval_every = 100
  c.checkpoint_every = 1000
  if arg == "quick":
    shrink_for_tests(c, lag=10)
  return c

"""Experiment configuration: the default ``ml_collections.ConfigDict``, its
validation, and the objects built from it (task, model, optimizer).

Fields (every one overridable on the command line, e.g. ``--config.lag=1000``)::

    task              registry name (lstm_jax.tasks.TASK_NAMES)
    lag               the task's lag (meaning per task; lstm_jax.tasks)
    task_params       other task parameters (e.g. p for hs2c)
    model.cell        cell name (lstm_jax.CELL_NAMES)
    model.hidden_size, model.num_layers, model.proj_size
    model.kernel_init, model.recurrent_init, model.bias_init, model.forget_bias,
    model.chrono_t_max (0: 3/2 of the task's max length), model.init_scale
    optimizer.name, optimizer.learning_rate, optimizer.schedule,
    optimizer.warmup_steps, optimizer.grad_clip, optimizer.weight_decay
    batch_size        sequences per update
    budget_sequences  training budget in sequences
    eval_size         held-out sequences per evaluation (at least the criterion's)
    seed, num_seeds   seeds seed..seed+num_seeds-1, trained as one program
    ensemble          how the seeds run (lstm_jax.ensemble): spread over the
                      local devices, and on each device "vmap" (batched),
                      "map" (one after another) or "auto" (map on CPU, vmap
                      on GPU/TPU)
    split_batch       a single seed's batch split over the local devices
                      (lstm_jax.parallel): "auto" (where the step is big
                      enough to gain, parallel.split_pays), "on" or "off"
    log_every, eval_every, checkpoint_every   intervals in updates
    remat             backward-pass memory: "none", "step" (recompute each step),
                      "sqrt" (O(sqrt(T)) stored states) or a segment length ("100")
    tbptt             truncated BPTT: cut gradients through the state every k
                      steps (0: full backpropagation through time)
    impl              how LSTM layers are differentiated: "auto" (the fused
                      layer of lstm_jax.fused where it applies; the plain
                      scan where a device runs several seeds vmapped, see
                      training.seed_impl), "fused" (error where it does not
                      apply) or "scan" (plain autodiff)
    nonfinite         "stop": a NaN/Inf loss, gradient or parameter ends the run
                      (last good checkpoint kept, non-zero exit); "skip": drop
                      that update and count it (metrics "skipped_updates")
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import ml_collections

from lstm_jax import init as initializers
from lstm_jax.cells import CELL_NAMES
from lstm_jax.ensemble import ENSEMBLES
from lstm_jax.parallel import SPLITS
from lstm_jax.models import SequenceModel, make_model
from lstm_jax.sequence import IMPLS, check_remat, fused_reason
from lstm_jax.tasks import TASK_NAMES, Task, make_task
from lstm_jax.training import OPTIMIZERS, SCHEDULES


NONFINITE = ("stop", "skip")


class ConfigError(ValueError):
  """A config value is not allowed; the message names field, value and what is allowed."""


def default_config() -> ml_collections.ConfigDict:
  """The defaults every experiment config starts from."""
  c = ml_collections.ConfigDict()
  c.task = "delayed_recall"
  c.lag = 10
  c.task_params = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      cell="vanilla", hidden_size=32, num_layers=1, proj_size=0,
      kernel_init="lecun_normal", recurrent_init="orthogonal", bias_init="forget",
      forget_bias=1.0, chrono_t_max=0.0, init_scale=0.1))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
      grad_clip=1.0, weight_decay=0.0))
  c.batch_size = 32
  c.budget_sequences = 100_000
  c.eval_size = 256
  c.seed = 0
  c.num_seeds = 1
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 1000
  c.remat = "none"
  c.nonfinite = "stop"
  c.tbptt = 0
  c.impl = "auto"
  c.ensemble = "auto"
  c.split_batch = "auto"
  return c


def _fail(field: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{field}={value!r} is not allowed; expected {allowed}")


def _int(c: ml_collections.ConfigDict, field: str, minimum: int) -> None:
  value = c
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(field, value, f"an integer >= {minimum}")


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    _fail(field, value, "one of: " + ", ".join(allowed))


def validate(config: ml_collections.ConfigDict) -> tuple[Task, SequenceModel]:
  """Check every field, build the task and the model, or raise :class:`ConfigError`.

  Runs in milliseconds and compiles nothing.
  """
  _choice(config.task, "task", TASK_NAMES)
  for field, minimum in (("lag", 1), ("batch_size", 1), ("budget_sequences", 1),
                         ("eval_size", 1), ("seed", 0), ("num_seeds", 1), ("log_every", 1),
                         ("eval_every", 1), ("checkpoint_every", 1),
                         ("model.hidden_size", 1), ("model.num_layers", 1),
                         ("model.proj_size", 0), ("optimizer.warmup_steps", 0), ("tbptt", 0)):
    _int(config, field, minimum)
  m, o = config.model, config.optimizer
  _choice(m.cell, "model.cell", CELL_NAMES)
  _choice(m.kernel_init, "model.kernel_init", initializers.KERNEL_INITS)
  _choice(m.recurrent_init, "model.recurrent_init", initializers.KERNEL_INITS)
  _choice(m.bias_init, "model.bias_init", initializers.BIAS_INITS)
  _choice(o.name, "optimizer.name", OPTIMIZERS)
  _choice(o.schedule, "optimizer.schedule", SCHEDULES)
  _choice(config.nonfinite, "nonfinite", NONFINITE)
  _choice(config.impl, "impl", IMPLS)
  _choice(config.ensemble, "ensemble", ENSEMBLES)
  _choice(config.split_batch, "split_batch", SPLITS)
  try:
    check_remat(config.remat)
  except ValueError:
    _fail("remat", config.remat, "'none', 'step' (per-step recompute), 'sqrt' "
          "(O(sqrt(T)) memory) or a segment length such as '100'")
  for field, value in (("optimizer.learning_rate", o.learning_rate),
                       ("model.init_scale", m.init_scale)):
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
      _fail(field, value, "a finite number > 0")
  for field, value in (("optimizer.grad_clip", o.grad_clip),
                       ("optimizer.weight_decay", o.weight_decay),
                       ("model.chrono_t_max", m.chrono_t_max)):
    if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
      _fail(field, value, "a finite number >= 0")
  if m.proj_size and m.proj_size >= m.hidden_size:
    _fail("model.proj_size", m.proj_size,
          f"0 (none) or a size smaller than model.hidden_size={m.hidden_size}")
  try:
    task = make_task(config.task, lag=config.lag, **config.task_params.to_dict())
  except ValueError as err:
    raise ConfigError(f"config.task_params / config.lag: {err}") from None
  t_max = m.chrono_t_max or 1.5 * task.max_length
  try:
    model = make_model(m.cell, m.hidden_size, task.output_size, num_layers=m.num_layers,
                       proj_size=m.proj_size, kernel_init=m.kernel_init,
                       recurrent_init=m.recurrent_init, bias_init=m.bias_init,
                       forget_bias=float(m.forget_bias), init_scale=float(m.init_scale),
                       chrono_t_max=float(t_max) if m.bias_init == "chrono" else None)
  except ValueError as err:
    raise ConfigError(f"config.model: {err}") from None
  if config.impl == "fused":
    remat = int(config.remat) if str(config.remat).isdigit() else config.remat
    reason = fused_reason(model.cell, [jnp.float32], remat, config.tbptt)
    if reason is not None:
      _fail("impl", config.impl, f"'auto' or 'scan': the fused layer does not cover {reason}")
  return task, model


def use_1997_cell(config: ml_collections.ConfigDict, hidden_size: int) -> None:
  """Set ``config.model`` to Hochreiter & Schmidhuber's 1997 setup: the cell
  without forget gate, small uniform weights U[-0.1, 0.1] and the staircase of
  negative input/output-gate biases (``bias_init="hs1997"``)."""
  m = config.model
  m.cell, m.hidden_size = "lstm1997", hidden_size
  m.kernel_init = m.recurrent_init = "uniform"
  m.bias_init, m.init_scale = "hs1997", 0.1


def shrink_for_tests(config: ml_collections.ConfigDict, lag: int | None = None) -> None:
  """Make ``config`` tiny and quick (the ``get_config("quick")`` variants):
  8 units, batch 8, 800 sequences, 32 eval sequences, short intervals."""
  if lag is not None:
    config.lag = lag
  config.model.hidden_size = 8
  config.batch_size = 8
  config.budget_sequences = 800
  config.eval_size = 32
  config.log_every, config.eval_every, config.checkpoint_every = 10, 20, 50


def total_steps(config: ml_collections.ConfigDict) -> int:
  """Updates in the budget, rounded up to whole ``log_every`` chunks."""
  steps = -(-config.budget_sequences // config.batch_size)
  return -(-steps // config.log_every) * config.log_every


def optimizer_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments of :func:`lstm_jax.training.make_optimizer`."""
  o = config.optimizer
  return dict(name=o.name, learning_rate=float(o.learning_rate), schedule=o.schedule,
              total_steps=total_steps(config), warmup_steps=o.warmup_steps,
              grad_clip=float(o.grad_clip), weight_decay=float(o.weight_decay))

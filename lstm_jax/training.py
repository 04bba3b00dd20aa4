"""Training: optimizer from config, jitted train/eval steps, and the loop that
trains a model on a task until the task's criterion holds or the budget ends.

Everything has a leading **seed axis** ``S``: ``S`` independently initialised
models, each on its own data stream, train as one program (one compile),
split over the devices and vmapped or run one by one on each, as the run's
:class:`lstm_jax.devices.Placement` says. A single run is ``S = 1``.

Determinism: the batch of step ``n`` of seed ``s`` is drawn with
``fold_in(data_key_s, n)``, so a resumed run sees exactly the data an
uninterrupted run would have seen. Dropout and zoneout at that step (a
model's ``regularization``) draw from ``fold_in(fold_in(fold_in(data_key_s,
n), 1), b)`` for sequence ``b`` of the batch: the same on resume, and the
same however the batch is split over devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax.devices import Placement, split_batch
from lstm_jax.models import SequenceModel
from lstm_jax.sequence import sequence_keys

Array = jax.Array

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, *,
                   schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
                   grad_clip: float = 1.0, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> optax.GradientTransformation:
  """An optax optimizer: global-norm clipping (if ``grad_clip > 0``), then ``name``
  with a learning-rate ``schedule``.

  Args:
    name: one of :data:`OPTIMIZERS`.
    learning_rate: peak learning rate.
    schedule: one of :data:`SCHEDULES`.
    total_steps: steps in the schedule (cosine decay length).
    warmup_steps: linear warm-up for ``warmup_cosine``.
    grad_clip: maximum global gradient norm; 0 disables clipping.
    weight_decay: decoupled weight decay for ``adamw``.
    momentum: for ``momentum``.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={name!r}; allowed: {', '.join(OPTIMIZERS)}")
  if schedule not in SCHEDULES:
    raise ValueError(f"optimizer.schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}")
  if schedule == "constant":
    lr = learning_rate
  elif schedule == "cosine":
    lr = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  else:
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                            max(total_steps, warmup_steps + 1))
  opt = {
      "adam": lambda: optax.adam(lr),
      "adamw": lambda: optax.adamw(lr, weight_decay=weight_decay),
      "sgd": lambda: optax.sgd(lr),
      "momentum": lambda: optax.sgd(lr, momentum=momentum),
      "rmsprop": lambda: optax.rmsprop(lr),
  }[name]()
  # Always a chain of two, so that changing grad_clip keeps the state's structure
  # (a run resumed with another clip value restores its checkpoints).
  clip = optax.clip_by_global_norm(grad_clip) if grad_clip > 0 else optax.identity()
  return optax.chain(clip, opt)


class TrainState(NamedTuple):
  """Per-seed training state (every leaf has a leading seed axis ``S``)."""
  step: Array
  params: Any
  opt_state: Any


def init_state(model: SequenceModel, optimizer: optax.GradientTransformation,
               init_keys: Array, input_size: int) -> TrainState:
  """``S`` independently initialised models (``init_keys: [S]`` keys)."""
  def one(key):
    params = model.init(key, input_size)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  return jax.vmap(one)(init_keys)


def all_finite(tree: Any) -> Array:
  """Whether every leaf of ``tree`` is finite (a scalar bool array)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def make_train_chunk(model: SequenceModel, task: Any, optimizer: optax.GradientTransformation,
                     batch_size: int, num_steps: int, placement: Placement | None = None, *,
                     skip_nonfinite: bool = False
                     ) -> Callable[[TrainState, Array], tuple[TrainState, dict, dict]]:
  """A jitted function running ``num_steps`` training steps for every seed.

  ``(state [S], data_keys [S]) -> (state, metrics {name: [num_steps, S]},
  per_seq {name: [num_steps, S, batch]})``. ``metrics["finite"]`` says whether
  the loss, the gradients and the updated parameters were all finite; with
  ``skip_nonfinite`` a step where they were not leaves params and optimizer
  state unchanged (the step counter still advances, so data stay aligned).
  How the model computes its layers (``remat``, truncated BPTT, ``impl``) is
  the model's (:class:`lstm_jax.models.SequenceModel`); how the seeds and a
  single seed's batch use the devices is ``placement``'s
  (:class:`lstm_jax.devices.Placement`; default: one seed on the local
  devices), which also picks the layer implementation of ``impl="auto"``
  (:meth:`~lstm_jax.devices.Placement.layer_impl`).

  The result has ``.jitted``, ``.place`` and ``.lower``
  (:meth:`lstm_jax.devices.Placement.program`).
  """
  placement = Placement.build() if placement is None else placement
  model = dataclasses.replace(model, impl=placement.layer_impl(model.impl))

  def step(state: TrainState, data_key: Array):
    step_key = jax.random.fold_in(data_key, state.step)
    batch = task.sample(step_key, batch_size)
    split = placement.splits(state.params, batch.inputs, True)
    if model.regularization.active:  # [B] keys drawn before any split of the batch
      keys = sequence_keys(jax.random.fold_in(step_key, 1), batch.inputs.shape[0])
      noisy = lambda params, inputs, lengths, keys: model.apply(params, inputs, lengths, keys,
                                                                 train=True)
      noisy = split_batch(noisy, placement.devices, batch_argnums=(1, 2, 3)) if split else noisy
      apply = lambda params, inputs, lengths: noisy(params, inputs, lengths, keys)
    else:
      apply = placement.per_sequence(model.apply, split)

    def loss_fn(params):
      out = apply(params, batch.inputs, batch.lengths)
      return task.loss(out, batch), out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
    if skip_nonfinite:
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      params = keep(params, state.params)
      opt_state = keep(opt_state, state.opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
    per_seq = task.per_sequence(jax.lax.stop_gradient(out), batch)
    return TrainState(state.step + 1, params, opt_state), metrics, per_seq

  return chunk_program(step, task, batch_size, num_steps, placement)


def chunk_program(step: Callable[[TrainState, Array], tuple[TrainState, dict, dict]],
                  task: Any, batch_size: int, num_steps: int, placement: Placement) -> Any:
  """``num_steps`` calls of one seed's ``step(state, data_key) -> (state,
  metrics, per_seq)`` as a ``lax.scan``, run for every seed by ``placement``
  and jitted: ``(state [S], data_keys [S]) -> (state, metrics {name:
  [num_steps, S]}, per_seq {name: [num_steps, S, batch]})``, with ``.jitted``,
  ``.place`` and ``.lower`` (:meth:`lstm_jax.devices.Placement.program`)."""
  def one_seed(state: TrainState, data_key: Array):
    def body(s, _):
      s, metrics, per_seq = step(s, data_key)
      return s, (metrics, per_seq)
    return jax.lax.scan(body, state, None, length=num_steps)

  def chunk(state: TrainState, data_keys: Array):
    state, (metrics, per_seq) = placement.over_seeds(one_seed)(state, data_keys)
    seeds_second = lambda x: jnp.swapaxes(x, 0, 1)  # [S, steps, ...] -> [steps, S, ...]
    metrics, per_seq = jax.tree_util.tree_map(seeds_second, (metrics, per_seq))
    return state, metrics, per_seq

  def one_call(state: TrainState, keys: Array) -> tuple[Any, Any]:
    return (jax.tree_util.tree_map(lambda x: x[0], state.params),
            _sample_shape(task, batch_size, keys))

  return placement.program(jax.jit(chunk, donate_argnums=0), one_call, train=True)


def _sample_shape(task: Any, size: int, keys: Array) -> Any:
  """Shape of the inputs ``task.sample`` draws (traced abstractly, no compute)."""
  return jax.eval_shape(lambda k: task.sample(k, size).inputs, keys[0])


def make_eval(model: SequenceModel, task: Any, eval_size: int,
              placement: Placement | None = None) -> Callable[[Any, Array], tuple[Array, dict]]:
  """A jitted evaluation on ``eval_size`` fresh sequences per seed:
  ``(params [S], keys [S]) -> (loss [S], per_seq {name: [S, eval_size]})``.
  The sequences are drawn from ``task.held_out`` where the task has one
  (:attr:`lstm_jax.tasks.base.Task.held_out`: the task itself, except for
  tasks tested on another distribution than they train on, e.g. on longer
  sequences). ``placement``: as in :func:`make_train_chunk`."""
  task = getattr(task, "held_out", task)
  placement = Placement.build() if placement is None else placement
  model = dataclasses.replace(model, impl=placement.layer_impl(model.impl))

  def one(params, key):
    batch = task.sample(key, eval_size)
    apply = placement.per_sequence(model.apply, placement.splits(params, batch.inputs, False))
    out = apply(params, batch.inputs, batch.lengths)
    return task.loss(out, batch), task.per_sequence(out, batch)

  def one_call(params: Any, keys: Array) -> tuple[Any, Any]:
    return (jax.tree_util.tree_map(lambda x: x[0], params),
            _sample_shape(task, eval_size, keys))

  return placement.program(jax.jit(placement.over_seeds(one)), one_call, train=False)


def seed_keys(seed: int, num_seeds: int) -> tuple[Array, Array, Array]:
  """``(init_keys, data_keys, eval_keys)``, each ``[S]``, for seeds ``seed..seed+S-1``."""
  base = jax.vmap(lambda s: jax.random.key(s))(jnp.arange(seed, seed + num_seeds))
  split = jax.vmap(lambda k: jax.random.split(k, 3))(base)
  return split[:, 0], split[:, 1], split[:, 2]

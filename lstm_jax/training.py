"""Training: optimizer from config, jitted train/eval steps, and the loop that
trains a model on a task until the task's criterion holds or the budget ends.

Everything has a leading **seed axis** ``S``: ``S`` independently initialised
models, each on its own data stream, train as one program (one compile),
split over the local devices and vmapped or run one by one on each
(:mod:`lstm_jax.ensemble`). A single run is ``S = 1``.

Determinism: the batch of step ``n`` of seed ``s`` is drawn with
``fold_in(fold_in(data_key_s, n))``, so a resumed run sees exactly the data an
uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import ensemble as ensemble_lib
from lstm_jax import parallel
from lstm_jax.models import SequenceModel

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


def _all_finite(tree: Any) -> Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def seed_impl(impl: str, num_seeds: int, ensemble: str = "auto",
              devices: Sequence[jax.Device] | None = None) -> str:
  """The layer implementation a run of ``num_seeds`` seeds uses.

  ``"auto"`` becomes ``"scan"`` when a device runs several seeds vmapped
  (:func:`lstm_jax.ensemble.resolve` gives ``"vmap"`` and
  :func:`lstm_jax.ensemble.seeds_per_device` is above 1): with a batch of
  models, XLA CPU runs the fused layer's products as batched matmuls and its
  vectorised backward work through layout copies, and the plain scan was
  measured 10-25% faster (3 seeds at H=32, 8 seeds at H=128). Seeds run one
  by one (``"map"``) keep the fused layer. ``"fused"`` and ``"scan"`` are
  kept as given.
  """
  vmapped = (ensemble_lib.resolve(ensemble, devices) == "vmap"
             and ensemble_lib.seeds_per_device(num_seeds, devices) > 1)
  return "scan" if impl == "auto" and vmapped else impl


def make_train_chunk(model: SequenceModel, task: Any, optimizer: optax.GradientTransformation,
                     batch_size: int, num_steps: int, remat: bool | str | int = False,
                     skip_nonfinite: bool = False, truncate: int = 0, impl: str = "auto",
                     ensemble: str = "auto", devices: Sequence[jax.Device] | None = None,
                     split_batch: str = "auto"
                     ) -> Callable[[TrainState, Array], tuple[TrainState, dict, dict]]:
  """A jitted function running ``num_steps`` training steps for every seed.

  ``(state [S], data_keys [S]) -> (state, metrics {name: [num_steps, S]},
  per_seq {name: [num_steps, S, batch]})``. ``metrics["finite"]`` says whether
  the loss, the gradients and the updated parameters were all finite; with
  ``skip_nonfinite`` a step where they were not leaves params and optimizer
  state unchanged (the step counter still advances, so data stay aligned).
  ``truncate = k > 0`` trains with truncated BPTT (gradients through the
  state cut every ``k`` steps). ``impl``: see :data:`lstm_jax.sequence.IMPLS`
  (``"auto"`` goes through :func:`seed_impl`). ``ensemble`` and ``devices``:
  how the seeds are run (vmapped or one by one) and spread over devices,
  :func:`lstm_jax.ensemble.over_seeds`. ``split_batch``: a single seed's
  batch is split over ``devices`` (:func:`lstm_jax.parallel.split_batch`)
  with ``"on"``, never with ``"off"``, and with ``"auto"`` where
  :func:`lstm_jax.parallel.split_pays`; several seeds use the devices for
  themselves.
  """
  ensemble_lib.check_ensemble(ensemble)
  parallel.check_split(split_batch)

  def step(state: TrainState, data_key: Array, impl: str, split: bool):
    batch = task.sample(jax.random.fold_in(data_key, state.step), batch_size)
    apply = functools.partial(model.apply, remat=remat, truncate=truncate, impl=impl)
    apply = _split_if(split and _wants_split(split_batch, 1, state.params, batch.inputs, True,
                                             devices), apply, devices)

    def loss_fn(params):
      out = apply(params, batch.inputs, batch.lengths)
      return task.loss(out, batch), out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(params)
    if skip_nonfinite:
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      params = keep(params, state.params)
      opt_state = keep(opt_state, state.opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
    per_seq = task.per_sequence(jax.lax.stop_gradient(out), batch)
    return TrainState(state.step + 1, params, opt_state), metrics, per_seq

  def chunk(state: TrainState, data_keys: Array):
    used_impl = seed_impl(impl, data_keys.shape[0], ensemble, devices)
    split = data_keys.shape[0] == 1

    def one_seed(state: TrainState, data_key: Array):
      def body(s, _):
        s, metrics, per_seq = step(s, data_key, used_impl, split)
        return s, (metrics, per_seq)
      return jax.lax.scan(body, state, None, length=num_steps)

    state, (metrics, per_seq) = ensemble_lib.over_seeds(one_seed, ensemble, devices)(
        state, data_keys)
    seeds_second = lambda x: jnp.swapaxes(x, 0, 1)  # [S, steps, ...] -> [steps, S, ...]
    metrics, per_seq = jax.tree_util.tree_map(seeds_second, (metrics, per_seq))
    return state, metrics, per_seq

  def splits(state: TrainState, keys: Array) -> int:
    params = jax.tree_util.tree_map(lambda x: x[0], state.params)
    inputs = _sample_shape(task, batch_size, keys)
    return inputs.shape[0] * _wants_split(split_batch, keys.shape[0], params, inputs, True,
                                          devices)

  return _placed(jax.jit(chunk, donate_argnums=0), devices, splits)


def _placed(fn: Callable[..., Any], devices: Sequence[jax.Device] | None,
            splits: Callable[[Any, Array], int]) -> Callable[..., Any]:
  """``fn(tree [S], keys [S])`` with both arguments first moved where
  :func:`lstm_jax.ensemble.over_seeds` leaves its results (or, for one seed
  whose batch is split, copied to every device of the split), so feeding
  results back in does not compile again. The jitted ``fn`` is ``run.jitted``.
  ``splits(tree, keys)``: the batch size of a call that splits its batch, else 0."""
  def place(tree: Any, keys: Array) -> tuple[Any, Array]:
    num_seeds = keys.shape[0]
    batch = splits(tree, keys)
    if batch:
      sharding = parallel.replicated(parallel.batch_devices_used(batch, devices), devices)
    else:
      sharding = ensemble_lib.seed_sharding(num_seeds, devices)
    return jax.device_put(tree, sharding), jax.device_put(keys, sharding)

  def run(tree: Any, keys: Array):
    return fn(*place(tree, keys))
  run.jitted = fn
  run.place = place
  run.lower = lambda tree, keys: fn.lower(*place(tree, keys))
  return run


def _wants_split(split_batch: str, num_seeds: int, params: Any, inputs: Any, train: bool,
                 devices: Sequence[jax.Device] | None) -> bool:
  """Whether a call on ``inputs`` (``[B, T, I]``; array or shape struct) of
  ``num_seeds`` seeds splits its batch over ``devices``: one seed only, and
  the ``split_batch`` policy (``"auto"``: :func:`lstm_jax.parallel.split_pays`)."""
  if num_seeds != 1 or split_batch == "off":
    return False
  batch, time = inputs.shape[0], inputs.shape[1]
  if split_batch == "on":
    return parallel.batch_devices_used(batch, devices) > 1
  return parallel.split_pays(batch, parallel.matmul_flops(params, batch * time, train), devices)


def _split_if(split: bool, apply: Callable[..., Array],
              devices: Sequence[jax.Device] | None) -> Callable[..., Array]:
  """``apply(params, inputs, lengths)``, split over ``devices`` if ``split``."""
  return parallel.split_batch(apply, devices, batch_argnums=(1, 2)) if split else apply


def _sample_shape(task: Any, size: int, keys: Array) -> Any:
  """Shape of the inputs ``task.sample`` draws (traced abstractly, no compute)."""
  return jax.eval_shape(lambda k: task.sample(k, size).inputs, keys[0])


def make_eval(model: SequenceModel, task: Any, eval_size: int, ensemble: str = "auto",
              devices: Sequence[jax.Device] | None = None, split_batch: str = "auto"
              ) -> Callable[[Any, Array], tuple[Array, dict]]:
  """A jitted evaluation on ``eval_size`` fresh sequences per seed:
  ``(params [S], keys [S]) -> (loss [S], per_seq {name: [S, eval_size]})``.
  ``ensemble``, ``devices``, ``split_batch``: as in :func:`make_train_chunk`."""
  ensemble_lib.check_ensemble(ensemble)
  parallel.check_split(split_batch)

  def evaluate(params, keys):
    def one(params, key):
      batch = task.sample(key, eval_size)
      apply = _split_if(_wants_split(split_batch, keys.shape[0], params, batch.inputs, False,
                                     devices), model.apply, devices)
      out = apply(params, batch.inputs, batch.lengths)
      return task.loss(out, batch), task.per_sequence(out, batch)
    return ensemble_lib.over_seeds(one, ensemble, devices)(params, keys)
  def splits(params: Any, keys: Array) -> int:
    one = jax.tree_util.tree_map(lambda x: x[0], params)
    inputs = _sample_shape(task, eval_size, keys)
    return inputs.shape[0] * _wants_split(split_batch, keys.shape[0], one, inputs, False,
                                          devices)

  return _placed(jax.jit(evaluate), devices, splits)


def seed_keys(seed: int, num_seeds: int) -> tuple[Array, Array, Array]:
  """``(init_keys, data_keys, eval_keys)``, each ``[S]``, for seeds ``seed..seed+S-1``."""
  base = jax.vmap(lambda s: jax.random.key(s))(jnp.arange(seed, seed + num_seeds))
  split = jax.vmap(lambda k: jax.random.split(k, 3))(base)
  return split[:, 0], split[:, 1], split[:, 2]

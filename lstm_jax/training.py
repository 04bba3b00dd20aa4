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

import json
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import ensemble as ensemble_lib
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
                     ensemble: str = "auto", devices: Sequence[jax.Device] | None = None
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
  :func:`lstm_jax.ensemble.over_seeds`.
  """
  ensemble_lib.check_ensemble(ensemble)

  def step(state: TrainState, data_key: Array, impl: str):
    batch = task.sample(jax.random.fold_in(data_key, state.step), batch_size)

    def loss_fn(params):
      out = model.apply(params, batch.inputs, batch.lengths, remat=remat, truncate=truncate,
                        impl=impl)
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

    def one_seed(state: TrainState, data_key: Array):
      def body(s, _):
        s, metrics, per_seq = step(s, data_key, used_impl)
        return s, (metrics, per_seq)
      return jax.lax.scan(body, state, None, length=num_steps)

    state, (metrics, per_seq) = ensemble_lib.over_seeds(one_seed, ensemble, devices)(
        state, data_keys)
    seeds_second = lambda x: jnp.swapaxes(x, 0, 1)  # [S, steps, ...] -> [steps, S, ...]
    metrics, per_seq = jax.tree_util.tree_map(seeds_second, (metrics, per_seq))
    return state, metrics, per_seq

  return _placed(jax.jit(chunk, donate_argnums=0), devices)


def _placed(fn: Callable[..., Any], devices: Sequence[jax.Device] | None) -> Callable[..., Any]:
  """``fn(tree [S], keys [S])`` with both arguments first moved where
  :func:`lstm_jax.ensemble.over_seeds` leaves its results, so feeding results
  back in does not compile again. The jitted ``fn`` is ``run.jitted``."""
  def run(tree: Any, keys: Array):
    num_seeds = keys.shape[0]
    return fn(ensemble_lib.put(tree, num_seeds, devices),
              ensemble_lib.put(keys, num_seeds, devices))
  run.jitted = fn
  return run


def make_eval(model: SequenceModel, task: Any, eval_size: int, ensemble: str = "auto",
              devices: Sequence[jax.Device] | None = None
              ) -> Callable[[Any, Array], tuple[Array, dict]]:
  """A jitted evaluation on ``eval_size`` fresh sequences per seed:
  ``(params [S], keys [S]) -> (loss [S], per_seq {name: [S, eval_size]})``.
  ``ensemble``, ``devices``: as in :func:`make_train_chunk`."""
  ensemble_lib.check_ensemble(ensemble)

  def one(params, key):
    batch = task.sample(key, eval_size)
    out = model.apply(params, batch.inputs, batch.lengths)
    return task.loss(out, batch), task.per_sequence(out, batch)
  return _placed(jax.jit(ensemble_lib.over_seeds(one, ensemble, devices)), devices)


def seed_keys(seed: int, num_seeds: int) -> tuple[Array, Array, Array]:
  """``(init_keys, data_keys, eval_keys)``, each ``[S]``, for seeds ``seed..seed+S-1``."""
  base = jax.vmap(lambda s: jax.random.key(s))(jnp.arange(seed, seed + num_seeds))
  split = jax.vmap(lambda k: jax.random.split(k, 3))(base)
  return split[:, 0], split[:, 1], split[:, 2]


def to_jsonable(tree: Any) -> Any:
  """NumPy/JAX arrays and scalars in ``tree`` as JSON-friendly Python values."""
  if isinstance(tree, dict):
    return {str(k): to_jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [to_jsonable(v) for v in tree]
  if isinstance(tree, (np.ndarray, jax.Array)):
    return np.asarray(tree).tolist()
  if isinstance(tree, (np.floating, np.integer, np.bool_)):
    return tree.item()
  return tree


def write_json_atomic(path: str, data: Any) -> None:
  """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
  from lstm_jax.workdir import write_text_atomic
  write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, sort_keys=True))

"""Seed ensembles: run ``S`` independent copies of a computation as one program.

A training run of ``S`` seeds holds every array with a leading **seed axis**
``[S, ...]``. :func:`over_seeds` turns a function written for one seed into
one over that axis, in two stages:

1. **Across devices.** The seeds are split into equal contiguous groups, one
   per device of ``devices`` (by default every local device of the default
   backend), with :func:`jax.shard_map`. When ``S`` is not a multiple of the
   number of devices used, ``min(S, len(devices))``, the seed axis is padded
   with copies of seed 0 whose results are dropped.
2. **Within a device**, the local seeds run either

   - ``"vmap"``: batched, as one program whose every operation carries the
     seed axis (one kernel per operation for all seeds; what accelerators
     want), or
   - ``"map"``: one after another (:func:`jax.lax.map`), each seed's program
     unbatched. On XLA's CPU backend a batched per-step matmul runs on one
     core at a lower rate than the unbatched one, so this was measured faster
     there (``python -m experiments.scaling seeds``; README, "Seed ensembles").

``"auto"`` picks ``"map"`` on CPU and ``"vmap"`` on other platforms.

A CPU has one JAX device unless asked for more
(:func:`lstm_jax.parallel.set_cpu_devices` before the first JAX computation);
``python -m experiments.run`` and ``experiments.sweep`` make one per usable
core (``--cpu_devices``).

Results do not depend on how the seeds are spread: each seed's numbers are
those of the one-seed function (up to float rounding of batched kernels).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

ENSEMBLES = ("auto", "vmap", "map")
SEED_AXIS = "seed"


def check_ensemble(ensemble: Any) -> None:
  """Raise ``ValueError`` naming ``ensemble`` unless it is one of :data:`ENSEMBLES`."""
  if not isinstance(ensemble, str) or ensemble not in ENSEMBLES:
    raise ValueError(f"ensemble={ensemble!r} is not allowed; use one of {ENSEMBLES}")


def resolve(ensemble: str, devices: Sequence[jax.Device] | None = None) -> str:
  """``"vmap"`` or ``"map"``: what ``ensemble`` means on ``devices``.

  ``devices`` defaults to ``jax.local_devices()``; ``"auto"`` is ``"map"``
  when they are CPUs and ``"vmap"`` otherwise (GPU, TPU).
  """
  check_ensemble(ensemble)
  if ensemble != "auto":
    return ensemble
  devices = jax.local_devices() if devices is None else devices
  return "map" if devices[0].platform == "cpu" else "vmap"


def num_devices_used(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> int:
  """How many of ``devices`` (default: ``jax.local_devices()``) ``S`` seeds use:
  ``min(S, len(devices))``."""
  if not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
    raise ValueError(f"num_seeds={num_seeds!r} is not allowed; use an integer >= 1")
  devices = jax.local_devices() if devices is None else devices
  return max(1, min(int(num_seeds), len(devices)))


def seeds_per_device(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> int:
  """Seeds each used device runs (padding included): ``ceil(S / used)``."""
  return -(-int(num_seeds) // num_devices_used(num_seeds, devices))


def _mesh(used: int, devices: Sequence[jax.Device] | None) -> Mesh:
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(list(devices)[:used]), (SEED_AXIS,))


def seed_sharding(num_seeds: int, devices: Sequence[jax.Device] | None = None
                  ) -> jax.sharding.Sharding:
  """Where :func:`over_seeds` leaves its ``[S, ...]`` results.

  Split along the seed axis over the devices used when ``S`` is a multiple
  of their number; replicated over them otherwise (the padded case); the
  first device when one is used. Put a function's inputs here too
  (:func:`put`): a jitted function compiles again for every new input
  sharding, so a loop that feeds results back in compiles once.
  """
  used = num_devices_used(num_seeds, devices)
  if used == 1:
    return jax.sharding.SingleDeviceSharding(
        (jax.local_devices() if devices is None else devices)[0])
  spec = PartitionSpec(SEED_AXIS) if num_seeds % used == 0 else PartitionSpec()
  return jax.sharding.NamedSharding(_mesh(used, devices), spec)


def put(tree: Any, num_seeds: int, devices: Sequence[jax.Device] | None = None) -> Any:
  """``tree`` (leaves ``[S, ...]``) moved to :func:`seed_sharding` (a no-op where it is)."""
  return jax.device_put(tree, seed_sharding(num_seeds, devices))


def _leading_size(args: tuple[Any, ...]) -> int:
  sizes = {x.shape[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(args)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError("every argument leaf needs the same leading seed axis [S, ...]; "
                     f"got leading sizes {sorted(sizes, key=str)}")
  return sizes.pop()


def _local(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
  """``fn`` over a leading axis of the seeds on one device."""
  def run(*args):
    if _leading_size(args) == 1:  # one seed: no batching at all
      out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
      return jax.tree_util.tree_map(lambda y: jnp.expand_dims(y, 0), out)
    if mode == "vmap":
      return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args)
  return run


def over_seeds(fn: Callable[..., Any], ensemble: str = "auto",
               devices: Sequence[jax.Device] | None = None) -> Callable[..., Any]:
  """``fn`` for one seed, run for every seed of a leading seed axis.

  Args:
    fn: ``fn(*args) -> out`` on one seed's pytrees (no seed axis). It must be
      traceable (it is called under :func:`jax.lax.map`, :func:`jax.vmap` or
      :func:`jax.shard_map`).
    ensemble: ``"auto"``, ``"vmap"`` or ``"map"`` (module docstring).
    devices: devices to spread the seeds over; default ``jax.local_devices()``.

  Returns:
    ``g(*args) -> out``: every leaf of ``args`` is ``[S, ...]`` and every leaf
    of ``out`` is ``[S, ...]`` with ``out[s] = fn(*args[s])``, placed as
    :func:`seed_sharding` says. ``g`` is traceable; wrap it in
    :func:`jax.jit`, and :func:`put` its arguments.

  Raises:
    ValueError: unknown ``ensemble``; arguments without one common leading size.
  """
  local = _local(fn, resolve(ensemble, devices))

  def run(*args):
    num_seeds = _leading_size(args)
    used = num_devices_used(num_seeds, devices)
    if used == 1:
      return local(*args)
    pad = -num_seeds % used
    if pad:  # copies of seed 0 fill the last device's group; dropped below
      index = np.concatenate([np.arange(num_seeds), np.zeros(pad, int)])
      args = jax.tree_util.tree_map(lambda x: x[index], args)
    spec = PartitionSpec(SEED_AXIS)
    out = jax.shard_map(local, mesh=_mesh(used, devices), in_specs=spec, out_specs=spec,
                        check_vma=False)(*args)
    if pad:
      out = jax.tree_util.tree_map(lambda y: y[:num_seeds], out)
    return jax.lax.with_sharding_constraint(out, seed_sharding(num_seeds, devices))

  return run

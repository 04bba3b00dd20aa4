"""Devices: how many CPU devices JAX makes, and a batch split across devices.

An LSTM layer (any cell run over a sequence, and the experiment model with
its readout) is a **per-sequence** function: row ``b`` of its outputs depends
only on row ``b`` of its inputs. :func:`split_batch` runs such a function with
the batch split into equal parts, one per device (:func:`jax.shard_map`),
and the parameters copied to every device. Under :func:`jax.grad` the
parameter gradients of the parts are summed over the devices; losses and
everything else computed from the outputs see the whole batch, so results
equal the unsplit function's up to float rounding.

On a CPU, XLA runs each device's program on one core at a time and runs the
small per-step matmuls of a recurrence on one core, so a multi-core CPU
trains one model faster with one JAX device per core and the batch split over
them (``python -m experiments.benchmark``, row ``ours_split``; README,
"Benchmark"). A CPU has one JAX device unless asked for more before the first
JAX computation: :func:`set_cpu_devices`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from lstm_jax.devices import set_cpu_devices, usable_cores  # noqa: F401

BATCH_AXIS = "batch"
SPLITS = ("auto", "on", "off")
# A split costs a fixed ~0.3-0.5 ms per call on a CPU (device synchronisation);
# measured at (B, T, I, H) = (8, 20, 3, 8) it made training 5x slower, at
# (32, 100, 8, 32) (49 MFLOP per device) 1.14x faster, at (32, 100, 8, 128) 1.5x.
SPLIT_MIN_FLOPS = 32e6
SPLIT_MIN_ROWS = 4


def batch_devices_used(batch: int, devices: Sequence[jax.Device] | None = None) -> int:
  """How many of ``devices`` (default ``jax.local_devices()``) a batch of
  ``batch`` sequences is split over: ``min(batch, len(devices))``."""
  if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
    raise ValueError(f"batch={batch!r} is not allowed; use an integer >= 1")
  devices = jax.local_devices() if devices is None else devices
  return max(1, min(int(batch), len(devices)))


def check_split(split: Any) -> None:
  """Raise ``ValueError`` naming ``split`` unless it is one of :data:`SPLITS`."""
  if not isinstance(split, str) or split not in SPLITS:
    raise ValueError(f"split_batch={split!r} is not allowed; use one of {SPLITS}")


def split_pays(batch: int, flops: float, devices: Sequence[jax.Device] | None = None) -> bool:
  """Whether splitting a call of ``flops`` matmul FLOPs on ``batch`` rows over
  ``devices`` is expected to be faster: at least two devices, at least
  :data:`SPLIT_MIN_ROWS` rows and :data:`SPLIT_MIN_FLOPS` FLOPs per device."""
  used = batch_devices_used(batch, devices)
  return used > 1 and batch // used >= SPLIT_MIN_ROWS and flops / used >= SPLIT_MIN_FLOPS


def matmul_flops(params: Any, rows: int, train: bool) -> float:
  """Matmul FLOPs of running ``params``' matrices over ``rows`` input rows
  (``B * T`` for a sequence model): ``2 * rows * sum(matrix sizes)``, three
  times that for a training step (forward, input and weight gradients)."""
  weights = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(params)
                if np.ndim(x) == 2)
  return (6.0 if train else 2.0) * rows * weights


def replicated(used: int, devices: Sequence[jax.Device] | None = None
               ) -> jax.sharding.Sharding:
  """A copy on each of the first ``used`` devices: where the parameters of a
  split call live (put them there before a loop so it compiles once)."""
  return jax.sharding.NamedSharding(_mesh(used, devices), PartitionSpec())


def batch_sharding(batch: int, devices: Sequence[jax.Device] | None = None
                   ) -> jax.sharding.Sharding:
  """Rows of a ``[B, ...]`` batch split as :func:`split_batch` splits them
  (copied to every device used when they do not divide ``B``; one device:
  that device). Inputs already there are not moved per call."""
  used = batch_devices_used(batch, devices)
  if used == 1:
    return jax.sharding.SingleDeviceSharding(
        (jax.local_devices() if devices is None else devices)[0])
  spec = PartitionSpec() if batch % used else PartitionSpec(BATCH_AXIS)
  return jax.sharding.NamedSharding(_mesh(used, devices), spec)


def _mesh(used: int, devices: Sequence[jax.Device] | None) -> Mesh:
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(list(devices)[:used]), (BATCH_AXIS,))


def split_batch(fn: Callable[..., Any], devices: Sequence[jax.Device] | None = None, *,
                batch_argnums: Sequence[int] = (1,)) -> Callable[..., Any]:
  """A per-sequence ``fn`` run with its batch split over ``devices``.

  Args:
    fn: ``fn(*args) -> out`` where every leaf of the arguments named in
      ``batch_argnums`` is ``[B, ...]`` (batch first), every leaf of ``out``
      is ``[B, ...]``, and output row ``b`` depends only on input row ``b``
      (true of ``lstm_jax.rnn``/``stacked_rnn``/``bidirectional_rnn`` with
      batch-major inputs, and of ``SequenceModel.apply``). Other arguments
      (parameters) are copied to every device. ``fn`` must be traceable.
    devices: devices to split over; default ``jax.local_devices()``.
    batch_argnums: positions of the batch arguments (``None`` arguments,
      e.g. absent ``lengths``, are allowed).

  Returns:
    ``g(*args) -> out``, equal to ``fn(*args)``: the batch is split into
    ``d = min(B, len(devices))`` equal parts (padded with copies of row 0
    whose outputs are dropped when ``d`` does not divide ``B``), one per
    device. Differentiable; usable inside or outside :func:`jax.jit`.

  Raises:
    ValueError: ``batch_argnums`` out of range, or batch leaves of unequal
      leading size.
  """
  argnums = tuple(batch_argnums)

  def run(*args):
    if not argnums or any(not -len(args) <= i < len(args) for i in argnums):
      raise ValueError(f"batch_argnums={argnums!r} does not name arguments of a call "
                       f"with {len(args)} positional arguments")
    batched = {i % len(args) for i in argnums}
    leaves = [x for i in sorted(batched) for x in jax.tree_util.tree_leaves(args[i])]
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
      raise ValueError("the batch arguments need one common leading batch axis [B, ...]; "
                       f"got leading sizes {sorted(sizes, key=str)}")
    batch = sizes.pop()
    used = batch_devices_used(batch, devices)
    if used == 1:
      return fn(*args)
    pad = -batch % used
    if pad:
      index = np.concatenate([np.arange(batch), np.zeros(pad, int)])
      args = tuple(jax.tree_util.tree_map(lambda x: x[index], a) if i in batched else a
                   for i, a in enumerate(args))
    mesh = _mesh(used, devices)
    specs = tuple(PartitionSpec(BATCH_AXIS) if i in batched else PartitionSpec()
                  for i in range(len(args)))
    # check_vma=False: custom VJPs (lstm_jax.fused) carry no varying-axis types.
    out = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(BATCH_AXIS),
                        check_vma=False)(*args)
    if pad:
      out = jax.tree_util.tree_map(lambda y: y[:batch], out)
    return out

  return run

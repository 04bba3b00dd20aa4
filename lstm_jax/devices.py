"""Devices: where the seeds and the batch rows of a run are computed.

Everything here stands on one primitive, :func:`split_leading`: run a function
with the leading axis of some of its arguments split into equal parts over
the devices of a one-axis :class:`jax.sharding.Mesh` (``jax.shard_map``),
padded when the parts are uneven, the other arguments copied to every
device. Two uses of it:

* **Seeds** (:func:`over_seeds`). A training run of ``S`` seeds holds every
  array with a leading seed axis ``[S, ...]``. The seeds are split into equal
  contiguous groups, one per device (``min(S, devices)`` of them; the last
  group padded with copies of seed 0 whose results are dropped), and each
  device runs its group either ``"vmap"`` (batched, one program whose every
  operation carries the seed axis: what accelerators want) or ``"map"`` (one
  seed after another with :func:`jax.lax.map`; on XLA's CPU backend a
  batched per-step matmul runs on one core at a lower rate than the
  unbatched one, so this was measured faster there: README, "Seed
  ensembles"). ``"auto"`` is ``"map"`` on CPU and ``"vmap"`` on GPU/TPU.
* **Batch rows** (:func:`split_batch`). An LSTM layer, a stack, and the
  experiment model with its readout are per-sequence functions: row ``b`` of
  their outputs depends only on row ``b`` of their inputs. They can run with
  the batch split over the devices and the parameters copied to each; under
  :func:`jax.grad` the parameter gradients of the parts are summed, and the
  loss, computed outside from the whole batch, is unchanged, so results equal
  the unsplit function's up to float rounding. On a multi-core CPU with one
  JAX device per core this trains one model faster (README, "One model on
  several cores"); the split costs a fixed ~0.3-0.5 ms per call, so
  ``"auto"`` splits only calls big enough to gain (:func:`split_pays`).

A run decides its :class:`Placement` once, from its config and the devices,
and passes it down to the training code.

A CPU has one JAX device unless asked for more before the first JAX
computation (:func:`set_cpu_devices`); ``python -m experiments.run`` and
``experiments.sweep`` make one per usable core (``--cpu_devices``).

**Several processes** (:func:`initialize_distributed`: JAX's own
distributed runtime, ``jax.distributed``). Once it is initialised,
``jax.devices()`` lists the devices of every process, and the default
devices here are those (``jax.devices()``, which is ``jax.local_devices()``
in a single process): a run's mesh spans all processes, its seeds (or one
seed's batch) are split over all of their devices, and every process runs
the same program on its own part. Results that live on other processes'
devices are brought to every process by :func:`to_host`; :func:`broadcast`
and :func:`barrier` keep the processes in step around files only process 0
writes. Faults the runtime finds itself (processes missing at the start,
two with one id, a process that stopped sending heartbeats) stop a process
from C++ (a fatal log and ``abort()``); :class:`RuntimeLog` and
:func:`runtime_fault` turn that into one line for a supervising process
(``experiments.cli.supervise``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lstm_jax import checks

Array = jax.Array

SEED_AXIS = "seed"
BATCH_AXIS = "batch"
ENSEMBLES = ("auto", "vmap", "map")
"""How the seeds of one device run: ``"vmap"``, ``"map"``, or ``"auto"``."""
SPLITS = ("auto", "on", "off")
"""Whether a single seed's batch is split over the devices."""

# A split costs a fixed ~0.3-0.5 ms per call on a CPU (device synchronisation);
# measured at (B, T, I, H) = (8, 20, 3, 8) it made training 5x slower, at
# (32, 100, 8, 32) (49 MFLOP per device) 1.14x faster, at (32, 100, 8, 128) 1.5x.
SPLIT_MIN_FLOPS = 32e6
SPLIT_MIN_ROWS = 4


# ----------------------------------------------------------------------------
# CPU devices.


def usable_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def set_cpu_devices(count: int = 0) -> int:
  """Ask JAX for ``count`` CPU devices (``0``: :func:`usable_cores`); return the count set.

  Must run before the first JAX computation of the process. Does nothing and
  returns ``0`` when ``XLA_FLAGS`` already sets
  ``--xla_force_host_platform_device_count`` (the user's choice wins) or when
  JAX's backends are already initialised.

  Raises:
    ValueError: ``count`` is not an integer >= 0.
  """
  if not checks.is_int(count) or count < 0:
    checks.fail("cpu_devices", count, "expected an integer >= 1, or 0 for one device per "
                "usable core")
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return 0
  count = int(count) or usable_cores()
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # backends already initialised: keep what they have
    return 0
  return count


MMAP_THRESHOLD_MAX = 32 * 2**20
"""glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit systems (``mallopt(3)``)."""


freed_memory_kept = False
"""Whether :func:`keep_freed_host_memory` has been applied in this process."""


def keep_freed_host_memory() -> bool:
  """Let the process reuse freed host memory instead of handing it back to
  the OS after every call (glibc's ``malloc`` only); ``True`` if applied.

  XLA's CPU runtime allocates a call's temporaries when the call starts and
  frees them when it ends. glibc serves blocks above its mmap threshold
  (128 KiB at first) with fresh pages and unmaps them on free, so each call
  of a program with megabytes of temporaries page-faults them in again: one
  training step at (B, T, I, H) = (8, 1000, 1, 64) took ~8,500 page faults,
  about a quarter of its time. This raises the threshold to its maximum
  (:data:`MMAP_THRESHOLD_MAX`) and stops trimming the heap, so blocks up to
  32 MiB come back from the heap warm. Process-wide: the experiment entry
  points call it; a library import does not. Does nothing and returns
  ``False`` where ``mallopt`` is missing (not glibc).
  """
  import ctypes  # pylint: disable=import-outside-toplevel
  import ctypes.util  # pylint: disable=import-outside-toplevel
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  m_trim_threshold, m_mmap_threshold = -1, -3   # <malloc.h>
  applied = bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD_MAX)
                 and mallopt(m_trim_threshold, 2**31 - 1))
  global freed_memory_kept  # pylint: disable=global-statement
  freed_memory_kept = freed_memory_kept or applied
  return applied


# ----------------------------------------------------------------------------
# The primitive: a leading axis split over the devices of a mesh.


def _devices(devices: Sequence[jax.Device] | None) -> tuple[jax.Device, ...]:
  return tuple(jax.devices() if devices is None else devices)


def devices_used(size: int, devices: Sequence[jax.Device] | None = None) -> int:
  """How many of ``devices`` (default ``jax.devices()``) a leading axis
  of ``size`` entries is split over: ``min(size, len(devices))``."""
  if not checks.is_int(size) or size < 1:
    checks.fail("size", size, "expected an integer >= 1 (seeds or batch rows)")
  return max(1, min(int(size), len(_devices(devices))))


def mesh(used: int, devices: Sequence[jax.Device] | None = None, axis: str = BATCH_AXIS
         ) -> Mesh:
  """A one-axis mesh named ``axis`` over the first ``used`` of ``devices``."""
  return Mesh(np.asarray(_devices(devices)[:used]), (axis,))


def sharding(size: int, devices: Sequence[jax.Device] | None = None, axis: str = BATCH_AXIS
             ) -> jax.sharding.Sharding:
  """Where :func:`split_leading` leaves ``[size, ...]`` results.

  Split along ``axis`` over the devices used when they divide ``size``;
  copied to each of them otherwise (the padded case); the first device when
  one is used. Put a jitted function's inputs here too: a jitted function
  compiles again for every new input sharding, so a loop that feeds results
  back in compiles once.
  """
  used = devices_used(size, devices)
  if used == 1:
    return jax.sharding.SingleDeviceSharding(_devices(devices)[0])
  spec = PartitionSpec(axis) if size % used == 0 else PartitionSpec()
  return NamedSharding(mesh(used, devices, axis), spec)


def replicated(used: int, devices: Sequence[jax.Device] | None = None
               ) -> jax.sharding.Sharding:
  """A copy on each of the first ``used`` devices (the parameters of a split call)."""
  return NamedSharding(mesh(used, devices), PartitionSpec())


def _leading_size(leaves: list[Any], what: str) -> int:
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"the {what} arguments need one common leading {what} axis "
                     f"[{what[0].upper()}, ...]; got leading sizes {sorted(sizes, key=str)}")
  return sizes.pop()


def split_leading(fn: Callable[..., Any], devices: Sequence[jax.Device] | None = None, *,
                  argnums: Sequence[int] | None = None, axis: str = BATCH_AXIS,
                  what: str = "batch") -> Callable[..., Any]:
  """``fn`` run with the leading axis of some arguments split over ``devices``.

  Args:
    fn: ``fn(*args) -> out``, traceable; every leaf of a split argument is
      ``[N, ...]``, every leaf of ``out`` is ``[N, ...]``, and entry ``n`` of
      the outputs may depend on entry ``n`` of the split arguments only.
    devices: the devices (default ``jax.devices()``: every process's); the first
      ``d = min(N, len(devices))`` are used.
    argnums: positions of the split arguments (``None``: all); the others
      are copied to every device. ``None`` arguments are allowed.
    axis: the mesh axis name.
    what: what the leading axis holds, for error messages (``"seed"``).

  Returns:
    ``g(*args) -> out`` equal to ``fn(*args)``: ``N`` is padded to a
    multiple of ``d`` with copies of entry 0 (their outputs are dropped) and
    each device runs ``fn`` on ``N / d`` entries (``jax.shard_map``). With
    one device used, ``g`` is ``fn``. Differentiable; usable inside or
    outside :func:`jax.jit`.

  Raises:
    ValueError: ``argnums`` out of range; split arguments without one common
      leading size.
  """
  wanted = None if argnums is None else tuple(argnums)

  def run(*args):
    if wanted is None:
      split = set(range(len(args)))
    else:
      if not wanted or any(not -len(args) <= i < len(args) for i in wanted):
        raise ValueError(f"argnums={wanted!r} does not name arguments of a call with "
                         f"{len(args)} positional arguments")
      split = {i % len(args) for i in wanted}
    leaves = [x for i in sorted(split) for x in jax.tree_util.tree_leaves(args[i])]
    size = _leading_size(leaves, what)
    used = devices_used(size, devices)
    if used == 1:
      return fn(*args)
    pad = -size % used
    if pad:
      index = np.concatenate([np.arange(size), np.zeros(pad, int)])
      args = tuple(jax.tree_util.tree_map(lambda x: x[index], a) if i in split else a
                   for i, a in enumerate(args))
    specs = tuple(PartitionSpec(axis) if i in split else PartitionSpec()
                  for i in range(len(args)))
    # check_vma=False: custom VJPs (lstm_jax.fused) carry no varying-axis types.
    out = jax.shard_map(fn, mesh=mesh(used, devices, axis), in_specs=specs,
                        out_specs=PartitionSpec(axis), check_vma=False)(*args)
    if pad:
      out = jax.tree_util.tree_map(lambda y: y[:size], out)
    return out

  return run


# ----------------------------------------------------------------------------
# Seeds.


def resolve(ensemble: str, devices: Sequence[jax.Device] | None = None) -> str:
  """``"vmap"`` or ``"map"``: what ``ensemble`` (checked to be one of
  :data:`ENSEMBLES`) means on ``devices``: ``"auto"`` is ``"map"`` when they
  are CPUs and ``"vmap"`` otherwise."""
  checks.choice("ensemble", ensemble, ENSEMBLES)
  if ensemble != "auto":
    return ensemble
  return "map" if _devices(devices)[0].platform == "cpu" else "vmap"


def seeds_per_device(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> int:
  """Seeds each used device runs (padding included): ``ceil(S / used)``."""
  return -(-int(num_seeds) // devices_used(num_seeds, devices))


def _on_one_device(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
  """``fn`` for one seed, run over a leading seed axis on one device."""
  def run(*args):
    if _leading_size(jax.tree_util.tree_leaves(args), "seed") == 1:  # no batching at all
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
    fn: ``fn(*args) -> out`` on one seed's pytrees (no seed axis); traceable.
    ensemble: ``"auto"``, ``"vmap"`` or ``"map"`` (module docstring).
    devices: devices to spread the seeds over; default ``jax.devices()``.

  Returns:
    ``g(*args) -> out``: every leaf of ``args`` and of ``out`` is
    ``[S, ...]``, with ``out[s] = fn(*args[s])``, placed as
    ``sharding(S, devices, SEED_AXIS)`` says when several devices are used
    (where the arguments are otherwise). Wrap ``g`` in :func:`jax.jit`
    and put its arguments there too.

  Raises:
    ValueError: unknown ``ensemble``; arguments without one common leading size.
  """
  split = split_leading(_on_one_device(fn, resolve(ensemble, devices)), devices,
                        axis=SEED_AXIS, what="seed")

  def run(*args):
    out = split(*args)
    num_seeds = _leading_size(jax.tree_util.tree_leaves(args), "seed")
    if devices_used(num_seeds, devices) == 1:  # one device: results stay where inputs are
      return out
    return jax.lax.with_sharding_constraint(out, sharding(num_seeds, devices, SEED_AXIS))

  return run


# ----------------------------------------------------------------------------
# Batch rows.


def split_batch(fn: Callable[..., Any], devices: Sequence[jax.Device] | None = None, *,
                batch_argnums: Sequence[int] = (1,)) -> Callable[..., Any]:
  """A per-sequence ``fn`` run with its batch split over ``devices``.

  ``fn(*args) -> out`` where every leaf of the arguments named in
  ``batch_argnums`` is ``[B, ...]`` (batch first), every leaf of ``out`` is
  ``[B, ...]``, and output row ``b`` depends only on input row ``b`` (true
  of ``lstm_jax.rnn``/``stacked_rnn``/``bidirectional_rnn`` with batch-major
  inputs, and of ``SequenceModel.apply``). Other arguments (parameters) are
  copied to every device. Returns ``g`` with ``g(*args) == fn(*args)``:
  :func:`split_leading` over ``d = min(B, len(devices))`` devices.
  """
  return split_leading(fn, devices, argnums=batch_argnums, axis=BATCH_AXIS, what="batch")


def split_pays(batch: int, flops: float, devices: Sequence[jax.Device] | None = None) -> bool:
  """Whether splitting a call of ``flops`` matmul FLOPs on ``batch`` rows over
  ``devices`` is expected to be faster: at least two devices, at least
  :data:`SPLIT_MIN_ROWS` rows and :data:`SPLIT_MIN_FLOPS` FLOPs per device."""
  used = devices_used(batch, devices)
  return used > 1 and batch // used >= SPLIT_MIN_ROWS and flops / used >= SPLIT_MIN_FLOPS


def matmul_flops(params: Any, rows: int, train: bool) -> float:
  """Matmul FLOPs of running ``params``' matrices over ``rows`` input rows
  (``B * T`` for a sequence model): ``2 * rows * sum(matrix sizes)``, three
  times that for a training step (forward, input and weight gradients)."""
  weights = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(params)
                if np.ndim(x) == 2)
  return (6.0 if train else 2.0) * rows * weights


def put(tree: Any, where: jax.sharding.Sharding) -> Any:
  """``jax.device_put(tree, where)``, also where ``where`` spans other processes'
  devices: every process passes the same values, and typed PRNG keys travel
  as their raw data (``device_put`` refuses them there)."""
  if jax.process_count() == 1 or where.is_fully_addressable:
    return jax.device_put(tree, where)

  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = jax.device_put(np.asarray(jax.random.key_data(x)), where)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(x, where)
  return jax.tree_util.tree_map(one, tree)


# ----------------------------------------------------------------------------
# The placement of a run, decided once.


@dataclasses.dataclass(frozen=True)
class Placement:
  """How a run of ``num_seeds`` seeds uses its devices (hashable, static).

  Build it with :meth:`build` (which checks the options); the training code
  only asks it.

  Attributes:
    devices: the devices of the run.
    num_seeds: ``S``.
    ensemble: ``"vmap"`` or ``"map"`` (``"auto"`` resolved for the devices).
    split_batch: ``"auto"``, ``"on"`` or ``"off"``: whether a single seed's
      batch is split over the devices (several seeds use the devices for
      themselves and never split).
  """
  devices: tuple[jax.Device, ...]
  num_seeds: int = 1
  ensemble: str = "map"
  split_batch: str = "auto"

  @classmethod
  def build(cls, num_seeds: int = 1, ensemble: str = "auto", split_batch: str = "auto",
            devices: Sequence[jax.Device] | None = None) -> Placement:
    """The placement of a run (``devices`` default ``jax.devices()``: those of
    every process when several run, :func:`initialize_distributed`).

    Raises:
      ValueError: ``num_seeds`` below 1, an unknown ``ensemble`` or
        ``split_batch`` (the message names the field, the value and what is
        allowed).
    """
    checks.integer("num_seeds", num_seeds, 1)
    checks.choice("split_batch", split_batch, SPLITS)
    devices = _devices(devices)
    return cls(devices, int(num_seeds), resolve(ensemble, devices), split_batch)

  @property
  def seed_devices(self) -> int:
    """Devices the seeds are spread over: ``min(S, len(devices))``."""
    return devices_used(self.num_seeds, self.devices)

  @property
  def seeds_per_device(self) -> int:
    """Seeds each used device runs, padding included."""
    return seeds_per_device(self.num_seeds, self.devices)

  def layer_impl(self, impl: str) -> str:
    """The layer implementation the run's seeds use.

    ``"auto"`` becomes ``"scan"`` when a device runs several seeds vmapped:
    with a batch of models, XLA CPU runs the fused layer's products as
    batched matmuls and its vectorised backward work through layout copies,
    and the plain scan was measured 10-25% faster (3 seeds at H=32, 8 seeds
    at H=128). Seeds run one by one (``"map"``) keep the fused layer.
    ``"fused"`` and ``"scan"`` are kept as given.
    """
    vmapped = self.ensemble == "vmap" and self.seeds_per_device > 1
    return "scan" if impl == "auto" and vmapped else impl

  def splits(self, params: Any, inputs: Any, train: bool) -> bool:
    """Whether one seed's call on ``inputs`` (``[B, T, ...]``; an array or a
    shape struct) with ``params`` (one seed's) splits its batch."""
    if self.num_seeds != 1 or self.split_batch == "off":
      return False
    batch, time = inputs.shape[0], inputs.shape[1]
    if self.split_batch == "on":
      return devices_used(batch, self.devices) > 1
    return split_pays(batch, matmul_flops(params, batch * time, train), self.devices)

  def per_sequence(self, apply: Callable[..., Any], split: bool) -> Callable[..., Any]:
    """``apply(params, inputs, lengths)``, with its batch split if ``split``."""
    return split_batch(apply, self.devices, batch_argnums=(1, 2)) if split else apply

  def over_seeds(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` for one seed over the run's seed axis (:func:`over_seeds`)."""
    return over_seeds(fn, self.ensemble, self.devices)

  def input_sharding(self, split_rows: int = 0) -> jax.sharding.Sharding:
    """Where a program's ``[S, ...]`` arguments go: where :meth:`over_seeds`
    leaves its results, or, for one seed whose batch of ``split_rows`` rows is
    split, a copy on every device of the split."""
    if split_rows:
      return replicated(devices_used(split_rows, self.devices), self.devices)
    return sharding(self.num_seeds, self.devices, SEED_AXIS)

  def program(self, fn: Callable[..., Any],
              one_call: Callable[[Any, Array], tuple[Any, Any]], train: bool
              ) -> Callable[..., Any]:
    """A jitted ``fn(tree [S], keys [S])`` whose arguments are first put
    where the run holds them, so a loop feeding results back in compiles once.

    Args:
      fn: the jitted program.
      one_call: ``(tree, keys) -> (params, inputs)``: one seed's parameters
        and the shape struct of the inputs of its model call, to decide
        whether that call splits its batch (:meth:`splits`).
      train: whether the program is a training step.

    Returns:
      ``run(tree, keys)``, with ``run.jitted`` (``fn``), ``run.place(tree,
      keys)`` (the placed arguments) and ``run.lower(tree, keys)``
      (``fn.lower`` on them, for ahead-of-time compilation and its memory
      analysis).
    """
    decided: dict[str, jax.sharding.Sharding] = {}

    def place(tree: Any, keys: Array) -> tuple[Any, Array]:
      if "where" not in decided:  # shapes are fixed for a program: decide once
        rows = 0
        if self.num_seeds == 1 and self.split_batch != "off":
          params, inputs = one_call(tree, keys)
          rows = inputs.shape[0] * self.splits(params, inputs, train)
        decided["where"] = self.input_sharding(rows)
      where = decided["where"]
      return put(tree, where), put(keys, where)

    def run(tree: Any, keys: Array):
      return fn(*place(tree, keys))

    run.jitted = fn
    run.place = place
    run.lower = lambda tree, keys: fn.lower(*place(tree, keys))
    return run


# ----------------------------------------------------------------------------
# Several processes.


class DistributedError(RuntimeError):
  """The distributed runtime could not start as asked (bad flags, a coordinator
  that cannot be reached in time, processes that disagree)."""


DISTRIBUTED_TIMEOUT_S = 120
"""Default of :func:`initialize_distributed`'s ``timeout_s``."""

CLUSTER_SIZE_VARIABLES = (("SLURM", "SLURM_STEP_NUM_TASKS"),
                          ("Open MPI", "OMPI_COMM_WORLD_SIZE"))
"""Environment variables of a launcher that say how many processes it started."""

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def cluster_detected(environ: Mapping[str, str] = os.environ) -> str | None:
  """The launcher that started this process as one of several, or ``None``.

  ``"SLURM"`` or ``"Open MPI"`` when their variables
  (:data:`CLUSTER_SIZE_VARIABLES`) count more than one process, ``"TPU pod"``
  when ``TPU_WORKER_HOSTNAMES`` names several hosts, ``"JAX"`` when
  ``JAX_COORDINATOR_ADDRESS`` is set. JAX's own cluster detection
  (``jax.distributed.initialize()`` without arguments) then fills in the
  coordinator, the number of processes and this process's id. SLURM counts
  the processes of a job step (``srun``), so a batch script that runs Python
  without ``srun``, or a job array's one-task job, is no cluster: it runs alone.
  """
  for name, variable in CLUSTER_SIZE_VARIABLES:
    value = environ.get(variable, "").strip()
    if value.isdigit() and int(value) > 1:
      return name
  if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
    return "TPU pod"
  if environ.get("JAX_COORDINATOR_ADDRESS", "").strip():
    return "JAX"
  return None


distributed_timeout_s = DISTRIBUTED_TIMEOUT_S
"""The timeout the distributed runtime of this process was started with."""


@dataclasses.dataclass(frozen=True)
class DistributedRun:
  """What this process was asked to join (for fault messages).

  Attributes:
    coordinator: ``host:port`` of process 0 (``""``: a launcher's, detected by JAX).
    num_processes: processes of the run (``0``: the launcher's count).
    process_id: this process's id (``-1``: the launcher's).
    timeout_s: the runtime's timeout (:func:`initialize_distributed`).
  """
  coordinator: str = ""
  num_processes: int = 0
  process_id: int = -1
  timeout_s: int = DISTRIBUTED_TIMEOUT_S


def initialize_distributed(coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1, timeout_s: int = DISTRIBUTED_TIMEOUT_S,
                           environ: Mapping[str, str] = os.environ,
                           before_start: Callable[[DistributedRun], None] | None = None
                           ) -> bool:
  """Start JAX's distributed runtime when this process is one of several;
  return whether it did.

  Must run before the first JAX computation. Three cases:

  * ``coordinator`` (``host:port`` of process 0, which listens there) with
    ``num_processes >= 1`` and ``0 <= process_id < num_processes``: started
    as given (``jax.distributed.initialize``).
  * none of the three, and :func:`cluster_detected` finds a launcher: started
    with JAX's cluster detection (SLURM, Open MPI, TPU pod slices).
  * none of the three and no launcher: nothing is started (one process).

  ``timeout_s`` bounds every wait: reaching the coordinator and all processes
  registering (``initialization_timeout``), a process that stops sending
  heartbeats, whereupon every other process is stopped by the runtime
  (``heartbeat_timeout_seconds``), and the shutdown barrier
  (``shutdown_timeout_seconds``). On CPU the processes' collectives run over
  gloo (JAX's default CPU collectives, ``jax_cpu_collectives_implementation``).

  Raises:
    DistributedError: some but not all of the three given, a value out of
      range, a ``coordinator`` that is no ``host:port``, or a runtime that
      did not start within ``timeout_s`` (coordinator unreachable), or whose
      process count is not ``num_processes`` (process 0 was given another):
      one line. Where the runtime itself finds the fault (fewer processes
      than ``num_processes`` arrived within ``timeout_s``, two with one id,
      a process that stopped sending heartbeats), it stops the process
      from C++ with a fatal log and ``abort()``, which no Python code can
      catch: ``before_start`` (called with the :class:`DistributedRun` after
      the checks above, just before the runtime starts) can place a
      supervisor that turns that log into one line (:class:`RuntimeLog`;
      the entry points do: ``experiments.cli``).
  """
  given = [bool(coordinator), num_processes != 0, process_id != -1]
  if not checks.is_int(timeout_s) or timeout_s < 1:
    raise DistributedError(f"--distributed_timeout={timeout_s!r}: expected whole seconds >= 1")
  if any(given) and not all(given):
    raise DistributedError("--coordinator, --num_processes and --process_id go together: "
                           "give all three (or none, to run alone or let JAX detect a "
                           "SLURM, Open MPI or TPU cluster)")
  if all(given):
    if not _ADDRESS.match(coordinator) or not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536:
      raise DistributedError(f"--coordinator={coordinator!r}: expected host:port of process 0, "
                             "e.g. localhost:12355")
    if not checks.is_int(num_processes) or num_processes < 1:
      raise DistributedError(f"--num_processes={num_processes!r}: expected an integer >= 1")
    if not checks.is_int(process_id) or not 0 <= process_id < num_processes:
      raise DistributedError(f"--process_id={process_id!r}: expected an integer from 0 to "
                             f"{num_processes - 1} (--num_processes={num_processes})")
    kwargs: dict[str, Any] = dict(coordinator_address=coordinator,
                                  num_processes=int(num_processes), process_id=int(process_id))
    where = f"coordinator {coordinator}, process {process_id} of {num_processes}"
    _check_coordinator(coordinator, int(process_id), int(timeout_s))
  else:
    launcher = cluster_detected(environ)
    if launcher is None:
      return False
    kwargs, where = {}, f"the processes of a {launcher} cluster (JAX's detection)"
  global distributed_timeout_s  # pylint: disable=global-statement
  distributed_timeout_s = int(timeout_s)
  if before_start is not None:
    before_start(DistributedRun(coordinator, int(num_processes), int(process_id),
                                int(timeout_s)))
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout_s),
                               heartbeat_timeout_seconds=int(timeout_s),
                               shutdown_timeout_seconds=int(timeout_s))
  except Exception as err:  # jax raises RuntimeError, ValueError, XlaRuntimeError
    text = " ".join(str(err).split())[:300] or type(err).__name__
    raise DistributedError(f"the distributed runtime did not start within {timeout_s} s "
                           f"({where}): {text}; check that every process got the same "
                           "--coordinator and --num_processes, a distinct --process_id, and "
                           "that process 0 runs and its port is reachable") from None
  if all(given) and jax.process_count() != num_processes:
    raise DistributedError(f"--num_processes={num_processes}, but process 0 at {coordinator} "
                           f"started a run of {jax.process_count()} processes; give every "
                           "process the same --num_processes")
  return jax.process_count() > 1


def _check_coordinator(coordinator: str, process_id: int, timeout_s: int) -> None:
  """Before JAX's runtime, which stops the process on a failed connection:
  process 0 can listen on the coordinator's port; every other process
  reaches it within ``timeout_s`` (retrying while process 0 starts)."""
  import socket  # pylint: disable=import-outside-toplevel
  host, port = coordinator.rsplit(":", 1)
  host, port = host.strip("[]"), int(port)
  if process_id == 0:
    try:
      with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("", port))
    except OSError as err:
      raise DistributedError(f"--coordinator={coordinator}: process 0 cannot listen on port "
                             f"{port} ({err.strerror or err}); another program holds it, or "
                             "another process was also started with --process_id=0 (give "
                             "each process a distinct --process_id); else choose a free "
                             "port") from None
    return
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
        return
    except OSError as err:
      if time.monotonic() >= deadline:
        raise DistributedError(
            f"--coordinator={coordinator}: process 0 could not be reached within {timeout_s} s "
            f"({err.strerror or err}); start process 0 there, or fix --coordinator") from None
      time.sleep(0.25)


# A line of absl/glog logging, as JAX's C++ runtime writes them to fd 2:
# "E1204 04:04:20.381342   25354 coordination_service.cc:518] message", at
# the start of a line or after a partial one.
_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([^ \]]+):\d+\] ")
# The end of a partial line that may be the start of a log line.
_LOG_HEAD = re.compile(rb"[IWEF](\d{0,3}|\d{4}( [\d:. ]*( [^ \]\n]*)?)?)$")
# The coordination runtime's own sources: their errors and warnings are held
# back a moment, as they precede (and are summed up by) a fatal stop.
_RUNTIME_SOURCES = re.compile(rb"coordination|client\.(h|cc)|service\.(h|cc)|preemption")
# Where the text of a fatal error ends and its dump (C++ stack trace,
# Python's faulthandler report) begins.
_DUMP_START = re.compile(rb"^(\*\*\* |    @ |Fatal Python error|Thread 0x|Current thread 0x)",
                         re.MULTILINE)


class RuntimeLog:
  """The stderr of a process of a multi-process run, passed on as written
  except for the fatal stop of JAX's distributed runtime.

  That runtime finds some faults itself (processes missing at the start, two
  processes with one id, a process that stopped sending heartbeats) and
  stops the process from C++: a fatal log line, a stack trace and
  ``abort()``; no Python code runs. A supervising process reads the run's
  stderr through :meth:`feed` and writes it on with ``write``; once a fatal
  line comes (:attr:`fatal`: its text), the rest, the dump, is dropped, and
  the supervisor writes one line instead (:func:`runtime_fault`). The
  runtime's own error and warning lines that precede it are held back for
  ``hold_s`` seconds, then written unless a fatal line came meanwhile.
  Everything else is written at once: a line as soon as it ends, a partial
  line (a progress bar's ``\\r`` updates) as it arrives, unless a log line
  begins in it or may begin at its end, which waits for its end
  (``hold_s`` at most).
  """

  def __init__(self, write: Callable[[bytes], Any], hold_s: float = 2.0):
    self.write = write
    self.hold_s = hold_s
    self.fatal: str | None = None
    self._buffer = b""
    self._pending_since: float | None = None
    self._held: list[tuple[float, bytes]] = []
    self._fatal_raw = b""

  def feed(self, data: bytes, now: float) -> None:
    """Take ``data`` read from the stream at time ``now`` (seconds, monotonic)."""
    if self.fatal is not None:
      self._fatal_text(data)
      return
    self._buffer += data
    self._drain(now, flush=False)
    self.tick(now)

  def tick(self, now: float) -> None:
    """Write what has waited ``hold_s``: held runtime lines, a partial line."""
    if self.fatal is not None:
      return
    while self._held and now - self._held[0][0] >= self.hold_s:
      self.write(self._held.pop(0)[1])
    if self._buffer and self._pending_since is not None and (
        now - self._pending_since >= self.hold_s):
      self._drain(now, flush=True)

  def close(self) -> None:
    """The stream ended: write everything still held (nothing after a fatal line)."""
    if self.fatal is None:
      for _, line in self._held:
        self.write(line)
      if self._buffer:
        self.write(self._buffer)
    self._held, self._buffer = [], b""

  def _drain(self, now: float, flush: bool) -> None:
    # A log message of several lines comes in one write: the lines after a
    # held one, in the same data, belong to it.
    holding = False
    while self._buffer and self.fatal is None:
      end = self._buffer.find(b"\n") + 1
      if not end:  # a partial line: written now, unless a log line begins in it
        if not flush and (_LOG_LINE.search(self._buffer) or _LOG_HEAD.search(self._buffer)):
          if self._pending_since is None:
            self._pending_since = now
          return
        self.write(self._buffer)
        self._buffer = b""
        break
      line, self._buffer = self._buffer[:end], self._buffer[end:]
      found = _LOG_LINE.search(line)
      if found and found.start():  # a log line after a partial one (a progress bar)
        self.write(line[:found.start()])
        line = line[found.start():]
      if found and found.group(1) == b"F":
        self.fatal = ""
        self._fatal_text(line[found.end() - found.start():] + self._buffer)
        self._buffer, self._held = b"", []
        break
      if found and found.group(1) in b"EW" and _RUNTIME_SOURCES.search(found.group(2)):
        self._held.append((now, line))
        holding = True
      elif holding and not found:
        self._held[-1] = (self._held[-1][0], self._held[-1][1] + line)
      else:
        self.write(line)
        holding = False
    self._pending_since = None

  def _fatal_text(self, data: bytes) -> None:
    """Add ``data`` to the fatal error; :attr:`fatal` is its text up to the dump."""
    if len(self._fatal_raw) >= 8000:
      return
    self._fatal_raw = (self._fatal_raw + data)[:8000]
    dump = _DUMP_START.search(self._fatal_raw)
    self.fatal = self._fatal_raw[:dump.start() if dump else 2000].decode(errors="replace")


def runtime_fault(fatal: str, run: DistributedRun) -> tuple[str, bool]:
  """One line for the distributed runtime's fatal stop of a process
  (:attr:`RuntimeLog.fatal`) and whether it came at the start (the run never
  started) rather than later (another process died or stopped answering)."""
  text = " ".join(fatal.split())
  status = text.split("absl::Status: ", 1)[-1]
  status = re.sub(r" ?(\[type\.googleapis\.com/\S*|RPC: /\S+).*", "", status)[:240]
  n = run.num_processes
  ids = f"a distinct --process_id in 0..{n - 1}" if n else "a distinct process id"
  where = f"coordinator {run.coordinator}" if run.coordinator else "the coordinator"
  me = (f"process {run.process_id} of {n}" if run.process_id >= 0 else "this process")
  twice = re.search(r"(?:task:|\b)(\d+) unexpectedly tried to connect", text)
  if twice or "incarnation" in text:
    which = f"--process_id={twice.group(1)}" if twice else "one process id"
    return (f"distributed: two processes were started with {which} ({where}, "
            f"{me}); start every process with the same --num_processes and {ids}",
            True)
  if "RegisterTask" in text or "Wait_for_all_tasks_to_register" in text:
    count = f"all {n}" if n else "all"
    return (f"distributed: not {count} processes joined {where} within {run.timeout_s} s "
            f"({me}); start every process with the same --num_processes and {ids}, each "
            "within --distributed_timeout of the others", True)
  silent = re.search(r"stopped sending heartbeats\)?:? ?([\d, ]*\d)", text)
  if silent:
    return (f"distributed: process {silent.group(1)} stopped sending heartbeats for "
            f"{run.timeout_s} s ({where}, {me}); it probably died or hangs. Rerun the same "
            "command on every process to resume from the last checkpoint", False)
  return (f"distributed: the runtime stopped {me} ({status}); another process probably "
          "died or stopped answering. Rerun the same command on every process to resume "
          "from the last checkpoint", False)


def is_primary() -> bool:
  """Whether this process writes the run's files: process 0 (or the only one)."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """``tree`` with every array as a NumPy array holding its whole value,
  gathered from the processes that hold its parts.

  With several processes, every process must call it with the same tree
  (it is a collective for the arrays not all on this process's devices).
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return x
  return jax.device_get(jax.tree_util.tree_map(one, tree))


def any_process(flag: bool) -> bool:
  """Whether ``flag`` holds on any process (every process calls it)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def broadcast(tree: Any) -> Any:
  """Process 0's ``tree`` (of arrays) on every process, as NumPy arrays; every
  process calls it with a tree of the same structure, shapes and dtypes."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.device_get(multihost_utils.broadcast_one_to_all(tree))


def barrier(name: str) -> None:
  """Wait until every process has reached ``barrier(name)`` (nothing with one
  process); a process that died stops the others after the runtime's
  heartbeat timeout."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)

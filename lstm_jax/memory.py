"""How much memory a run's programs need, and how much the machine has.

A run compiles its training step and its evaluation ahead of time and asks
XLA how much memory each needs beyond its arguments (temporaries plus
outputs, less what the outputs reuse of donated arguments:
:func:`compiled_need`). That is compared with what the devices the program
runs on have free (:func:`available_bytes`): on a CPU the host's available
memory (the smaller of the kernel's ``MemAvailable`` and the process's
cgroup limit), which all CPU devices share; on a GPU or TPU the device
allocator's limit less what is in use. A first, cheaper bound needs no
compile: a batch's inputs and outputs alone (:func:`batch_bytes`), for
shapes so large that compiling them is pointless or fails.

XLA reports the sizes of one device's part of a program, so a program spread
over ``n`` CPU devices needs ``n`` times as much host memory.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax


def format_bytes(n: float) -> str:
  """``1842565037376`` -> ``"1.84 TB"`` (decimal units, 3 significant digits)."""
  for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
    if abs(n) < 1000 or unit == "PB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
    n /= 1000
  raise AssertionError("unreachable")


def compiled_need(compiled: Any) -> int | None:
  """Bytes one device needs to run ``compiled`` (a ``jax.stages.Compiled``)
  beyond its arguments, by XLA's memory analysis; ``None`` where the backend
  gives none."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # backends without an analysis raise various errors
    return None
  if stats is None:
    return None
  return int(stats.temp_size_in_bytes + stats.output_size_in_bytes
             - stats.alias_size_in_bytes)


def batch_bytes(batch_size: int, max_length: int, input_size: int, output_size: int) -> int:
  """Bytes of a batch's float32 inputs ``[B, T, I]`` and outputs ``[B, T, O]``:
  a lower bound of what any program over the batch holds at once."""
  return 4 * batch_size * max_length * (input_size + output_size)


def parse_meminfo(text: str) -> int | None:
  """``MemAvailable`` of a ``/proc/meminfo`` text, in bytes."""
  for line in text.splitlines():
    if line.startswith("MemAvailable:"):
      value, *unit = line.split(":", 1)[1].split()
      return int(value) * (1024 if unit == ["kB"] else 1)
  return None


def _read(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def _cgroup_free() -> int | None:
  """The process's cgroup memory limit less its usage (v1 or v2), if limited."""
  lines = _read("/proc/self/cgroup") or ""
  free = []
  for line in lines.splitlines():
    _, controllers, path = line.split(":", 2)
    if controllers == "":  # v2
      base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
      limit, usage = _read(f"{base}/memory.max"), _read(f"{base}/memory.current")
    elif "memory" in controllers.split(","):  # v1
      base = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
      limit = _read(f"{base}/memory.limit_in_bytes")
      usage = _read(f"{base}/memory.usage_in_bytes")
    else:
      continue
    if limit and usage and limit.isdigit() and usage.isdigit() and int(limit) < 2**60:
      free.append(max(int(limit) - int(usage), 0))
  return min(free) if free else None


def host_available_bytes() -> int | None:
  """Memory the host can still give this process: the smaller of
  ``MemAvailable`` and the cgroup limit's headroom; ``None`` if unknown."""
  known = [x for x in (parse_meminfo(_read("/proc/meminfo") or ""), _cgroup_free())
           if x is not None]
  if not known:
    try:
      known = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    except (ValueError, OSError, AttributeError):
      return None
  return min(known)


def device_available_bytes(device: jax.Device) -> int | None:
  """Free memory of an accelerator's allocator (``bytes_limit`` less
  ``bytes_in_use``); ``None`` where the device reports no limit."""
  try:
    stats = device.memory_stats()
  except Exception:  # not every backend implements memory_stats
    return None
  if not stats or "bytes_limit" not in stats:
    return None
  return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def shortfall(need_per_device: int, devices: Sequence[jax.Device]
              ) -> tuple[int, int] | None:
  """``(needed, available)`` in bytes if a program needing ``need_per_device``
  on each of ``devices`` does not fit, else ``None`` (also when the free
  memory is unknown).

  CPU devices share the host's memory: their needs add up. Accelerators are
  compared one by one, with the device that has least free.
  """
  devices = list(devices)
  if not devices:
    return None
  if all(d.platform == "cpu" for d in devices):
    need, free = need_per_device * len(devices), host_available_bytes()
  else:
    frees = [device_available_bytes(d) for d in devices]
    known = [f for f in frees if f is not None]
    need, free = need_per_device, (min(known) if known else None)
  if free is None or need <= free:
    return None
  return need, free


def devices_of(tree: Any) -> list[jax.Device]:
  """The devices of the arrays (or shardings, e.g. a compiled program's
  ``input_shardings``) in ``tree``."""
  found: dict[int, jax.Device] = {}
  for leaf in jax.tree_util.tree_leaves(tree):
    for d in getattr(getattr(leaf, "sharding", leaf), "device_set", ()):
      found[d.id] = d
  return [found[i] for i in sorted(found)]


__all__ = ["batch_bytes", "compiled_need", "device_available_bytes", "devices_of",
           "format_bytes", "host_available_bytes", "parse_meminfo", "shortfall"]

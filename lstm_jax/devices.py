"""Devices: how many CPU devices JAX makes.

(Being extended into the single device module of the library.)
"""

from __future__ import annotations

import os

import jax
import numpy as np


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
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
    raise ValueError(f"cpu_devices={count!r} is not allowed; use an integer >= 1, "
                     "or 0 for one device per usable core")
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return 0
  count = int(count) or usable_cores()
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # backends already initialised: keep what they have
    return 0
  return count

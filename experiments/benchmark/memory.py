"""Peak memory of one step: XLA's own accounting, and a process's measured growth.

* XLA (:func:`xla_temp_bytes`): ``temp_size_in_bytes`` of the compiled
  program's ``memory_analysis()``, the scratch buffers without the program's
  arguments and outputs (``None`` where the backend does not report it).
* torch (:class:`PeakMemory`, used inside the torch subprocess): on CUDA,
  ``torch.cuda.max_memory_allocated`` over the allocation before the calls;
  on a Linux CPU, the peak resident set size ``VmHWM`` (reset by writing 5 to
  ``/proc/self/clear_refs``) over ``VmRSS`` before the calls; elsewhere the
  growth of ``ru_maxrss``. ``ru_maxrss`` is not used on Linux because it
  survives ``exec`` and so starts at the parent's peak. The RSS figures
  include allocator caching and lazily loaded code.
"""

from __future__ import annotations

import resource
import sys
from typing import Any, Sequence


def xla_temp_bytes(fn: Any, args: Sequence[Any]) -> dict[str, int] | None:
  """``memory_analysis()`` sizes of jitted ``fn`` compiled for ``args`` (``None``: unknown).

  Returns ``temp_size_in_bytes``, ``argument_size_in_bytes`` and
  ``output_size_in_bytes``, those the backend reports.
  """
  try:
    stats = fn.lower(*args).compile().memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if stats is None:
    return None
  out = {}
  for key in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
    value = getattr(stats, key, None)
    if value is not None:
      out[key] = int(value)
  return out or None


def _maxrss_bytes() -> int:
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _proc_status_bytes(field: str) -> int | None:
  """``VmRSS``/``VmHWM`` of this process from ``/proc/self/status`` (Linux), else ``None``."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    return None
  return None


def _reset_peak_rss() -> bool:
  """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); ``False`` if unable."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


class PeakMemory:
  """Peak memory growth of this process over one measured block.

  Args:
    torch: the imported ``torch`` module.
    cuda: measure CUDA allocations instead of the resident set.

  Attributes:
    kind: what :meth:`peak` measures, in words (for the report).
  """

  def __init__(self, torch: Any, cuda: bool) -> None:
    self.torch, self.cuda = torch, cuda
    self.kind = "cuda max_memory_allocated growth"
    if not cuda:
      have_proc = _proc_status_bytes("VmHWM") is not None and _reset_peak_rss()
      self.kind = "VmHWM growth (peak RSS, reset per mode)" if have_proc \
          else "ru_maxrss growth"
    self.base = 0

  def start(self) -> None:
    """Mark the start of a measured block."""
    if self.cuda:
      self.torch.cuda.reset_peak_memory_stats()
      self.base = int(self.torch.cuda.memory_allocated())
    elif self.kind.startswith("VmHWM"):
      _reset_peak_rss()
      self.base = _proc_status_bytes("VmRSS") or 0
    else:
      self.base = _maxrss_bytes()

  def peak(self) -> int:
    """Peak growth (bytes) since :meth:`start`."""
    if self.cuda:
      now = int(self.torch.cuda.max_memory_allocated())
    elif self.kind.startswith("VmHWM"):
      now = _proc_status_bytes("VmHWM") or 0
    else:
      now = _maxrss_bytes()
    return max(0, now - self.base)

"""Timing: every implementation of one shape, compiled, then run round-robin.

Per shape, every JAX implementation is compiled first (its first call of
each mode is timed), then the torch subprocess is set up. Then come
``rounds`` rounds; each runs every implementation once, in an order rotated
by one from round to round, each turn after a ``settle_s`` pause (so the
previous implementation's spinning worker threads are idle). A turn makes
``iters`` calls of each mode, ``iters`` calibrated once from one steady call
so that a turn takes about ``target_s`` (capped at ``max_iters``). Every call
is waited for before the next (``block_until_ready``; torch: see
:mod:`experiments.benchmark.torch_worker`), so one call is one full step's
latency. Each implementation and mode reports the median over rounds of
``B * iters / seconds`` (sequences/s) and half the min-max spread of the
rounds relative to that median.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

import flax
import jax
import numpy as np

import lstm_jax
from lstm_jax import devices as lstm_devices
from lstm_jax import interop
from lstm_jax.devices import usable_cores

from experiments.benchmark import torch_worker
from experiments.benchmark.implementations import (BENCH_IMPLS, CEILING, CUDNN, TORCH, JaxImpl,
                                                   bench_cell, build_jax_impl, flops,
                                                   make_problem)
from experiments.benchmark.memory import xla_temp_bytes
from experiments.benchmark.report import write_json
from experiments.benchmark.shapes import DEFAULT_SHAPES, MODES, Shape, ceiling_flops, model_flops

PEERS = (TORCH, "flax_linen")
"""Implementations every row is compared with (``ratio_<peer>``)."""

CUDNN_NEEDS_GPU = ("jax.experimental.rnn.lstm runs on cuDNN only; skipped on {platform} "
                   "(it runs when the benchmark runs on a GPU)")

Runner = Callable[[dict[str, int]], dict[str, float]]
"""One turn: ``iters`` per mode in, seconds per mode out."""


def _time_jax(fn: Callable[..., Any], args: Sequence[Any], iters: int) -> float:
  """Seconds for ``iters`` calls, each waited for before the next."""
  start = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _iters_for(steady_s: float, target_s: float, max_iters: int) -> int:
  if steady_s <= 0:
    return max_iters
  return int(min(max_iters, max(1, round(target_s / steady_s))))


def _log(verbose: bool, text: str) -> None:
  if verbose:
    print(text, file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Prepared:
  """What one shape's implementations have before the rounds (ready ones have a runner)."""
  target_s: float
  max_iters: int
  results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  first_s: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  iters: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  runners: dict[str, Runner] = dataclasses.field(default_factory=dict)

  def ready(self, name: str, entry: dict[str, Any], first_s: dict[str, float],
            steady_s: dict[str, float], runner: Runner) -> None:
    """Record a compiled implementation and calibrate its iterations per turn."""
    self.results[name] = entry
    self.first_s[name] = first_s
    self.iters[name] = {m: _iters_for(steady_s[m], self.target_s, self.max_iters)
                        for m in MODES}
    self.runners[name] = runner


class OverBudget(Exception):
  """A form whose compiled step would need more memory than the budget allows."""


def _compile_jax(impl: JaxImpl, max_bytes: int | None = None
                 ) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
  """First call, one steady call and XLA memory of each mode: ``(entry, first_s, steady_s)``.

  With ``max_bytes``, each mode is compiled first (``lower().compile()``,
  timed as ``entry[mode]["compile_s"]``; the call then reuses the compiled
  program) and :class:`OverBudget` is raised before anything runs if XLA's
  temporaries, arguments and outputs of a mode add up to more than
  ``max_bytes``.
  """
  entry: dict[str, Any] = {}
  first_s, steady_s = {}, {}
  mems: dict[str, dict[str, int] | None] = {}
  if max_bytes is not None:
    for mode in MODES:
      start = time.perf_counter()
      mem = mems[mode] = xla_temp_bytes(impl.fns[mode], impl.args)
      entry[mode] = {"compile_s": time.perf_counter() - start}
      need = sum(mem.values()) if mem else None
      if need is not None and need > max_bytes:
        raise OverBudget(f"{mode} needs {need / 2**30:.3g} GiB (XLA temporaries, arguments "
                         f"and outputs), over the {max_bytes / 2**30:.3g} GiB budget")
  for mode in MODES:
    fn = impl.fns[mode]
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*impl.args))
    first_s[mode] = time.perf_counter() - start
    if mode == "forward":
      entry["loss"] = float(out)
    steady_s[mode] = _time_jax(fn, impl.args, 1)
    mem = mems[mode] if mode in mems else xla_temp_bytes(fn, impl.args)
    entry.setdefault(mode, {}).update({
        "peak_bytes": None if mem is None else mem.get("temp_size_in_bytes"),
        "xla_memory": mem, "memory": "XLA temp_size_in_bytes"})
  return entry, first_s, steady_s


def _jax_runner(impl: JaxImpl) -> Runner:
  return lambda n: {m: _time_jax(impl.fns[m], impl.args, n[m]) for m in MODES}


def _ready_jax(prep: _Prepared, shape: Shape, name: str, build: Callable[[], JaxImpl],
               verbose: bool, max_bytes: int | None = None) -> None:
  """Build and compile one JAX implementation; one that fails or is over
  ``max_bytes`` (:func:`_compile_jax`) is skipped with its reason."""
  try:
    impl = build()
    entry, first_s, steady_s = _compile_jax(impl, max_bytes)
  except OverBudget as err:
    prep.skipped[name] = str(err)
    _log(verbose, f"  {shape.label} {name}: {prep.skipped[name]}")
    return
  except Exception as err:  # pylint: disable=broad-except  (report it, run the others)
    message = f"{type(err).__name__}: {err}"
    print(f"{name} failed at {shape.label}: {message}; skipping it", flush=True)
    prep.skipped[name] = message
    return
  prep.ready(name, entry, first_s, steady_s, _jax_runner(impl))
  if max_bytes is None:
    _log(verbose, f"  {shape.label} {name}: compiled (first calls "
         f"{first_s['train']:.2f} s train, {first_s['forward']:.2f} s forward)")
  else:
    _log(verbose, f"  {shape.label} {name}: compiled ({entry['train']['compile_s']:.2f} s "
         f"train, {entry['forward']['compile_s']:.2f} s forward)")


def _prepare_jax(prep: _Prepared, shape: Shape, impls: Sequence[str],
                 params: dict[str, np.ndarray], xs: np.ndarray, seed: int,
                 verbose: bool) -> None:
  """Compile every JAX implementation in ``impls``; a failing one is skipped."""
  platform = jax.devices()[0].platform
  for name in impls:
    if name == TORCH:
      continue
    if name == CUDNN and platform != "gpu":
      prep.skipped[name] = CUDNN_NEEDS_GPU.format(platform=platform)
      _log(verbose, f"  {shape.label} {name}: {prep.skipped[name]}")
      continue
    _ready_jax(prep, shape, name,
               lambda name=name: build_jax_impl(name, shape, params, xs, seed), verbose)


def _prepare_torch(prep: _Prepared, stack: contextlib.ExitStack, shape: Shape,
                   params: dict[str, np.ndarray], xs: np.ndarray, torch_threads: int,
                   verbose: bool) -> None:
  """Start and set up the torch subprocess (closed by ``stack``); skip torch if unable."""
  if not torch_worker.torch_available():
    print(torch_worker.TORCH_MISSING, flush=True)
    prep.skipped[TORCH] = torch_worker.TORCH_MISSING
    return
  tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lstm_bench_"))
  npz = os.path.join(tmpdir, "problem.npz")
  np.savez(npz, xs=xs, **interop.to_torch_lstm([params], bench_cell(shape)))
  worker = torch_worker.TorchWorker()
  try:
    info = worker.request({"cmd": "setup", "npz": npz, "shape": shape.as_dict(),
                           "threads": torch_threads})
  except RuntimeError as err:
    message = f"torch.nn.LSTM unavailable: {err}; skipping torch"
    if "cannot import torch" in str(err):
      message = f"{torch_worker.TORCH_MISSING} ({err})"
    print(message, flush=True)
    prep.skipped[TORCH] = message
    worker.close()
    return
  stack.callback(worker.close)
  entry: dict[str, Any] = {"loss": info["loss"], "device": info["device"],
                           "threads": info["threads"], "version": info["version"]}
  for mode in MODES:
    entry[mode] = {"peak_bytes": info["peak_bytes"][mode], "memory": info["memory"]}
  prep.ready(TORCH, entry, info["first_s"], info["steady_s"], worker.round)
  _log(verbose, f"  {shape.label} torch: ready on {info['device']} "
       f"({info['threads']} threads)")


def _round_robin(prep: _Prepared, shape: Shape, names: list[str], rounds: int,
                 settle_s: float, verbose: bool) -> dict[str, dict[str, list[float]]]:
  """Sequences/s of every round, per implementation and mode.

  An implementation whose turn fails (the torch worker died) is removed from
  ``names`` and its results, and recorded as skipped.
  """
  per_round: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MODES} for n in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)] if names else []
    for name in order:
      time.sleep(settle_s)
      try:
        seconds = prep.runners[name](prep.iters[name])
      except RuntimeError as err:
        print(f"{name} failed at {shape.label}: {err}; skipping it", flush=True)
        prep.skipped[name] = str(err)
        names.remove(name)
        prep.results.pop(name, None)
        continue
      for mode in MODES:
        per_round[name][mode].append(
            shape.B * prep.iters[name][mode] / max(seconds[mode], 1e-12))
    _log(verbose, f"  {shape.label} round {r + 1}/{rounds} done")
  return per_round


def _medians(prep: _Prepared, shape: Shape, names: Sequence[str],
             per_round: dict[str, dict[str, list[float]]],
             flops_of: Callable[[str, str], int] | None = None) -> None:
  """Add the median sequences/s, spread, step time, first-call and compile
  time (and GFLOP/s where ``flops_of(name, mode)`` gives the FLOPs) to every
  mode entry of ``prep.results``. A ``compile_s`` already there (timed
  separately by :func:`_compile_jax`) is kept."""
  for name in names:
    for mode in MODES:
      seqs = per_round[name][mode]
      med = statistics.median(seqs) if seqs else float("nan")
      steady = shape.B / med if seqs and med > 0 else float("nan")
      first = prep.first_s[name][mode]
      entry = prep.results[name][mode]
      entry.update({
          "seq_per_s": med,
          "per_round_seq_per_s": seqs,
          "spread": (max(seqs) - min(seqs)) / 2 / med if seqs and med > 0 else float("nan"),
          "iters": prep.iters[name][mode],
          "step_s": steady,
      })
      if flops_of is not None:
        entry["gflop_per_s"] = flops_of(name, mode) * med / shape.B / 1e9
      entry["first_call_s"] = first
      if "compile_s" not in entry:
        entry["compile_s"] = max(0.0, first - steady) if seqs else float("nan")


def time_jax(shape: Shape, builders: dict[str, Callable[[], JaxImpl]], *, rounds: int = 5,
             target_s: float = 0.25, max_iters: int = 1000, settle_s: float = 0.2,
             max_bytes: int | None = None, verbose: bool = False
             ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
  """Time generic JAX runners at ``shape`` the way :func:`run_shape` times the LSTM rows.

  Each of ``builders`` (name -> a function returning a :class:`JaxImpl`, whose
  ``fns`` are the jitted ``train`` and ``forward`` calls) is built and compiled
  in turn, then all run round-robin for ``rounds`` rounds with calibrated
  iterations; a failing one, or one over ``max_bytes`` (see
  :func:`_compile_jax`), is skipped.

  Returns:
    ``(results, skipped)``: ``{name: {"loss", "train", "forward"}}`` in the
    order of ``builders`` (each mode entry as in :func:`run_shape`, without
    GFLOP/s and peer ratios), and ``{name: reason}``.
  """
  prep = _Prepared(target_s, max_iters)
  for name, build in builders.items():
    _ready_jax(prep, shape, name, build, verbose, max_bytes)
  names = [n for n in builders if n in prep.runners]
  per_round = _round_robin(prep, shape, names, rounds, settle_s, verbose)
  _medians(prep, shape, names, per_round)
  return {n: prep.results[n] for n in names if n in prep.results}, prep.skipped


def _summarise(prep: _Prepared, shape: Shape, impls: Sequence[str], names: list[str],
               per_round: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
  """Medians, spreads, GFLOP/s, compile times, peer ratios and the loss check."""
  results = prep.results
  _medians(prep, shape, names, per_round, lambda name, mode: flops(name, shape, mode))
  for name in names:
    if name == CEILING:
      continue
    for mode in MODES:
      entry = results[name][mode]
      for peer in PEERS:
        peer_value = results.get(peer, {}).get(mode, {}).get("seq_per_s")
        entry[f"ratio_{peer}"] = (entry["seq_per_s"] / peer_value
                                  if peer_value and peer_value > 0 else None)
  ref = results.get("ours", {}).get("loss")
  diffs = [abs(v["loss"] - ref) / max(abs(ref), 1e-30) for n, v in results.items()
           if n != CEILING and ref is not None and "loss" in v]
  return {
      "shape": shape.as_dict(),
      "name": shape.name,
      "label": shape.label,
      "flops": {"train": model_flops(shape, "train"), "forward": model_flops(shape, "forward"),
                "ceiling_train": ceiling_flops(shape, "train"),
                "ceiling_forward": ceiling_flops(shape, "forward")},
      "implementations": {n: results[n] for n in impls if n in results},
      "skipped": prep.skipped,
      "loss_max_rel_diff": max(diffs) if diffs else None,
  }


def run_shape(shape: Shape, impls: Sequence[str] = BENCH_IMPLS, *, rounds: int = 5,
              target_s: float = 0.25, max_iters: int = 1000, seed: int = 0,
              torch_threads: int = 0, verbose: bool = False,
              settle_s: float = 0.2) -> dict[str, Any]:
  """Benchmark every implementation in ``impls`` at ``shape``, round-robin.

  Args:
    shape: the shape.
    impls: names from :data:`~experiments.benchmark.implementations.BENCH_IMPLS`;
      ``"torch"`` is skipped with a message when torch is not installed.
    rounds: number of rounds (medians are over rounds).
    target_s: calibrated seconds per implementation and mode in one round.
    max_iters: cap on the iterations per implementation and mode in a round.
    seed: seed of the parameters and inputs.
    torch_threads: ``torch.set_num_threads`` of the torch subprocess; 0 for
      the number of usable cores.
    verbose: progress lines on stderr.
    settle_s: pause before each implementation's turn, so the worker threads
      of the previous one (XLA's pool, torch's OpenMP team, which spin for a
      while after their work) are idle when the clock starts.

  Returns:
    ``{"shape", "name", "label", "flops", "implementations": {name: {"loss", "train",
    "forward"}}, "skipped": {name: reason}, "loss_max_rel_diff"}``; each mode
    entry holds ``seq_per_s`` (median), ``per_round_seq_per_s``, ``spread``,
    ``iters``, ``step_s``, ``gflop_per_s``, ``first_call_s``, ``compile_s``,
    ``peak_bytes``, ``memory`` (what ``peak_bytes`` measures) and
    ``ratio_<peer>`` for peers ``torch`` and ``flax_linen`` (``None`` when the
    peer did not run; not set for ``ceiling``).
  """
  unknown = [n for n in impls if n not in BENCH_IMPLS]
  if unknown:
    raise ValueError(f"unknown implementation(s) {unknown}; allowed: {', '.join(BENCH_IMPLS)}")
  params, xs = make_problem(shape, seed)
  prep = _Prepared(target_s, max_iters)
  # Every JAX implementation is compiled before torch starts, so nothing competes.
  _prepare_jax(prep, shape, impls, params, xs, seed, verbose)
  with contextlib.ExitStack() as stack:
    if TORCH in impls:
      _prepare_torch(prep, stack, shape, params, xs, torch_threads, verbose)
    names = [n for n in impls if n in prep.runners]
    per_round = _round_robin(prep, shape, names, rounds, settle_s, verbose)
  return _summarise(prep, shape, impls, names, per_round)


def _load_avg() -> float | None:
  """The 1-minute load average (other processes compete with the measurement)."""
  try:
    return round(os.getloadavg()[0], 2)
  except (AttributeError, OSError):
    return None


def environment() -> dict[str, Any]:
  """Platform, device, versions and settings for the report header."""
  dev = jax.devices()[0]
  return {
      "platform": dev.platform,
      "device_kind": getattr(dev, "device_kind", str(dev)),
      "device_count": jax.device_count(),
      "cores": usable_cores(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "lstm_jax": lstm_jax.__version__,
      "python": sys.version.split()[0],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "host_memory": ("freed host memory kept for reuse (lstm_jax.devices."
                      "keep_freed_host_memory, torch subprocess too)"
                      if lstm_devices.freed_memory_kept else "default host allocator settings"),
      "dtype": "float32",
      "load_avg_start": _load_avg(),
  }


def _check_count(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name}={value!r}: expected an integer >= 1")


def run_benchmark(shapes: Iterable[Shape] = tuple(Shape(*s) for s in DEFAULT_SHAPES),
                  impls: Sequence[str] = BENCH_IMPLS, *, rounds: int = 5,
                  target_s: float = 0.25, max_iters: int = 1000, seed: int = 0,
                  torch_threads: int = 0, settle_s: float = 0.2,
                  json_path: str | None = None, verbose: bool = False) -> dict[str, Any]:
  """Run :func:`run_shape` for every shape; optionally write everything as JSON.

  Arguments as for :func:`run_shape`; ``json_path``: where to write the report
  (:func:`~experiments.benchmark.report.write_json`), rewritten after every
  shape so that a long run (``--grid``) stopped early keeps the shapes it finished.

  Returns:
    ``{"environment", "settings", "results": [run_shape(...), ...]}``.
  """
  _check_count("rounds", rounds)
  _check_count("max_iters", max_iters)
  shapes = list(shapes)
  env = environment()
  report: dict[str, Any] = {
      "environment": env,
      "settings": {"impls": list(impls), "rounds": rounds, "target_s": target_s,
                   "max_iters": max_iters, "seed": seed, "torch_threads": torch_threads,
                   "settle_s": settle_s, "shapes": [dict(s.as_dict(), name=s.name) for s in shapes]},
      "results": [],
  }
  for shape in shapes:
    _log(verbose, f"{shape.label}:")
    result = run_shape(shape, impls, rounds=rounds, target_s=target_s, max_iters=max_iters,
                       seed=seed, torch_threads=torch_threads, verbose=verbose,
                       settle_s=settle_s)
    report["results"].append(result)
    torch_info = result["implementations"].get(TORCH)
    if torch_info and "torch" not in env:
      env["torch"] = torch_info["version"]
      env["torch_device"] = torch_info["device"]
      env["torch_threads"] = torch_info["threads"]
    env["load_avg_end"] = _load_avg()
    if json_path:  # after every shape, so a long run stopped early keeps what it measured
      write_json(report, json_path)
  return report

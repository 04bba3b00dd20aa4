"""The benchmark grid (``python -m experiments.benchmark --grid``): shapes over
four axes, the shipped configs' own shapes as named rows, and the summary of
ours-over-peer ratios (minimum, geometric mean, points under target) and of
the per-step cost at small batches.

Axes (:data:`GRID_AXES`): ``B`` in {1, 4, 8, 16, 32, 128, 256}, ``T`` in
{100, 1000}, ``I`` in {1, 8, 64}, ``H`` in {8, 32, 64, 128, 256, 512}. The
grids (:func:`grid_shapes`):

- ``full``: the product, 252 shapes.
- ``cover`` (the default of ``--grid``; ~80 shapes): every ``B`` x every ``H``
  at ``T = 100, I = 8`` (the plane where the experiments run); ``B`` in
  {1, 8, 32} x ``H`` in {8, 64, 128} at ``T = 1000, I = 8`` (long lags with
  the small batches and cells the long-lag configs use); ``I`` in {1, 64} x
  ``B`` in {1, 8, 256} x ``H`` in {8, 64, 512} at ``T = 100``; and the 16
  corners, every combination of each axis's smallest and largest value. So
  every value of every axis appears, as do the small-small and large-large
  corners of every pair of axes.
- ``gpu``: ``B`` in {1, 32, 256} x ``H`` in {64, 512} x ``T`` in {100, 1000}
  at ``I = 8``, 12 shapes that a GPU runs in a few minutes
  (``experiments/benchmark/gpu.sh``).
- ``quick``: two tiny shapes, for tests.

``cover``, ``full`` and ``gpu`` also run the configs' shapes first
(:func:`config_shapes`).
"""

from __future__ import annotations

import importlib
import itertools
import math
import pathlib
from typing import Any, Iterable

from experiments.benchmark.shapes import MODES, Shape

GRID_AXES: dict[str, tuple[int, ...]] = {
    "B": (1, 4, 8, 16, 32, 128, 256),
    "T": (100, 1000),
    "I": (1, 8, 64),
    "H": (8, 32, 64, 128, 256, 512),
}
GRIDS = ("cover", "full", "gpu", "quick")
QUICK_GRID = ((1, 4, 1, 2), (3, 6, 2, 5))

TARGETS = {"torch": 1.0, "flax_linen": 1.3}
"""The speed targets: ours / peer sequences per second, at every grid point."""
SMALL_BATCH = (4, 8)
"""Batch sizes whose per-step cost is compared with ``B = 1``'s (target: within 2x)."""
SMALL_BATCH_TARGET = 2.0

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _product(**axes: Iterable[int]) -> list[Shape]:
  names = ("B", "T", "I", "H")
  values = [tuple(axes.get(n, GRID_AXES[n])) for n in names]
  return [Shape(*combo) for combo in itertools.product(*values)]


def grid_shapes(grid: str = "cover") -> list[Shape]:
  """The shapes of ``grid`` (one of :data:`GRIDS`; module docstring), without repeats.

  Raises:
    ValueError: an unknown ``grid``.
  """
  if grid not in GRIDS:
    raise ValueError(f"--grid={grid!r}; allowed: {', '.join(GRIDS)}")
  if grid == "quick":
    return [Shape(*s) for s in QUICK_GRID]
  if grid == "full":
    return _product()
  if grid == "gpu":
    return _product(B=(1, 32, 256), I=(8,), H=(64, 512))
  ends = {n: (v[0], v[-1]) for n, v in GRID_AXES.items()}
  shapes = (_product(T=(100,), I=(8,))
            + _product(B=(1, 8, 32), T=(1000,), I=(8,), H=(8, 64, 128))
            + _product(B=(1, 8, 256), T=(100,), I=(1, 64), H=(8, 64, 512))
            + _product(**ends))
  return list(dict.fromkeys(shapes))


def config_shapes(configs_dir: pathlib.Path = CONFIGS_DIR) -> list[Shape]:
  """The shape each config in ``configs_dir`` trains (its default variant),
  named after the config file: ``B`` = ``batch_size``, ``T`` = its task's
  ``max_length``, ``I`` = the task's ``input_size``, ``H`` =
  ``model.hidden_size``. Configs of the same shape share one row (``name``
  lists them, e.g. ``"hs3a, hs3c"``), in the order of their first file name."""
  from lstm_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  names: dict[tuple[int, int, int, int], list[str]] = {}
  for path in sorted(configs_dir.glob("*.py")):
    if path.stem == "__init__":
      continue
    cfg = importlib.import_module(f"configs.{path.stem}").get_config(None)
    task, _, _ = config_lib.build(cfg)
    key = (int(cfg.batch_size), int(task.max_length), int(task.input_size),
           int(cfg.model.hidden_size))
    names.setdefault(key, []).append(path.stem)
  return [Shape(*key, name=", ".join(stems)) for key, stems in names.items()]


def benchmark_shapes(grid: str) -> list[Shape]:
  """``grid``'s shapes, after (all but ``quick``) the configs' shapes as named
  rows: a long run stopped early has measured the shapes the experiments use."""
  shapes = grid_shapes(grid)
  return shapes if grid == "quick" else config_shapes() + shapes


def step_us(entry: dict[str, Any], shape: dict[str, int]) -> float | None:
  """Microseconds per time step of one call (``step_s / T``), or ``None`` if not measured."""
  step = entry.get("step_s")
  if step is None or not math.isfinite(step):
    return None
  return step / shape["T"] * 1e6


def _geomean(values: list[float]) -> float:
  return math.exp(sum(math.log(v) for v in values) / len(values))


def summarise(report: dict[str, Any], impl: str = "ours") -> dict[str, Any]:
  """Ratios of ``impl`` to each peer over the report's shapes, and its small-batch cost.

  Returns:
    ``{"ratios": {mode: {peer: {"n", "min", "min_at", "geomean", "target",
    "below_target": [labels]}}}, "small_batch": {mode: {"n", "max", "max_at",
    "above_target": [labels]}}}``. A ratio is ``impl``'s sequences/s over the
    peer's at one shape (named config rows included). ``small_batch`` holds,
    for every ``(T, I, H)`` measured at ``B = 1`` and at ``B`` in
    :data:`SMALL_BATCH`, the per-step cost at that ``B`` over the cost at
    ``B = 1``; the target is at most :data:`SMALL_BATCH_TARGET`.
  """
  ratios: dict[str, dict[str, Any]] = {}
  small: dict[str, Any] = {}
  for mode in MODES:
    ratios[mode] = {}
    for peer, target in TARGETS.items():
      points = []
      for res in report["results"]:
        entry = res["implementations"].get(impl, {}).get(mode, {})
        value = entry.get(f"ratio_{peer}")
        if value is not None and math.isfinite(value) and value > 0:
          points.append((value, res["label"]))
      if not points:
        continue
      low = min(points)
      ratios[mode][peer] = {
          "n": len(points), "min": low[0], "min_at": low[1],
          "geomean": _geomean([v for v, _ in points]), "target": target,
          "below_target": [label for v, label in points if v < target]}
    cost = {}
    for res in report["results"]:
      entry = res["implementations"].get(impl, {}).get(mode)
      us = step_us(entry, res["shape"]) if entry else None
      if us is not None:
        s = res["shape"]
        cost[(s["B"], s["T"], s["I"], s["H"])] = (us, res["label"])
    growth = [(cost[(b, t, i, h)][0] / us1, cost[(b, t, i, h)][1])
              for (b1, t, i, h), (us1, _) in cost.items() if b1 == 1
              for b in SMALL_BATCH if (b, t, i, h) in cost]
    if growth:
      high = max(growth)
      small[mode] = {"n": len(growth), "max": high[0], "max_at": high[1],
                     "above_target": [label for v, label in growth if v > SMALL_BATCH_TARGET]}
  return {"impl": impl, "ratios": ratios, "small_batch": small}


def _fmt(value: float | None, digits: int = 2) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def grid_table(report: dict[str, Any], impl: str = "ours") -> str:
  """One row per shape: ``impl``'s microseconds per time step and its ratios
  to torch and flax linen, training and forward."""
  cols = ["shape", "config", "train us/step", "train x torch", "train x linen",
          "fwd us/step", "fwd x torch", "fwd x linen"]
  lines = ["| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
  for res in report["results"]:
    s = res["shape"]
    entry = res["implementations"].get(impl)
    cells = [f"({s['B']}, {s['T']}, {s['I']}, {s['H']})", res.get("name") or ""]
    for mode in MODES:
      m = entry[mode] if entry else {}
      us = step_us(m, s) if m else None
      cells += [_fmt(us, 1), _fmt(m.get("ratio_torch")), _fmt(m.get("ratio_flax_linen"))]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def summary_text(summary: dict[str, Any]) -> str:
  """The summary as lines: per mode and peer, the minimum and geometric mean
  of the ratios and the points under target; the small-batch growth."""
  out = []
  names = {"torch": "torch", "flax_linen": "flax linen"}
  for mode, peers in summary["ratios"].items():
    for peer, r in peers.items():
      below = len(r["below_target"])
      out.append(f"- {mode}, {summary['impl']} / {names[peer]}: min {r['min']:.2f} "
                 f"(at {r['min_at']}), geometric mean {r['geomean']:.2f} over {r['n']} "
                 f"shapes; {below} below the target {r['target']:.1f}x")
  for mode, g in summary["small_batch"].items():
    out.append(f"- {mode}: per-step cost at B in {{{', '.join(map(str, SMALL_BATCH))}}} over "
               f"B = 1: max {g['max']:.2f}x (at {g['max_at']}) over {g['n']} pairs; "
               f"{len(g['above_target'])} above {SMALL_BATCH_TARGET:.0f}x")
  return "\n".join(out)

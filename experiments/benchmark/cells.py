"""The cells benchmark (``python -m experiments.benchmark --cells``): every cell
of the library in every form it has, against our LSTM.

Per shape ``(B, T, I, H)`` and cell (:data:`CELL_FORMS`) it times one float32
layer, ``lstm_jax.rnn(cell, params, xs [B, T, I], impl=form)``, as the LSTM
rows do (:mod:`experiments.benchmark.implementations`): training is one
jitted ``jax.grad`` of ``mean(ys ** 2)`` with respect to the parameters,
forward is the jitted loss; each cell has its own default initialisation
(the LSTM: :func:`~experiments.benchmark.implementations.bench_cell`), all
cells see the same inputs. Forms: ``"fused"`` and ``"scan"`` for the LSTM,
``"scan"`` and ``"parallel"`` for minGRU, minLSTM (prefix scan) and mLSTM
(chunkwise), ``"scan"`` for the others. sLSTM and mLSTM run with
:func:`xlstm_heads` heads (head size 32 or more where ``H >= 32``). Every
form of every cell at one shape runs round-robin in one process with the
harness's calibrated iterations and medians over rounds
(:func:`experiments.benchmark.harness.time_jax`).

Per shape and cell the report gives each form's microseconds per time step
(one call's median time over ``T``), ``scan/par`` (the scan's step time
over the parallel form's, the LSTM's over its fused form's: above 1, the
parallel or fused form is faster), and each form's and the cell's best
form's ``x LSTM``: our LSTM's step time in the form ``impl="auto"`` picks
(:func:`lstm_jax.sequence.resolve_impl`) over this one's (above 1: faster
than our LSTM). ``auto`` names the form ``impl="auto"`` picks for the cell
at that shape, to set against the measured best.

Before a form runs, each mode is compiled and XLA's memory analysis read
(:func:`experiments.benchmark.memory.xla_temp_bytes`): a form whose
temporaries, arguments and outputs exceed the budget (``--max_memory_gib``,
default :data:`MAX_MEMORY_GIB`) is skipped with a note, as is one that fails.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import lstm_jax
from lstm_jax import sequence

from experiments.benchmark import grid as grid_lib
from experiments.benchmark import harness
from experiments.benchmark.implementations import JaxImpl, bench_cell
from experiments.benchmark.report import environment_line, mib, num, ratio, write_json
from experiments.benchmark.shapes import MODES, Shape

CELL_FORMS: dict[str, tuple[str, ...]] = {
    "vanilla": ("fused", "scan"),
    "gru": ("scan",),
    "elman": ("scan",),
    "mingru": ("scan", "parallel"),
    "minlstm": ("scan", "parallel"),
    "slstm": ("scan",),
    "mlstm": ("scan", "parallel"),
}
"""Every cell the mode knows and the forms (``impl``) it is timed in."""

REFERENCE = "vanilla"
"""Our LSTM: always run (first), the ``x LSTM`` ratios are to it."""

DEFAULT_CELLS = ("vanilla", "gru", "mingru", "minlstm", "slstm", "mlstm")
"""The cells ``--cells`` runs unless ``--cell_names`` says otherwise."""

LONG_SHAPES = ((8, 1_000, 32, 32), (8, 10_000, 32, 32), (8, 100_000, 32, 32))
"""Long sequences at ``B = 8``, ``I = H = 32``: the prefix scan against the
sequential scan at ``T = 10^3, 10^4, 10^5``."""

CONFIG_ROWS = ("adding", "copy", "mqar", "selective_copy")
"""Configs whose shapes (:func:`experiments.benchmark.grid.config_shapes`)
``--cells`` also runs, as named rows."""

EXTRA_SHAPES = ((16, 1_000, 8, 64),)
"""A long-lag shape with a wider cell than the configs'."""

QUICK_CELL_SHAPES = ((2, 16, 4, 32),)
"""``--cells --quick``: one tiny shape (mostly compilation)."""

MAX_MEMORY_GIB = 4.0
"""Default budget of one compiled call (XLA temporaries, arguments, outputs)."""


def default_shapes() -> list[Shape]:
  """:data:`LONG_SHAPES`, then the shapes of the configs in :data:`CONFIG_ROWS`
  (named rows; those missing are left out), then :data:`EXTRA_SHAPES`."""
  configs = [s for s in grid_lib.config_shapes()
             if set(s.name.split(", ")) & set(CONFIG_ROWS)]
  shapes = [Shape(*s) for s in LONG_SHAPES] + configs + [Shape(*s) for s in EXTRA_SHAPES]
  return list(dict.fromkeys(shapes))


def parse_cell_names(text: str | None) -> list[str]:
  """``"mingru,mlstm"`` -> ``["vanilla", "mingru", "mlstm"]``: the named cells
  after :data:`REFERENCE` (always run); ``None``: :data:`DEFAULT_CELLS`.

  Raises:
    ValueError: an unknown or no name.
  """
  if text is None:
    return list(DEFAULT_CELLS)
  names = [n.strip() for n in text.split(",") if n.strip()]
  unknown = [n for n in names if n not in CELL_FORMS]
  if unknown or not names:
    raise ValueError(f"--cell_names: unknown {unknown}; allowed: {', '.join(CELL_FORMS)}")
  return list(dict.fromkeys([REFERENCE] + names))


def xlstm_heads(hidden: int) -> int:
  """Heads of an sLSTM or mLSTM layer of size ``hidden``: ``max(1, hidden // 32)``,
  lowered to the nearest divisor of ``hidden`` (head size >= 32 where
  ``hidden >= 32``, so the mLSTM's chunkwise form applies at head size >= 16)."""
  heads = max(1, hidden // 32)
  while hidden % heads:
    heads -= 1
  return heads


def build_cell(name: str, shape: Shape) -> lstm_jax.Cell:
  """The cell ``name`` of size ``H`` as the benchmark runs it."""
  if name == REFERENCE:
    return bench_cell(shape)
  if name in ("slstm", "mlstm"):
    return lstm_jax.make_cell(name, shape.H, num_heads=xlstm_heads(shape.H))
  return lstm_jax.make_cell(name, shape.H)


def cell_impl(name: str, form: str, shape: Shape, xs: jax.Array, seed: int = 0) -> JaxImpl:
  """One layer of cell ``name`` in ``form``: loss ``mean(ys ** 2)`` over ``xs [B, T, I]``."""
  cell = build_cell(name, shape)
  params = cell.init(jax.random.key(seed), shape.I)

  def loss(p: Any, x: jax.Array) -> jax.Array:
    return jnp.mean(lstm_jax.rnn(cell, p, x, impl=form)[0] ** 2)

  return JaxImpl(f"{name}/{form}", loss, (params, xs))


def auto_form(name: str, shape: Shape) -> str:
  """The form ``impl="auto"`` picks for cell ``name`` at ``shape`` on this platform."""
  return sequence.resolve_impl(build_cell(name, shape), "auto", batch=shape.B)


def _step_s(entry: dict[str, Any] | None, mode: str) -> float | None:
  value = (entry or {}).get(mode, {}).get("step_s")
  return value if value is not None and math.isfinite(value) and value > 0 else None


def _over(a: float | None, b: float | None) -> float | None:
  return a / b if a is not None and b is not None else None


def run_cells_shape(shape: Shape, cells: Sequence[str] = DEFAULT_CELLS, *, rounds: int = 5,
                    target_s: float = 0.25, max_iters: int = 1000, seed: int = 0,
                    settle_s: float = 0.2, max_memory_gib: float = MAX_MEMORY_GIB,
                    verbose: bool = False) -> dict[str, Any]:
  """Time every form of every cell in ``cells`` at ``shape``, round-robin.

  Returns:
    ``{"shape", "name", "label", "lstm_form", "cells": {cell: {...}}}``;
    ``lstm_form`` is the LSTM's ``impl="auto"`` form (the ``x LSTM``
    reference). Per cell: ``num_heads``, ``auto_form``, ``forms: {form: {"loss",
    "train", "forward"}}`` (mode entries as in
    :func:`experiments.benchmark.harness.run_shape`, without GFLOP/s and peer
    ratios, plus ``us_per_step``, ``scan_over`` and ``x_lstm``), ``skipped:
    {form: reason}``, ``best: {mode: form}``, ``scan_over_parallel: {mode:
    ratio}`` (the LSTM: over fused; ``None`` without both forms),
    ``best_x_lstm: {mode: ratio}`` and ``loss_max_rel_diff`` between its forms.
  """
  xs = jnp.asarray(np.random.default_rng(seed).standard_normal(
      (shape.B, shape.T, shape.I)).astype(np.float32))
  cells = list(dict.fromkeys([REFERENCE] + list(cells)))
  builders: dict[str, Callable[[], JaxImpl]] = {}
  for name in cells:
    for form in CELL_FORMS[name]:
      builders[f"{name}/{form}"] = (lambda name=name, form=form:
                                    cell_impl(name, form, shape, xs, seed))
  results, skipped = harness.time_jax(
      shape, builders, rounds=rounds, target_s=target_s, max_iters=max_iters,
      settle_s=settle_s, max_bytes=int(max_memory_gib * 2**30), verbose=verbose)
  lstm_form = auto_form(REFERENCE, shape)
  lstm = results.get(f"{REFERENCE}/{lstm_form}")
  out: dict[str, Any] = {}
  for name in cells:
    forms = {f: results[f"{name}/{f}"] for f in CELL_FORMS[name] if f"{name}/{f}" in results}
    scan = forms.get("scan")
    for entry in forms.values():
      for mode in MODES:
        m = entry[mode]
        step = _step_s(entry, mode)
        m["us_per_step"] = None if step is None else step / shape.T * 1e6
        m["scan_over"] = _over(_step_s(scan, mode), step)
        m["x_lstm"] = _over(_step_s(lstm, mode), step)
    other = "fused" if name == REFERENCE else "parallel"
    best, scan_over_par, best_x = {}, {}, {}
    for mode in MODES:
      timed = {f: _step_s(e, mode) for f, e in forms.items() if _step_s(e, mode) is not None}
      best[mode] = min(timed, key=timed.get) if timed else None
      scan_over_par[mode] = _over(timed.get("scan"), timed.get(other))
      best_x[mode] = _over(_step_s(lstm, mode), timed.get(best[mode]))
    losses = [e["loss"] for e in forms.values()]
    ref = losses[0] if losses else None
    diff = (max(abs(v - ref) / max(abs(ref), 1e-30) for v in losses)
            if len(losses) > 1 else None)
    cell = build_cell(name, shape)
    out[name] = {
        "num_heads": cell.num_heads if name in ("slstm", "mlstm") else None,
        "auto_form": auto_form(name, shape),
        "forms": forms,
        "skipped": {k.split("/", 1)[1]: v for k, v in skipped.items()
                    if k.split("/", 1)[0] == name},
        "best": best, "scan_over_parallel": scan_over_par, "best_x_lstm": best_x,
        "loss_max_rel_diff": diff,
    }
  return {"shape": shape.as_dict(), "name": shape.name, "label": shape.label,
          "lstm_form": lstm_form, "cells": out}


def run_cells(shapes: Iterable[Shape], cells: Sequence[str] = DEFAULT_CELLS, *,
              rounds: int = 5, target_s: float = 0.25, max_iters: int = 1000, seed: int = 0,
              settle_s: float = 0.2, max_memory_gib: float = MAX_MEMORY_GIB,
              json_path: str | None = None, verbose: bool = False) -> dict[str, Any]:
  """:func:`run_cells_shape` for every shape; the JSON file (``json_path``) is
  rewritten after every shape, so a run stopped early keeps what it measured.

  Returns:
    ``{"environment", "settings", "results": [run_cells_shape(...), ...]}``.
  """
  harness._check_count("rounds", rounds)  # pylint: disable=protected-access
  harness._check_count("max_iters", max_iters)  # pylint: disable=protected-access
  if not max_memory_gib > 0:
    raise ValueError(f"max_memory_gib={max_memory_gib!r}: expected > 0")
  shapes = list(shapes)
  cells = list(dict.fromkeys([REFERENCE] + list(cells)))
  env = harness.environment()
  report: dict[str, Any] = {
      "environment": env,
      "settings": {"mode": "cells", "cells": cells,
                   "forms": {c: list(CELL_FORMS[c]) for c in cells},
                   "num_heads": "max(1, H // 32), lowered to a divisor of H",
                   "rounds": rounds, "target_s": target_s, "max_iters": max_iters,
                   "seed": seed, "settle_s": settle_s, "max_memory_gib": max_memory_gib,
                   "shapes": [dict(s.as_dict(), name=s.name) for s in shapes]},
      "results": [],
  }
  for shape in shapes:
    harness._log(verbose, f"{shape.label}:")  # pylint: disable=protected-access
    report["results"].append(run_cells_shape(
        shape, cells, rounds=rounds, target_s=target_s, max_iters=max_iters, seed=seed,
        settle_s=settle_s, max_memory_gib=max_memory_gib, verbose=verbose))
    env["load_avg_end"] = harness._load_avg()  # pylint: disable=protected-access
    if json_path:
      write_json(report, json_path)
  return report


def cells_header(report: dict[str, Any]) -> str:
  """The lines above the cells tables: where and how it was measured."""
  env, st = report["environment"], report["settings"]
  return "\n".join([
      environment_line(env, "Cell throughput", f"lstm_jax {env['lstm_jax']}"),
      f"Medians of {st['rounds']} round-robin rounds of every form of every cell at a shape; "
      "us/step = one call's time / T (+- half the min-max spread over rounds). train = "
      "forward + gradient w.r.t. params of mean(ys**2), as the LSTM rows.",
      "scan/par = scan step time / parallel form's (LSTM: / fused form's); x LSTM = our "
      "LSTM's (vanilla, the form impl='auto' picks) step time / this one's; above 1: faster.",
      f"sLSTM and mLSTM heads: {st['num_heads']} (heads column); auto = the form "
      "impl='auto' picks; a form over the memory budget "
      f"({st['max_memory_gib']:g} GiB of XLA temporaries, arguments and outputs) is skipped.",
  ])


def _shape_text(res: dict[str, Any]) -> str:
  s = res["shape"]
  text = f"({s['B']}, {s['T']}, {s['I']}, {s['H']})"
  return f"{text} {res['name']}" if res.get("name") else text


def _us(m: dict[str, Any]) -> str:
  us, spread = m.get("us_per_step"), m.get("spread")
  if us is None:
    return "-"
  if spread is not None and math.isfinite(spread):
    return f"{num(us)} (+-{spread * 100:.0f}%)"
  return num(us)


_MARKS = {"train": "train", "forward": "fwd"}


def cells_table(report: dict[str, Any]) -> str:
  """One row per shape, cell and form, then a row per skipped form; a cell's
  faster form is marked ``*train`` / ``*fwd``."""
  cols = ["shape", "cell", "form", "train us/step", "fwd us/step", "train scan/form",
          "fwd scan/form", "train x LSTM", "fwd x LSTM", "compile s (train/fwd)",
          "peak MiB (train/fwd)", "loss"]
  lines = ["| " + " | ".join(cols) + " |",
           "|" + "|".join(["---"] * 3 + ["---:"] * (len(cols) - 3)) + "|"]
  for res in report["results"]:
    shape_text = _shape_text(res)
    for name, c in res["cells"].items():
      for form, entry in c["forms"].items():
        tr, fw = entry["train"], entry["forward"]
        marks = "".join(f" *{_MARKS[m]}" for m in MODES if c["best"][m] == form
                        and len(c["forms"]) > 1)
        lines.append("| " + " | ".join([
            shape_text, name, form + marks, _us(tr), _us(fw),
            ratio(tr["scan_over"]), ratio(fw["scan_over"]),
            ratio(tr["x_lstm"]), ratio(fw["x_lstm"]),
            f"{num(tr.get('compile_s'), 2)} / {num(fw.get('compile_s'), 2)}",
            f"{mib(tr.get('peak_bytes'))} / {mib(fw.get('peak_bytes'))}",
            f"{entry['loss']:.6g}",
        ]) + " |")
      for form, reason in c["skipped"].items():
        lines.append(f"| {shape_text} | {name} | {form} | skipped: {reason} |"
                     + " |" * (len(cols) - 4))
  return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
  """One row per shape and cell: its best form per mode, ``scan/par`` and the
  best form's ``x LSTM``."""
  cols = ["shape", "cell", "heads", "auto", "train best", "train scan/par",
          "train best x LSTM", "fwd best", "fwd scan/par", "fwd best x LSTM"]
  lines = ["| " + " | ".join(cols) + " |",
           "|" + "|".join(["---"] * 5 + ["---:"] * 2 + ["---"] + ["---:"] * 2) + "|"]
  for res in report["results"]:
    shape_text = _shape_text(res)
    for name, c in res["cells"].items():
      cells = [shape_text, name, "-" if c["num_heads"] is None else str(c["num_heads"]),
               c["auto_form"]]
      for mode in MODES:
        cells += [c["best"][mode] or "-", ratio(c["scan_over_parallel"][mode]),
                  ratio(c["best_x_lstm"][mode])]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def cells_notes(report: dict[str, Any]) -> str:
  """Per shape and cell with two forms: whether its forms computed the same loss."""
  out = []
  for res in report["results"]:
    for name, c in res["cells"].items():
      diff = c.get("loss_max_rel_diff")
      if diff is not None:
        flag = "" if diff < 1e-3 else "  <-- forms DISAGREE"
        out.append(f"- {res['label']} {name}: relative loss difference between its forms "
                   f"{diff:.1e}{flag}")
  return "\n".join(out)

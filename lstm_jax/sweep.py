"""Lag sweeps: a grid of lags x models, each point's seeds trained together
(one program, lstm_jax.devices), summarised as a table, a plot and each
model's memory horizon.

A sweep config (``configs/sweeps/<name>.py``) has::

    base        an experiment config (lstm_jax.config.default_config)
    lags        list of lags
    models      list of {label, and overrides of base.model fields, e.g. cell}
    num_seeds   seeds per grid point
    metric      summary metric to plot against lag (e.g. "accuracy")

``run_sweep(config, workdir)`` writes ``workdir/<label>_lag<lag>/`` per point
(a normal run directory, resumable), then ``results.csv``, ``results.md`` and
``memory_vs_lag.png``. Points whose ``summary.json`` exists are skipped, so an
interrupted sweep resumes where it stopped.

One point is run, or loaded if finished, by :func:`run_point`, which returns
its row (:data:`COLUMNS`); the memory-horizon search (:mod:`lstm_jax.horizon`)
runs its points through it too.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import ml_collections
import numpy as np

from lstm_jax import config as config_lib
from lstm_jax import workdir as wd
from lstm_jax.runner import train_and_evaluate

COLUMNS = ("model", "lag", "seeds", "solved_fraction", "median_sequences_to_criterion",
           "metric", "median", "min", "max", "wall_time_s")


def point_config(sweep: ml_collections.ConfigDict, model: Any, lag: int
                 ) -> ml_collections.ConfigDict:
  """The run config of one grid point (``base`` with the model's overrides)."""
  c = ml_collections.ConfigDict(sweep.base.to_dict())
  c.lag = lag
  c.num_seeds = sweep.num_seeds
  for key, value in model.items():
    if key == "label":
      continue
    if key not in c.model:
      raise config_lib.ConfigError(
          f"sweep models[{model.get('label')!r}].{key} is not a model field; allowed: "
          f"label, {', '.join(sorted(c.model.keys()))}")
    c.model[key] = value
  return c


def point_dir(workdir: str, label: str, lag: int) -> str:
  """The run directory of one point: ``workdir/<label>_lag<lag>``, the label's
  characters other than letters, digits and ``-_.`` replaced by ``_``."""
  safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
  return os.path.join(workdir, f"{safe}_lag{lag}")


def row_of(summary: dict[str, Any], label: str, lag: int, metric: str) -> dict[str, Any]:
  """The :data:`COLUMNS` row of one point from its ``summary.json``: the
  fraction of seeds solved, the median over the solved seeds of the sequences
  to criterion (``None`` if none solved), and the median, min and max over all
  seeds of the final ``metric`` (NaN for a seed without it)."""
  values = [p["metrics"].get(metric, float("nan")) for p in summary["per_seed"]]
  to_crit = [p["sequences_to_criterion"] for p in summary["per_seed"] if p["solved"]]
  return {
      "model": label, "lag": lag, "seeds": len(values),
      "solved_fraction": summary["solved_fraction"],
      "median_sequences_to_criterion": float(np.median(to_crit)) if to_crit else None,
      "metric": metric, "median": float(np.median(values)),
      "min": float(np.min(values)), "max": float(np.max(values)),
      "wall_time_s": summary["wall_time_s"]}


def run_point(point: ml_collections.ConfigDict, label: str, workdir: str, metric: str, *,
              progress: bool = True, force: bool = False,
              check_saved: bool = False) -> dict[str, Any]:
  """Run one point (model ``label`` at ``point.lag``), or load it if finished,
  and return its :data:`COLUMNS` row (:func:`row_of`).

  The point's run directory is :func:`point_dir`. A directory with a
  ``summary.json`` is a finished point: it is read, not trained. Otherwise
  :func:`lstm_jax.runner.train_and_evaluate` trains it (resuming its
  checkpoints, if any). ``check_saved``: a finished point whose saved
  ``config.json`` differs from ``point`` raises
  :class:`lstm_jax.workdir.WorkdirError` instead of being reused (its results
  belong to another config, e.g. another budget).
  """
  path = point_dir(workdir, label, point.lag)
  done = os.path.join(path, "summary.json")
  if os.path.exists(done):
    saved = os.path.join(path, "config.json")
    if check_saved and os.path.exists(saved):
      with open(saved) as f:
        diff = wd.config_differences(json.load(f), point.to_dict(),
                                     config_lib.default_config().to_dict())
      if diff:
        raise wd.WorkdirError(
            f"{path} holds a finished run with a different config ({'; '.join(diff)}); "
            "use a new workdir, or delete that directory to train the point again")
    with open(done) as f:
      summary = json.load(f)
  else:
    summary = train_and_evaluate(point, path, progress=progress, force=force)
  return row_of(summary, label, point.lag, metric)


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
              force: bool = False) -> list[dict[str, Any]]:
  """Run (or resume) every grid point and write the tables and the plot.

  Every point's config is validated before the first one trains. ``force``:
  run points whose memory estimate says they do not fit
  (:func:`lstm_jax.runner.train_and_evaluate`).

  Returns:
    One row per (model, lag) with the :data:`COLUMNS`.
  """
  labels = [m["label"] for m in sweep.models]
  if len(set(labels)) != len(labels):
    raise config_lib.ConfigError(f"sweep models: labels must be unique, got {labels}")
  if not sweep.lags or any(not isinstance(l, int) or l < 1 for l in sweep.lags):
    raise config_lib.ConfigError(f"sweep lags={list(sweep.lags)!r}: expected a non-empty "
                                 "list of integers >= 1")
  points = [(m, lag, point_config(sweep, m, lag)) for m in sweep.models for lag in sweep.lags]
  for m, lag, c in points:
    try:
      config_lib.build(c)
    except config_lib.ConfigError as err:
      raise config_lib.ConfigError(f"sweep point {m['label']} lag={lag}: {err}") from None
  wd.ensure_dir(workdir)
  rows = [run_point(c, m["label"], workdir, sweep.metric, progress=progress, force=force)
          for m, lag, c in points]
  write_results(rows, workdir, sweep)
  return rows


def memory_horizons(rows: list[dict[str, Any]], threshold: float = 0.5) -> dict[str, int | None]:
  """Per model, the largest lag whose solved fraction is at least ``threshold``."""
  out: dict[str, int | None] = {}
  for row in rows:
    out.setdefault(row["model"], None)
    if row["solved_fraction"] >= threshold:
      current = out[row["model"]]
      out[row["model"]] = row["lag"] if current is None else max(current, row["lag"])
  return out


def results_markdown(rows: list[dict[str, Any]], sweep: ml_collections.ConfigDict) -> str:
  """The results table (one row per model and lag) and the memory horizons."""
  metric = sweep.metric
  lines = [f"| model | lag | solved (of {sweep.num_seeds} seeds) | median sequences to "
           f"criterion | final {metric}: median [min, max] |", "|---|---:|---:|---:|---|"]
  for r in rows:
    med = r["median_sequences_to_criterion"]
    lines.append(f"| {r['model']} | {r['lag']} | {r['solved_fraction']:.2f} | "
                 f"{'-' if med is None else f'{med:,.0f}'} | "
                 f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] |")
  lines.append("")
  budget = sweep.base.budget_sequences
  for model, lag in memory_horizons(rows).items():
    lines.append(f"- memory horizon of **{model}** (largest lag solved by at least half the "
                 f"seeds within {budget:,} sequences): {lag if lag is not None else 'none'}")
  return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], workdir: str,
                  sweep: ml_collections.ConfigDict) -> None:
  """Write ``results.csv``, ``results.md`` and ``memory_vs_lag.png``, each
  atomically (a temporary file renamed)."""
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=COLUMNS)
  writer.writeheader()
  writer.writerows(rows)
  wd.write_text_atomic(os.path.join(workdir, "results.csv"), table.getvalue())
  wd.write_text_atomic(os.path.join(workdir, "results.md"), results_markdown(rows, sweep))
  plot(rows, os.path.join(workdir, "memory_vs_lag.png"), sweep)


def plot(rows: list[dict[str, Any]], path: str, sweep: ml_collections.ConfigDict) -> None:
  """Metric against lag (log x), one line per model: median and min-max band."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for model in dict.fromkeys(r["model"] for r in rows):
    rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["lag"])
    lags = [r["lag"] for r in rs]
    (line,) = ax.plot(lags, [r["median"] for r in rs], marker="o", label=model)
    ax.fill_between(lags, [r["min"] for r in rs], [r["max"] for r in rs],
                    color=line.get_color(), alpha=0.15, linewidth=0)
  ax.set_xscale("log")
  ax.set_xlabel("lag (time steps)")
  ax.set_ylabel(f"held-out {sweep.metric} (median, min-max over seeds)")
  ax.set_title(f"{sweep.base.task}: memory vs lag, "
               f"{sweep.base.budget_sequences:,} training sequences")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)

"""Lag sweeps: a grid of lags x models, each point's seeds trained together
(one program, lstm_jax.devices), summarised as a table, a plot and each
model's memory horizon.

A sweep config (``configs/sweeps/<name>.py``) has::

    base        an experiment config (lstm_jax.config.default_config)
    lags        list of lags
    models      list of {label, and overrides of base.model fields, e.g. cell}
    num_seeds   seeds per grid point
    metric      summary metric to plot against lag (e.g. "accuracy")
    grid        optional: other config fields to sweep, {dotted field: [values]}

The points are the product ``models x lags x grid`` (:func:`points`). The
grid is a ConfigDict whose leaves are lists; a leaf's dotted path is the
field it sweeps, written nested (``{"optimizer": {"learning_rate": [1e-3,
3e-3]}, "batch_size": [16, 32]}``) or with dotted keys
(``ml_collections.ConfigDict({...}, allow_dotted_keys=True)``). The swept
fields are taken in sorted order of their dotted names; the last one varies
fastest. A point's config is ``base``, then the model's overrides, then
``lag`` and ``num_seeds``, then the point's grid values
(``update_from_flattened_dict``), so a grid value wins over a model override
of the same field. ``lag`` and ``num_seeds`` cannot be swept by the grid.

``run_sweep(config, workdir)`` writes one run directory per point (a normal
run directory, resumable; :func:`point_name`), then ``results.csv``,
``results.md`` and ``memory_vs_lag.png``, and with a grid ``best.md``
(:func:`best_settings`). Points whose ``summary.json`` exists are skipped, so
an interrupted sweep resumes where it stopped.

With a grid, ``results.csv`` and ``results.md`` have one column per swept
field (the point's value; :func:`grid_columns`), and ``results.csv`` also
each point's ``sequences_trained`` (:func:`sequences_trained`). The plot
keeps one line per model and shows, at each lag, that lag's best setting
(:func:`best_settings`; it can differ between lags, ``best.md`` says which),
so it stays readable however large the grid. ``best.md`` has, per model and
lag, the chosen value of every swept field, its solved fraction, median
sequences to criterion and final metric, and the tuning spend: training
sequences and wall time summed over every point tried for that model and lag.
(Plain dicts with dotted keys cannot be assigned to a ConfigDict, which
refuses dots in field names by default; hence the nested form.)

When some point's run logged memory diagnostics (``base.diagnostics.every >
0``; :mod:`lstm_jax.runner`), ``diagnostics.png`` is written too
(:func:`plot_diagnostics`): per model and lag (with a grid, each lag's best
setting), the last measurement's gradient norm by distance, state norm over
time, and the forget-gate time scale against lag.

When the points' eval lines in ``metrics.jsonl`` carry the curve metric
(the optional sweep field ``curve_metric``, default
``"loss_over_baseline"``: the eval loss over the task's memoryless
baseline, logged by tasks that define one, e.g. copy), ``learning_curves.png``
is written too (:func:`plot_learning_curves`): one panel per lag, one line
per model (with a grid, each lag's best setting), the median over seeds of
the eval metric against sequences seen with a min-max band, on a log y axis
when every value is positive, and for ``loss_over_baseline`` a dashed line
at 1.0, the memoryless baseline. Runs that do not log the metric give no
plot (and no error). :func:`learning_curve` reads one run directory's curve.

One point is run, or loaded if finished, by :func:`run_point`, which returns
its row (:data:`COLUMNS`); the memory-horizon search (:mod:`lstm_jax.horizon`)
runs its points through it too.

Many jobs: ``run_sweep(config, workdir, shard=(i, n))`` runs only shard ``i``
of ``n`` (0-based; :func:`shard_points`: every ``n``-th point of
:func:`points` from the ``i``-th, so the shards are disjoint and cover the
sweep whatever has finished) and writes no tables. The shards are
independent processes or jobs (``--shard=i/n``, or a SLURM job array:
:func:`shard_from_env`); they may share one workdir, since every point has
its own run directory. :func:`merge_sweep` then loads every point from the
shards' workdirs and writes the tables with :func:`write_results`, the same
files an unsharded sweep writes, and reports the points no shard finished.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
from typing import Any, Mapping, NamedTuple, Sequence, TypeVar

import ml_collections
import numpy as np

from lstm_jax import config as config_lib
from lstm_jax import devices
from lstm_jax import workdir as wd
from lstm_jax.runner import DIAGNOSTICS_FILE, train_and_evaluate

COLUMNS = ("model", "lag", "seeds", "solved_fraction", "median_sequences_to_criterion",
           "metric", "median", "min", "max", "wall_time_s")


NOT_SWEPT = ("lag", "num_seeds")
"""Fields the grid may not sweep: the sweep sets them (``lags``, ``num_seeds``)."""


def point_config(sweep: ml_collections.ConfigDict, model: Any, lag: int,
                 setting: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The run config of one grid point: ``base`` with the model's overrides,
  ``lag``, ``num_seeds`` and the grid values ``setting`` (``{dotted field:
  value}``; none by default). A value whose type the field does not take
  raises :class:`lstm_jax.config.ConfigError` naming ``grid[field]``."""
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
  for field, value in (setting or {}).items():
    try:
      c.update_from_flattened_dict({field: value})
    except (TypeError, ValueError) as err:
      current = _leaf(sweep.base, field)
      raise config_lib.ConfigError(
          f"sweep grid[{field!r}]={value!r} is not allowed; expected a value of the type of "
          f"base.{field}={current!r} ({type(current).__name__}): "
          f"{' '.join(str(err).split())}") from None
  return c


_MISSING = object()


def _leaf(c: ml_collections.ConfigDict, field: str) -> Any:
  """The value of dotted ``field`` in ``c``, or ``_MISSING``."""
  for part in field.split("."):
    if not isinstance(c, ml_collections.ConfigDict) or part not in c:
      return _MISSING
    c = c[part]
  return c


def _leaf_fields(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted field of ``c`` that holds a value (not a ConfigDict)."""
  out = []
  for key in c.keys():
    if isinstance(c[key], ml_collections.ConfigDict):
      out += _leaf_fields(c[key], f"{prefix}{key}.")
    else:
      out.append(f"{prefix}{key}")
  return out


def _safe(text: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _flatten_grid(grid: Any, prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key in grid.keys():
    value = grid[key]
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(_flatten_grid(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def grid_fields(sweep: ml_collections.ConfigDict) -> dict[str, list[Any]]:
  """The swept fields of a sweep config and their values, ``{dotted field:
  [values]}`` in sorted order of the names; ``{}`` without a ``grid`` field.

  Checks the grid's shape only (types and values are checked per point by
  :func:`point_config` and :func:`lstm_jax.config.build`): each field must
  be a field of ``base`` holding a value, not one of :data:`NOT_SWEPT`, and
  have a non-empty list of distinct values; anything else raises
  :class:`lstm_jax.config.ConfigError` naming ``grid[field]``.
  """
  grid = sweep.get("grid") if "grid" in sweep else None
  if grid is None:
    return {}
  if not isinstance(grid, (Mapping, ml_collections.ConfigDict)):
    raise config_lib.ConfigError(
        f"sweep grid={grid!r} is not allowed; expected a dict of dotted config fields to "
        "lists of values, e.g. {'optimizer.learning_rate': [1e-3, 3e-3]}")
  flat = _flatten_grid(grid)
  allowed = sorted(f for f in _leaf_fields(sweep.base) if f not in NOT_SWEPT)
  out: dict[str, list[Any]] = {}
  for field in sorted(flat):
    values = flat[field]
    if field in NOT_SWEPT:
      raise config_lib.ConfigError(
          f"sweep grid[{field!r}] is not allowed; {field} is set by the sweep "
          f"({'lags' if field == 'lag' else 'num_seeds'}), not by the grid")
    if _leaf(sweep.base, field) is _MISSING or isinstance(_leaf(sweep.base, field),
                                                           ml_collections.ConfigDict):
      raise config_lib.ConfigError(
          f"sweep grid[{field!r}] is not allowed; expected a config field of base that "
          f"holds a value: {', '.join(allowed)}")
    if not isinstance(values, (list, tuple)) or not values:
      raise config_lib.ConfigError(
          f"sweep grid[{field!r}]={values!r} is not allowed; expected a non-empty list of "
          "values")
    values = list(values)
    if any(a == b for a, b in itertools.combinations(values, 2)):
      raise config_lib.ConfigError(
          f"sweep grid[{field!r}]={values!r} is not allowed; expected distinct values")
    out[field] = values
  return out


def point_name(label: str, lag: int, setting: Mapping[str, Any] | None = None) -> str:
  """The run directory name of one point.

  Without grid values: ``<label>_lag<lag>`` (the names of sweeps without a
  grid, so their workdirs resume). With them:
  ``<label>_lag<lag>_<field>-<value>_..._<hash>``: the fields in the order
  given, the readable part cut at 120 characters, and ``<hash>`` the first 10
  hex digits of the SHA-1 of the JSON of ``[[field, value], ...]``, so that
  distinct settings get distinct names even where the readable parts agree.
  In the label and the readable part, characters other than letters, digits
  and ``-_.`` become ``_``. The name depends only on its arguments (stable
  across runs and machines).
  """
  name = f"{_safe(label)}_lag{lag}"
  if not setting:
    return name
  items = [[field, value] for field, value in setting.items()]
  readable = _safe("_".join(f"{field}-{_text(value)}" for field, value in items))[:120]
  digest = hashlib.sha1(json.dumps(items).encode()).hexdigest()[:10]
  return f"{name}_{readable}_{digest}"


def _text(value: Any) -> str:
  """A grid value as shown in names and tables (floats with ``%g``)."""
  return f"{value:g}" if isinstance(value, float) else str(value)


def point_dir(workdir: str, label: str, lag: int,
              setting: Mapping[str, Any] | None = None) -> str:
  """The run directory of one point: ``workdir/`` + :func:`point_name`
  (``workdir/<label>_lag<lag>`` without grid values), the label's
  characters other than letters, digits and ``-_.`` replaced by ``_``."""
  return os.path.join(workdir, point_name(label, lag, setting))


class Point(NamedTuple):
  """One point of a sweep: the model entry, the lag, the grid values
  (``{dotted field: value}``, empty without a grid), its run config and its
  run directory name."""
  model: Mapping[str, Any]
  lag: int
  setting: dict[str, Any]
  config: ml_collections.ConfigDict
  name: str


def points(sweep: ml_collections.ConfigDict) -> list[Point]:
  """Every point of a sweep, in the order they run: models (outer), lags,
  then the grid settings (``itertools.product`` of the :func:`grid_fields`
  values, the last field fastest). Checks the labels, the lags, the grid and
  every point's config (:func:`lstm_jax.config.build`) before returning;
  errors are one :class:`lstm_jax.config.ConfigError` line."""
  labels = [m["label"] for m in sweep.models]
  if len(set(labels)) != len(labels):
    raise config_lib.ConfigError(f"sweep models: labels must be unique, got {labels}")
  if not sweep.lags or any(not isinstance(l, int) or l < 1 for l in sweep.lags):
    raise config_lib.ConfigError(f"sweep lags={list(sweep.lags)!r}: expected a non-empty "
                                 "list of integers >= 1")
  fields = grid_fields(sweep)
  curve_metric(sweep)
  settings = [dict(zip(fields, values)) for values in itertools.product(*fields.values())]
  out = []
  for m in sweep.models:
    for lag in sweep.lags:
      for setting in settings:
        c = point_config(sweep, m, lag, setting)
        where = " ".join([f"sweep point {m['label']} lag={lag}"] +
                         [f"{f}={v!r}" for f, v in setting.items()])
        try:
          config_lib.build(c)
        except config_lib.ConfigError as err:
          raise config_lib.ConfigError(f"{where}: {err}") from None
        out.append(Point(m, lag, setting, c, point_name(m["label"], lag, setting)))
  names = [p.name for p in out]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError(
        f"sweep models labels={labels} are not allowed; expected labels that stay distinct "
        "as directory names (characters other than letters, digits, '-_.' become '_')")
  return out


# ----------------------------------------------------------------------------
# Shards: disjoint slices of the points, for independent jobs.

T = TypeVar("T")

WHOLE = (0, 1)
"""The shard ``(index, count)`` that is the whole sweep."""

SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                   "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")
"""The environment variables of a SLURM job array that :func:`shard_from_env` reads."""


def check_shard(index: int, count: int) -> tuple[int, int]:
  """``(index, count)`` if it names a shard: integers with ``count >= 1`` and
  ``0 <= index < count`` (0-based); else a :class:`lstm_jax.config.ConfigError`."""
  if (isinstance(index, bool) or isinstance(count, bool) or not isinstance(index, int)
      or not isinstance(count, int) or count < 1 or not 0 <= index < count):
    raise config_lib.ConfigError(
        f"shard {index!r}/{count!r} is not allowed; expected i/n with integers 0 <= i < n "
        "(0-based: two jobs are shards 0/2 and 1/2)")
  return index, count


def shard_points(items: Sequence[T], index: int, count: int) -> list[T]:
  """The items of shard ``index`` of ``count`` (0-based): every ``count``-th
  item from the ``index``-th, ``items[index::count]`` (round-robin).

  Over ``index = 0 .. count - 1`` the shards are disjoint and together hold
  every item once, each in the order of ``items``; their sizes differ by at
  most one (a shard is empty when ``count > len(items)``). A shard depends
  only on ``len(items)``, ``index`` and ``count`` -- not on which points have
  finished -- so every job computes the same split. ``items``: the
  :func:`points` of a sweep, or the models of a horizon search.
  """
  check_shard(index, count)
  return list(items[index::count])


def parse_shard(text: str) -> tuple[int, int]:
  """``"i/n"`` -> ``(i, n)``: shard ``i`` (0-based) of ``n``, e.g. ``"0/2"``
  and ``"1/2"`` for two jobs. Spaces around the numbers are allowed.
  Anything else (``"3/2"``, ``"2/2"``, ``"a/b"``, ``"0/0"``, ``"1"``) raises
  :class:`lstm_jax.config.ConfigError`, one line."""
  parts = str(text).split("/")
  try:
    if len(parts) != 2:
      raise ValueError
    index, count = (int(p.strip(), 10) for p in parts)
  except ValueError:
    raise config_lib.ConfigError(
        f"shard {text!r} is not allowed; expected i/n with integers 0 <= i < n (0-based: two "
        "jobs are shards 0/2 and 1/2)") from None
  if count < 1 or not 0 <= index < count:
    raise config_lib.ConfigError(
        f"shard {text!r} is not allowed; expected i/n with integers 0 <= i < n (0-based: two "
        "jobs are shards 0/2 and 1/2)")
  return index, count


def shard_from_env(environ: Mapping[str, str]) -> tuple[int, int] | None:
  """The shard of a SLURM job array task, or ``None`` outside one.

  Outside an array (no ``SLURM_ARRAY_TASK_ID``): ``None``. Inside one:
  ``count`` is ``SLURM_ARRAY_TASK_COUNT``, or without it ``(MAX - MIN) //
  STEP + 1`` from ``SLURM_ARRAY_TASK_MIN`` (default 0),
  ``SLURM_ARRAY_TASK_MAX`` and ``SLURM_ARRAY_TASK_STEP`` (default 1); the
  index is ``(SLURM_ARRAY_TASK_ID - MIN) / STEP``. So ``--array=0-3``,
  ``--array=1-4`` and ``--array=0-9:3`` (4 tasks each; any ``%`` throttle)
  give shards 0/4 .. 3/4. A value that is not an integer, an array given as
  a list (``--array=1,5,7``) that makes the index fractional or too large,
  or an ID without a count raises :class:`lstm_jax.config.ConfigError`
  naming the variables (``--shard=i/n`` overrides the environment).
  """
  if not environ.get("SLURM_ARRAY_TASK_ID", "").strip():
    return None
  values: dict[str, int] = {}
  for name in SLURM_VARIABLES:
    text = environ.get(name, "").strip()
    if not text:
      continue
    try:
      values[name] = int(text, 10)
    except ValueError:
      raise config_lib.ConfigError(
          f"{name}={text!r} is not allowed; expected an integer (a SLURM job array "
          "variable); give --shard=i/n to choose the shard yourself") from None
  seen = " ".join(f"{k}={v}" for k, v in values.items())
  low, step = values.get("SLURM_ARRAY_TASK_MIN", 0), values.get("SLURM_ARRAY_TASK_STEP", 1)
  if "SLURM_ARRAY_TASK_COUNT" in values:
    count = values["SLURM_ARRAY_TASK_COUNT"]
  elif "SLURM_ARRAY_TASK_MAX" in values and step >= 1:
    count = (values["SLURM_ARRAY_TASK_MAX"] - low) // step + 1
  else:
    raise config_lib.ConfigError(
        f"SLURM job array with {seen}: no SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX to "
        "count the shards; give --shard=i/n")
  offset = values["SLURM_ARRAY_TASK_ID"] - low
  if step < 1 or offset % step or not 0 <= offset // step < max(count, 0):
    raise config_lib.ConfigError(
        f"SLURM job array with {seen} does not give a shard i/n with 0 <= i < n (index "
        "(ID - MIN) / STEP, n = COUNT); use a range such as --array=0-3, or give "
        "--shard=i/n")
  return offset // step, count


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
              check_saved: bool = False, name: str | None = None) -> dict[str, Any]:
  """Run one point (model ``label`` at ``point.lag``), or load it if finished,
  and return its :data:`COLUMNS` row (:func:`row_of`).

  The point's run directory is ``workdir/name``, by default
  :func:`point_dir` without grid values. A directory with a
  ``summary.json`` is a finished point: it is read, not trained. Otherwise
  :func:`lstm_jax.runner.train_and_evaluate` trains it (resuming its
  checkpoints, if any). ``check_saved``: a finished point whose saved
  ``config.json`` differs from ``point`` raises
  :class:`lstm_jax.workdir.WorkdirError` instead of being reused (its results
  belong to another config, e.g. another budget).
  """
  path = os.path.join(workdir, name) if name else point_dir(workdir, label, point.lag)
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


def sequences_trained(summary: Mapping[str, Any], budget_sequences: int
                      ) -> tuple[int, bool]:
  """The training sequences one point cost, summed over its seeds, and
  whether that is an estimate.

  The seeds of a point train together for the same number of updates (until
  all are solved or the budget is spent), so the cost is ``len(per_seed) x
  summary["sequences_seen"]`` (``sequences_seen`` = updates x batch size, per
  seed). A summary without ``sequences_seen`` is counted as ``len(per_seed) x
  budget_sequences`` (an upper bound, flagged ``True``).
  """
  seeds = len(summary["per_seed"])
  seen = summary.get("sequences_seen")
  if seen is None:
    return seeds * int(budget_sequences), True
  return seeds * int(seen), False


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
              force: bool = False, shard: tuple[int, int] = WHOLE) -> list[dict[str, Any]]:
  """Run (or resume) every point (:func:`points`) and write the tables and the plot.

  Every point's config is validated before the first one trains. ``force``:
  run points whose memory estimate says they do not fit
  (:func:`lstm_jax.runner.train_and_evaluate`).

  ``shard=(index, count)``: run only the points of that shard
  (:func:`shard_points`, round-robin over :func:`points`), each in its run
  directory ``workdir/<name>`` as the whole sweep would, and write no tables:
  with ``count > 1`` neither ``results.*``, ``best.md`` nor the plots are
  written (the shards of one sweep may share ``workdir``; each point has its
  own run directory, so no two shards write the same files). The tables come
  from :func:`merge_sweep` once every shard has finished. ``(0, 1)``, the
  default, is the whole sweep.

  Returns:
    One row per point run (all of them, or the shard's), in the order of
    :func:`points`. Without a grid the :data:`COLUMNS` (as before grids
    existed). With one, :func:`grid_columns`: also the point's value of every
    swept field (keyed by its dotted name), ``sequences_trained`` and
    ``sequences_estimated`` (:func:`sequences_trained`); ``best.md`` is
    written too.
  """
  index, count = check_shard(*shard)
  todo = shard_points(points(sweep), index, count)
  fields = list(grid_fields(sweep))
  wd.ensure_dir(workdir)
  rows = [_point_row(p, workdir, sweep.metric, fields, progress=progress, force=force)
          for p in todo]
  if count == 1:
    write_results(rows, workdir, sweep)
  return rows


def _point_row(p: Point, workdir: str, metric: str, fields: Sequence[str],
               **kwargs: Any) -> dict[str, Any]:
  """One point's row (run, or loaded from ``workdir/<p.name>``; ``kwargs`` go
  to :func:`run_point`), with the grid columns when ``fields`` is not empty."""
  row = run_point(p.config, p.model["label"], workdir, metric, name=p.name, **kwargs)
  if fields:
    with open(os.path.join(workdir, p.name, "summary.json")) as f:
      spent, estimated = sequences_trained(json.load(f), p.config.budget_sequences)
    row = {"model": row["model"], "lag": row["lag"], **p.setting,
           **{k: row[k] for k in COLUMNS[2:]},
           "sequences_trained": spent, "sequences_estimated": estimated}
  return row


def finished_in(name: str, sources: Sequence[str]) -> str | None:
  """The first of ``sources`` (workdirs) holding the finished run directory
  ``name`` (one with a ``summary.json``), or ``None``."""
  for source in sources:
    if os.path.exists(os.path.join(source, name, "summary.json")):
      return source
  return None


class Merged(NamedTuple):
  """What :func:`merge_sweep` found: the rows of the finished points (in the
  order of :func:`points`; the rows :func:`run_sweep` returns), the points
  not finished in any source, whether the tables were written, and per
  finished point's name the workdir it was read from."""
  rows: list[dict[str, Any]]
  missing: list[Point]
  written: bool
  sources: dict[str, str]


def merge_sweep(sweep: ml_collections.ConfigDict, workdir: str, sources: Sequence[str] = (),
                *, partial: bool = False) -> Merged:
  """The tables and plots of a sweep whose points ran in shards; trains nothing.

  Every point of :func:`points` is looked for, by its run directory name, in
  ``workdir`` and then in each of ``sources`` (other workdirs the shards
  used; the first that holds it finished wins) and loaded as
  :func:`run_sweep` loads a finished point, except that a saved
  ``config.json`` differing from the point's config raises
  :class:`lstm_jax.workdir.WorkdirError` (a run of another sweep). When
  every point is found, ``workdir`` gets the files :func:`run_sweep` writes
  (:func:`write_results`, the same functions), so a sharded then merged
  sweep has the tables of an unsharded one; the diagnostics plot reads each
  point's run directory where it was found. When some are missing, nothing
  is written unless ``partial``: then the tables hold the finished points
  only (no table is written if none finished).
  """
  todo = points(sweep)
  fields = list(grid_fields(sweep))
  dirs = list(dict.fromkeys([workdir, *sources]))
  rows, missing, found = [], [], {}
  for p in todo:
    source = finished_in(p.name, dirs)
    if source is None:
      missing.append(p)
      continue
    found[p.name] = source
    rows.append(_point_row(p, source, sweep.metric, fields, progress=False,
                           check_saved=True))
  written = bool(rows) and (partial or not missing)
  if written:
    wd.ensure_dir(workdir)
    write_results(rows, workdir, sweep,
                  run_dirs={name: os.path.join(d, name) for name, d in found.items()})
  return Merged(rows, missing, written, found)


def grid_columns(fields: Sequence[str]) -> tuple[str, ...]:
  """The columns of a grid sweep's rows and ``results.csv``: model, lag, the
  swept fields, the rest of :data:`COLUMNS`, sequences_trained,
  sequences_estimated."""
  return (*COLUMNS[:2], *fields, *COLUMNS[2:], "sequences_trained", "sequences_estimated")


BEST_KEYS = ("model", "lag", "setting", "points", "seeds", "solved_fraction",
             "median_sequences_to_criterion", "metric", "median", "min", "max",
             "tuning_sequences", "tuning_estimated", "tuning_wall_time_s")
"""The keys of a :func:`best_settings` entry."""


def _rank(row: Mapping[str, Any]) -> tuple[float, float, float]:
  """The sort key of the selection rule (smaller is better)."""
  to_crit = row["median_sequences_to_criterion"]
  median = row["median"]
  return (-row["solved_fraction"], math.inf if to_crit is None else float(to_crit),
          math.inf if median is None or math.isnan(median) else -median)


def best_settings(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
                  ) -> list[dict[str, Any]]:
  """Per (model, lag), the grid setting chosen and what the search cost.

  Rule, among the rows of one (model, lag): the highest ``solved_fraction``;
  among those, the lowest ``median_sequences_to_criterion`` (``None``, no
  seed solved, counts as infinite); among those, the highest ``median`` of
  the final metric (NaN counts as the lowest); a tie on all three goes to the
  row that comes first in ``rows`` (the grid order of :func:`points`).

  The tuning cost is over *all* rows of that (model, lag), not only the
  chosen one: ``tuning_sequences`` the sum of their ``sequences_trained``
  (training sequences over all seeds, :func:`sequences_trained`),
  ``tuning_estimated`` whether any of them is an estimate, and
  ``tuning_wall_time_s`` the sum of their ``wall_time_s``.

  Args:
    rows: grid sweep rows (:func:`grid_columns`); each needs model, lag, the
      ``fields``, seeds, solved_fraction, median_sequences_to_criterion,
      metric, median, min, max, wall_time_s and sequences_trained
      (sequences_estimated optional, default False).
    fields: the swept fields (dotted names).

  Returns:
    One dict per (model, lag) in order of first appearance, with the
    :data:`BEST_KEYS`; ``setting`` is ``{field: chosen value}`` and the
    solved fraction, median to criterion and metric statistics are the
    chosen row's; ``points`` counts the rows tried.
  """
  groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault((row["model"], row["lag"]), []).append(row)
  out = []
  for (model, lag), group in groups.items():
    best = min(group, key=_rank)  # min keeps the first of equal keys
    out.append({
        "model": model, "lag": lag, "setting": {f: best[f] for f in fields},
        "points": len(group), "seeds": best["seeds"],
        **{k: best[k] for k in ("solved_fraction", "median_sequences_to_criterion", "metric",
                                "median", "min", "max")},
        "tuning_sequences": int(sum(r["sequences_trained"] for r in group)),
        "tuning_estimated": any(r.get("sequences_estimated", False) for r in group),
        "tuning_wall_time_s": float(sum(r["wall_time_s"] for r in group))})
  return out


def best_markdown(best: Sequence[Mapping[str, Any]], fields: Sequence[str],
                  sweep: ml_collections.ConfigDict) -> str:
  """The table of :func:`best_settings` (one row per model and lag) and the rule."""
  metric = sweep.metric
  head = ["model", "lag", *fields, f"solved (of {sweep.num_seeds} seeds)",
          "median sequences to criterion", f"final {metric}: median",
          "points tried", "tuning spend: sequences (all points)", "tuning spend: wall time"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---", "---:"] + ["---"] * len(fields) + ["---:"] * 6) + "|"]
  for b in best:
    med = b["median_sequences_to_criterion"]
    spent = f"{'<= ' if b['tuning_estimated'] else ''}{b['tuning_sequences']:,}"
    cells = [b["model"], str(b["lag"]), *(_text(b["setting"][f]) for f in fields),
             f"{b['solved_fraction']:.2f}", "-" if med is None else f"{med:,.0f}",
             f"{b['median']:.3f}", str(b["points"]), spent,
             f"{b['tuning_wall_time_s']:.1f} s"]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Best setting per model and lag: the highest solved fraction, then the "
            "lowest median sequences to criterion (none solved: infinite), then the highest "
            f"final {metric} median; ties: the first in grid order. The tuning spend is over "
            "every point tried for that model and lag: training sequences summed over seeds "
            "(seeds x sequences seen; '<=' where a summary lacks sequences_seen and seeds x "
            "budget is counted) and the points' wall time."]
  return "\n".join(lines) + "\n"


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
  """The results table (one row per point: model, lag and, with a grid, the
  value of every swept field) and the memory horizons (with a grid, a lag
  counts as solved when any of its settings is)."""
  metric = sweep.metric
  fields = list(grid_fields(sweep))
  head = "".join(f" {f} |" for f in fields)
  lines = [f"| model | lag |{head} solved (of {sweep.num_seeds} seeds) | median sequences to "
           f"criterion | final {metric}: median [min, max] |",
           "|---|---:|" + "---|" * len(fields) + "---:|---:|---|"]
  for r in rows:
    med = r["median_sequences_to_criterion"]
    values = "".join(f" {_text(r[f])} |" for f in fields)
    lines.append(f"| {r['model']} | {r['lag']} |{values} {r['solved_fraction']:.2f} | "
                 f"{'-' if med is None else f'{med:,.0f}'} | "
                 f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] |")
  lines.append("")
  budget = sweep.base.budget_sequences
  for model, lag in memory_horizons(rows).items():
    lines.append(f"- memory horizon of **{model}** (largest lag solved by at least half the "
                 f"seeds within {budget:,} sequences): {lag if lag is not None else 'none'}")
  return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], workdir: str,
                  sweep: ml_collections.ConfigDict,
                  run_dirs: Mapping[str, str] | None = None) -> None:
  """Write ``results.csv``, ``results.md`` and ``memory_vs_lag.png`` and, with
  a grid, ``best.md`` (:func:`best_markdown`), each atomically (a temporary
  file renamed), and ``diagnostics.png`` (:func:`plot_diagnostics`) and
  ``learning_curves.png`` (:func:`plot_learning_curves`) when the runs logged
  what they show. With a grid the plots show each lag's best setting.
  ``run_dirs``: per point name, its run directory when not ``workdir/<name>``
  (a merge of shards in other workdirs, :func:`merge_sweep`)."""
  if not devices.is_primary():  # several processes: process 0 writes the tables
    return
  fields = list(grid_fields(sweep))
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=grid_columns(fields) if fields else COLUMNS)
  writer.writeheader()
  writer.writerows(rows)
  wd.write_text_atomic(os.path.join(workdir, "results.csv"), table.getvalue())
  wd.write_text_atomic(os.path.join(workdir, "results.md"), results_markdown(rows, sweep))
  shown = rows
  if fields:
    best = best_settings(rows, fields)
    wd.write_text_atomic(os.path.join(workdir, "best.md"), best_markdown(best, fields, sweep))
    shown = best
  plot(shown, os.path.join(workdir, "memory_vs_lag.png"), sweep, best_of_grid=bool(fields))
  names = [point_name(r["model"], r["lag"], r["setting"] if fields else None) for r in shown]
  entries = [(r["model"], r["lag"], (run_dirs or {}).get(name, os.path.join(workdir, name)))
             for r, name in zip(shown, names)]
  plot_diagnostics(entries, os.path.join(workdir, "diagnostics.png"),
                   f"{sweep.base.task}: memory diagnostics"
                   + (" (best setting per lag)" if fields else ""))
  plot_learning_curves(entries, os.path.join(workdir, "learning_curves.png"),
                       f"{sweep.base.task}: learning curves"
                       + (" (best setting per lag)" if fields else ""),
                       metric=curve_metric(sweep))


def plot(rows: Sequence[Mapping[str, Any]], path: str, sweep: ml_collections.ConfigDict,
         best_of_grid: bool = False) -> None:
  """Metric against lag (log x), one line per model: median and min-max band.

  ``rows``: one per (model, lag), each with model, lag, median, min and max.
  With a grid they are the :func:`best_settings` entries (``best_of_grid``:
  the legend says so), so each model's line follows its best setting at
  each lag, which may differ from lag to lag (``best.md`` says which)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for model in dict.fromkeys(r["model"] for r in rows):
    rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["lag"])
    lags = [r["lag"] for r in rs]
    label = f"{model} (best setting per lag)" if best_of_grid else model
    (line,) = ax.plot(lags, [r["median"] for r in rs], marker="o", label=label)
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


# ----------------------------------------------------------------------------
# Memory diagnostics of the points.


def final_diagnostics(run_dir: str) -> dict[str, Any] | None:
  """The last diagnostics measurement of a run directory, median over seeds.

  Reads ``run_dir/diagnostics.jsonl`` (:mod:`lstm_jax.runner`) and keeps the
  records of its largest step. Every numeric entry becomes the median over
  those seeds' values (curves elementwise; ``None``, undefined, is NaN and a
  step where every seed is NaN stays NaN).

  Returns:
    ``{"step", "cell", "gradient", "seeds", <scalar>: float, <curve>:
    np.ndarray}`` (``gradient``: what ``input_grad_norm`` differentiates,
    ``"loss"`` or ``"output"``; ``"output"`` for records that do not say), or
    ``None`` when the run logged no diagnostics.
  """
  records = wd.read_jsonl(os.path.join(run_dir, DIAGNOSTICS_FILE))
  if not records:
    return None
  step = max(r["step"] for r in records)
  last = [r for r in records if r["step"] == step]
  out: dict[str, Any] = {"step": step, "cell": last[0].get("cell"),
                         "gradient": last[0].get("gradient", "output"), "seeds": len(last)}
  for key, value in last[0].items():
    if key in ("step", "seed", "cell", "gradient", "sequences_seen"):
      continue
    if isinstance(value, list):
      rows = [np.array([np.nan if v is None else v for v in r[key]], np.float64) for r in last]
      stacked = np.stack(rows)
      out[key] = np.array([np.median(col[np.isfinite(col)]) if np.isfinite(col).any()
                           else np.nan for col in stacked.T])
    elif isinstance(value, (int, float)):
      out[key] = float(np.nanmedian([np.nan if r.get(key) is None else r[key] for r in last]))
  return out


def plot_diagnostics(entries: Sequence[tuple[str, int, str]], path: str, title: str) -> bool:
  """The memory diagnostics of some run directories in one figure.

  ``entries``: ``(model label, lag, run directory)``. Each directory's last
  measurement (:func:`final_diagnostics`, median over seeds) gives three
  panels: the input-gradient norm (of the loss or of the last outputs, as
  the runs logged it) against distance ``d`` before each sequence's last
  step (log y; how fast the error signal decays with lag), the state norm
  against time (cell state for LSTM cells, solid; hidden state for GRU and
  Elman cells, dashed), and per LSTM model the forget-gate median time scale
  ``1 / (1 - f)`` against lag (log-log). One colour per model, darker for
  longer lags. Written atomically, with the Agg backend.

  Returns:
    Whether the figure was written: only when some directory has diagnostics.
  """
  found = [(label, lag, d) for label, lag, run_dir in entries
           if (d := final_diagnostics(run_dir)) is not None]
  if not found:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2))
  grad_ax, norm_ax, tau_ax = axes
  models = list(dict.fromkeys(label for label, _, _ in found))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, model in enumerate(models):
    colour = colours[k % len(colours)]
    mine = sorted((f for f in found if f[0] == model), key=lambda f: f[1])
    for j, (_, lag, d) in enumerate(mine):
      alpha = 1.0 if len(mine) == 1 else 0.35 + 0.65 * j / (len(mine) - 1)
      label = f"{model} lag {lag}"
      grads = d["input_grad_norm"]
      grad_ax.plot(np.arange(grads.shape[0]), grads, color=colour, alpha=alpha, label=label)
      name = "cell_norm" if "cell_norm" in d else "hidden_norm"
      norm_ax.plot(np.arange(d[name].shape[0]), d[name], color=colour, alpha=alpha,
                   linestyle="-" if name == "cell_norm" else "--", label=label)
    taus = [(lag, d["time_scale_median"]) for _, lag, d in mine if "time_scale_median" in d]
    if taus:
      tau_ax.plot(*zip(*taus), marker="o", color=colour, label=model)
  grad_ax.set_yscale("log")
  grad_ax.set_xlabel("distance d before the last step (steps)")
  of = sorted({d["gradient"] for _, _, d in found})
  grad_ax.set_ylabel(f"||d {' or '.join(of)} / d input||")
  grad_ax.set_title("error signal by lag", fontsize=10)
  norm_ax.set_xlabel("time step t")
  norm_ax.set_ylabel("state norm (cell: solid, hidden: dashed)")
  norm_ax.set_title("state norm over time", fontsize=10)
  tau_ax.set_xlabel("lag (time steps)")
  tau_ax.set_ylabel("median time scale 1 / (1 - f) (steps)")
  tau_ax.set_title("forget-gate time scale (LSTM cells)", fontsize=10)
  if tau_ax.lines:
    tau_ax.set_xscale("log")
    tau_ax.set_yscale("log")
    tau_ax.legend(fontsize=7)
  else:
    tau_ax.text(0.5, 0.5, "no LSTM cell: no forget gate", ha="center", va="center",
                transform=tau_ax.transAxes)
  for ax in axes:
    ax.grid(True, which="both", alpha=0.3)
  grad_ax.legend(fontsize=7)
  steps = sorted({d["step"] for _, _, d in found})
  fig.suptitle(f"{title}, last measurement (update {steps[0]}"
               + (f"-{steps[-1]}" if len(steps) > 1 else "") + "), median over seeds",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
  return True


# ----------------------------------------------------------------------------
# Learning curves of the points.

CURVE_METRIC = "loss_over_baseline"
"""The default ``curve_metric`` of a sweep: eval loss over the memoryless baseline."""

METRICS_FILE = "metrics.jsonl"
"""A run directory's log of train and eval lines (:mod:`lstm_jax.runner`)."""


def curve_metric(sweep: ml_collections.ConfigDict) -> str:
  """The sweep's ``curve_metric`` (:data:`CURVE_METRIC` when the field is
  absent); anything but a non-empty string raises
  :class:`lstm_jax.config.ConfigError`."""
  metric = sweep.curve_metric if "curve_metric" in sweep else CURVE_METRIC
  if not isinstance(metric, str) or not metric:
    raise config_lib.ConfigError(
        f"sweep curve_metric={metric!r} is not allowed; expected the name of an eval metric "
        f"in metrics.jsonl, e.g. {CURVE_METRIC!r}")
  return metric


def learning_curve(run_dir: str, metric: str = CURVE_METRIC) -> dict[str, Any] | None:
  """One run directory's eval ``metric`` against sequences seen, over seeds.

  Reads the ``split == "eval"`` lines of ``run_dir/metrics.jsonl`` that
  carry ``sequences_seen`` and a numeric ``metric``; a seed logged twice at
  one count (a resumed run) counts once, its last line. At each count of
  sequences seen the median, min and max over the seeds' finite values
  (NaN where none is finite).

  Returns:
    ``{"sequences_seen": int array (increasing), "median", "min", "max":
    float arrays, "seeds": the number of seeds seen}``, or ``None`` when no
    eval line carries ``metric``.
  """
  by_seen: dict[int, dict[Any, float]] = {}
  for r in wd.read_jsonl(os.path.join(run_dir, METRICS_FILE)):
    value = r.get(metric)
    if (r.get("split") != "eval" or "sequences_seen" not in r or isinstance(value, bool)
        or not isinstance(value, (int, float))):
      continue
    by_seen.setdefault(int(r["sequences_seen"]), {})[r.get("seed")] = float(value)
  if not by_seen:
    return None
  seen = sorted(by_seen)
  stats = {"median": [], "min": [], "max": []}
  for count in seen:
    values = np.array(list(by_seen[count].values()), np.float64)
    finite = values[np.isfinite(values)]
    for name, fn in (("median", np.median), ("min", np.min), ("max", np.max)):
      stats[name].append(float(fn(finite)) if finite.size else math.nan)
  seeds = {seed for values in by_seen.values() for seed in values}
  return {"sequences_seen": np.array(seen, np.int64),
          **{k: np.array(v, np.float64) for k, v in stats.items()}, "seeds": len(seeds)}


def learning_curves(entries: Sequence[tuple[str, int, str]], metric: str = CURVE_METRIC
                    ) -> list[tuple[str, int, dict[str, Any]]]:
  """:func:`learning_curve` of each ``(model label, lag, run directory)`` of
  ``entries``, as ``(label, lag, curve)`` in the order given; directories
  without the metric are left out."""
  return [(label, lag, curve) for label, lag, run_dir in entries
          if (curve := learning_curve(run_dir, metric)) is not None]


def plot_learning_curves(entries: Sequence[tuple[str, int, str]], path: str, title: str,
                         metric: str = CURVE_METRIC) -> bool:
  """Eval ``metric`` against sequences seen: one panel per lag, one line per model.

  ``entries``: ``(model label, lag, run directory)``; each directory's curve
  is :func:`learning_curve` (median over seeds, a light min-max band). The
  panels share the y axis, logarithmic when every value shown is positive;
  for ``loss_over_baseline`` a dashed line at 1.0 marks the memoryless
  baseline. Written atomically, with the Agg backend.

  Returns:
    Whether the figure was written: only when some directory logged ``metric``.
  """
  found = learning_curves(entries, metric)
  if not found:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lags = sorted({lag for _, lag, _ in found})
  models = list(dict.fromkeys(label for label, _, _ in found))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  cols = min(len(lags), 5)
  rows = -(-len(lags) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.6, 3.2 * rows + 0.6),
                           sharey=True, squeeze=False)
  values = np.concatenate([np.concatenate([c["median"], c["min"], c["max"]])
                           for _, _, c in found])
  values = values[np.isfinite(values)]
  log = values.size > 0 and bool((values > 0).all())
  for ax, lag in zip(axes.flat, lags):
    for label, at, curve in found:
      if at != lag:
        continue
      colour = colours[models.index(label) % len(colours)]
      x = curve["sequences_seen"]
      ax.plot(x, curve["median"], color=colour, marker="o", markersize=3, label=label)
      ax.fill_between(x, curve["min"], curve["max"], color=colour, alpha=0.15, linewidth=0)
    if metric == "loss_over_baseline":
      ax.axhline(1.0, color="black", linestyle="--", linewidth=1,
                 label="memoryless baseline")
    if log:
      ax.set_yscale("log")
    ax.set_title(f"lag {lag}", fontsize=10)
    ax.set_xlabel("sequences seen")
    ax.grid(True, which="both", alpha=0.3)
  for ax in axes.flat[len(lags):]:
    ax.set_visible(False)
  for ax in axes[:, 0]:
    ax.set_ylabel(f"eval {metric} (median, min-max)")
  axes.flat[0].legend(fontsize=7)
  seeds = sorted({c["seeds"] for _, _, c in found})
  count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
  fig.suptitle(f"{title}, over {count} seeds", fontsize=10)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
  return True

"""Memory-horizon search: per model, the largest lag that at least a given
fraction of the seeds solve within the budget, found by growing the lag
geometrically and then bisecting.

A horizon config (``configs/sweeps/horizon_<name>.py``) has::

    base          an experiment config (lstm_jax.config.default_config);
                  base.budget_sequences is the budget at start_lag
    models        list of {label, and overrides of base.model fields, e.g. cell}
    num_seeds     seeds per point (trained together, one program)
    metric        summary metric reported and plotted against lag ("accuracy")
    start_lag     first lag tried (integer >= 1)
    growth        factor of the growth phase (> 1)
    max_lag       largest lag tried (integer >= start_lag)
    resolution    bisection stops when failed / solved <= 1 + resolution (>= 0)
    threshold     a lag is solved when its solved fraction is >= threshold, (0, 1]
    budget_rule   "constant" or "linear" (see budget_for)
    max_budget    cap of the linear budget in sequences (0: no cap)

The search rule, per model (a pure function of the evidence so far, a dict
``{lag: solved fraction}``; :func:`next_lag`, :func:`horizon_of`):

1. Growth. Try ``L_0 = start_lag``, then ``L_{k+1} = min(max_lag,
   max(L_k + 1, round(L_k * growth)))`` (round half up) while every lag tried
   is solved (solved fraction >= ``threshold``).
   - ``start_lag`` fails: the horizon is **none** (below ``start_lag``).
   - ``max_lag`` is solved: the horizon is **>= max_lag** (not bounded).
2. Bisection. With ``s`` the last solved lag and ``f`` the first failed lag
   of the growth phase, while ``f / s > 1 + resolution`` and ``f - s > 1``:
   try ``m = round(sqrt(s * f))`` (the geometric midpoint, rounded half up,
   kept inside ``[s + 1, f - 1]``); ``s = m`` if ``m`` is solved, else
   ``f = m``. The horizon is the final ``s``: solved at ``s``, failed at
   ``f``, with ``f <= s * (1 + resolution)`` or ``f = s + 1``
   (``resolution=0``: the exact boundary, to one step).

Every lag is tried once; the evidence decides the next lag, so the search is
deterministic and a rerun over the same evidence (finished points reloaded
from their ``summary.json``) continues where it stopped. Bisection assumes
solving gets no easier as the lag grows; where a model's evidence is not
monotone the horizon is that of the bracket the search followed.

``run_horizon(config, workdir)`` runs every point through
:func:`lstm_jax.sweep.run_point` (run directories ``workdir/<label>_lag<lag>``,
as a sweep's) and writes ``horizons.md``, ``horizons.csv``, ``horizons.json``
and ``horizon.png``, and ``diagnostics.png`` when some point's run logged
memory diagnostics (``base.diagnostics.every > 0``;
:func:`lstm_jax.sweep.plot_diagnostics`: every lag tried per model).

Many jobs: a model's next lag depends on its earlier results, so shards split
the models, not the points: ``run_horizon(config, workdir, shard=(i, n))``
searches every ``n``-th model from the ``i``-th
(:func:`lstm_jax.sweep.shard_points` over ``models``) and writes no outputs;
:func:`merge_horizon` replays each model's search over the points the shards
finished and writes the outputs an unsharded search writes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import ml_collections

from lstm_jax import checks
from lstm_jax import config as config_lib
from lstm_jax import devices
from lstm_jax import sweep as sweep_lib
from lstm_jax import workdir as wd

BUDGET_RULES = ("constant", "linear")
SEARCH_FIELDS = ("start_lag", "growth", "max_lag", "resolution", "threshold", "budget_rule",
                 "max_budget")
CONFIG_FIELDS = ("base", "models", "num_seeds", "metric") + SEARCH_FIELDS
COLUMNS = ("model", "order", "lag", "budget_sequences", "seeds", "solved_fraction", "solved",
           "median_sequences_to_criterion", "metric", "median", "min", "max", "wall_time_s")
"""The columns of ``horizons.csv``: one row per point tried, in the order tried
(``order`` counts from 0 per model); ``solved``: solved fraction >= threshold."""


@dataclasses.dataclass(frozen=True)
class Search:
  """The search parameters (see the module docstring), checked when made.

  ``budget_sequences`` is the budget at ``start_lag`` (the base config's).
  Bad values raise :class:`lstm_jax.config.ConfigError` naming the config
  field, the value and what is allowed.
  """
  start_lag: int = 5
  growth: float = 2.0
  max_lag: int = 320
  resolution: float = 0.25
  threshold: float = 0.5
  budget_rule: str = "constant"
  budget_sequences: int = 16_000
  max_budget: int = 0

  def __post_init__(self):
    try:
      start = checks.integer("start_lag", self.start_lag, 1)
      growth = checks.number("growth", self.growth, 1.0, strict=True)
      max_lag = checks.integer("max_lag", self.max_lag, start,
                               meaning=f"at least start_lag={start}")
      resolution = checks.number("resolution", self.resolution, 0.0)
      threshold = checks.number("threshold", self.threshold, 0.0, strict=True)
      if threshold > 1:
        checks.fail("threshold", self.threshold, "expected a number in (0, 1] (a fraction "
                    "of the seeds)")
      checks.choice("budget_rule", self.budget_rule, BUDGET_RULES)
      budget = checks.integer("base.budget_sequences", self.budget_sequences, 1, None)
      max_budget = checks.integer("max_budget", self.max_budget, 0, None)
      if 0 < max_budget < budget:
        checks.fail("max_budget", self.max_budget, "expected 0 (no cap) or an integer >= "
                    f"base.budget_sequences={budget}")
    except ValueError as err:
      raise config_lib.ConfigError(f"config.{err}") from None
    for name, value in (("start_lag", start), ("growth", growth), ("max_lag", max_lag),
                        ("resolution", resolution), ("threshold", threshold),
                        ("budget_sequences", budget), ("max_budget", max_budget)):
      object.__setattr__(self, name, value)

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "Search":
    """The search fields of a horizon config (``budget_sequences`` from ``base``)."""
    return cls(**{name: config[name] for name in SEARCH_FIELDS},
               budget_sequences=config.base.budget_sequences)

  def describe(self) -> str:
    """The search rule and the budget rule in words, with this search's values."""
    budget = budget_text(self)
    return (f"lags from {self.start_lag}, times {self.growth:g} while at least "
            f"{self.threshold:g} of the seeds solve (up to max_lag={self.max_lag}), then "
            f"bisection at the geometric midpoint until failed/solved <= "
            f"{1 + self.resolution:g} or failed = solved + 1; budget: {budget}")


def budget_text(search: Search) -> str:
  """The budget rule in words, e.g. ``linear, ceil(16,000 x lag / 5) sequences, at most
  64,000``."""
  if search.budget_rule == "constant":
    return f"constant, {search.budget_sequences:,} sequences at every lag"
  cap = f", at most {search.max_budget:,}" if search.max_budget else ""
  return (f"linear, ceil({search.budget_sequences:,} x lag / {search.start_lag}) "
          f"sequences{cap}")


def budget_for(lag: int, search: Search) -> int:
  """The training budget (sequences) at ``lag``.

  ``"constant"``: ``budget_sequences``. ``"linear"``: ``ceil(budget_sequences
  * lag / start_lag)``, then at most ``max_budget`` when that is > 0 (a lag
  below ``start_lag`` would get less than ``budget_sequences``; the search
  never tries one).
  """
  if search.budget_rule == "constant":
    return search.budget_sequences
  budget = -(-search.budget_sequences * lag // search.start_lag)  # exact integer ceil
  return min(budget, search.max_budget) if search.max_budget else budget


def grow(lag: int, search: Search) -> int:
  """The growth phase's lag after ``lag``: ``min(max_lag, max(lag + 1,
  round(lag * growth)))``, rounded half up."""
  return min(search.max_lag, max(lag + 1, math.floor(lag * search.growth + 0.5)))


def midpoint(solved: int, failed: int) -> int:
  """The bisection's next lag between ``solved`` and ``failed`` (``failed -
  solved >= 2``): ``sqrt(solved * failed)`` rounded half up (exact integer
  arithmetic), kept inside ``[solved + 1, failed - 1]``."""
  product = solved * failed
  root = math.isqrt(product)
  if 4 * product >= (2 * root + 1) ** 2:  # sqrt(product) >= root + 1/2
    root += 1
  return min(failed - 1, max(solved + 1, root))


def close_enough(solved: int, failed: int, search: Search) -> bool:
  """Whether the bisection stops: ``failed <= solved * (1 + resolution)`` or
  ``failed - solved <= 1``."""
  return failed - solved <= 1 or failed <= solved * (1 + search.resolution)


@dataclasses.dataclass(frozen=True)
class Horizon:
  """The result of a search.

  ``kind``: ``"bounded"`` (solved at ``solved``, failed at ``failed``),
  ``"none"`` (``start_lag`` failed: ``failed`` is it, ``solved`` is None),
  ``"unbounded"`` (``max_lag`` solved: ``solved`` is it, ``failed`` is None) or
  ``"open"`` (the evidence does not finish the search yet; ``solved`` /
  ``failed``: the bracket so far, or None).
  """
  kind: str
  solved: int | None = None
  failed: int | None = None

  @property
  def lag(self) -> int | None:
    """The horizon as a number: the largest lag the search found solved
    (``max_lag`` for ``"unbounded"``; None for ``"none"`` and ``"open"``)."""
    return self.solved if self.kind in ("bounded", "unbounded") else None

  def __str__(self) -> str:
    if self.kind == "bounded":
      return str(self.solved)
    if self.kind == "unbounded":
      return f">= {self.solved}"
    if self.kind == "none":
      return "none"
    return "open"

  def explain(self) -> str:
    """The horizon with the evidence that bounds it, in words."""
    if self.kind == "bounded":
      return f"{self.solved} (solved at lag {self.solved}, failed at lag {self.failed})"
    if self.kind == "unbounded":
      return f">= {self.solved} (solved at every lag tried, up to max_lag={self.solved})"
    if self.kind == "none":
      return f"none (failed at the first lag, {self.failed})"
    return "open (the search has not finished)"

  def to_json(self) -> dict[str, Any]:
    return {"horizon": str(self), "kind": self.kind, "lag": self.lag,
            "solved_lag": self.solved, "failed_lag": self.failed}


def _replay(evidence: Mapping[int, float], search: Search) -> tuple[list[int], int | None,
                                                                    Horizon]:
  """Follow the search rule over ``evidence``: the lags it tried (in order),
  the next lag to try (None when finished) and the horizon (``"open"`` until
  finished). Evidence at lags off the search's path is ignored."""
  path: list[int] = []
  solved = lambda lag: evidence[lag] >= search.threshold
  lag, last_solved = search.start_lag, None
  while True:  # growth
    if lag not in evidence:
      return path, lag, Horizon("open", last_solved, None)
    path.append(lag)
    if not solved(lag):
      break
    last_solved = lag
    if lag >= search.max_lag:
      return path, None, Horizon("unbounded", lag, None)
    lag = grow(lag, search)
  if last_solved is None:
    return path, None, Horizon("none", None, lag)
  lo, hi = last_solved, lag
  while not close_enough(lo, hi, search):  # bisection
    mid = midpoint(lo, hi)
    if mid not in evidence:
      return path, mid, Horizon("open", lo, hi)
    path.append(mid)
    if solved(mid):
      lo = mid
    else:
      hi = mid
  return path, None, Horizon("bounded", lo, hi)


def next_lag(evidence: Mapping[int, float], search: Search) -> int | None:
  """The next lag to try given ``evidence`` (``{lag: solved fraction}`` of
  the lags tried so far), or None when the search is finished (see the
  module docstring for the rule)."""
  return _replay(evidence, search)[1]


def horizon_of(evidence: Mapping[int, float], search: Search) -> Horizon:
  """The horizon ``evidence`` establishes (``kind="open"`` while
  :func:`next_lag` still has a lag to try)."""
  return _replay(evidence, search)[2]


def search_path(evidence: Mapping[int, float], search: Search) -> list[int]:
  """The lags of ``evidence`` the search tried, in the order it tried them."""
  return _replay(evidence, search)[0]


# ----------------------------------------------------------------------------
# Running a search.


def _check_config(config: ml_collections.ConfigDict) -> Search:
  """Every field of a horizon config, checked before anything trains:
  the search fields, ``num_seeds``, ``metric``, the models (unique labels
  and run directories, model fields only) and the point configs at
  ``start_lag`` and at ``max_lag`` with their budgets (the extremes of what
  the search can try)."""
  missing = [name for name in CONFIG_FIELDS if name not in config]
  if missing:
    raise config_lib.ConfigError(
        f"horizon config has no field {missing[0]!r}; a horizon config has: "
        f"{', '.join(CONFIG_FIELDS)}")
  search = Search.of(config)
  try:
    checks.integer("num_seeds", config.num_seeds, 1)
    if not isinstance(config.metric, str) or not config.metric:
      checks.fail("metric", config.metric, "expected the name of a summary metric, "
                  "e.g. 'accuracy'")
  except ValueError as err:
    raise config_lib.ConfigError(f"config.{err}") from None
  models = config.models
  if not isinstance(models, (list, tuple)) or not models:
    raise config_lib.ConfigError(f"config.models={models!r} is not allowed; expected a "
                                 "non-empty list of {label, model-field overrides}")
  labels = []
  for m in models:
    if (not isinstance(m, (Mapping, ml_collections.ConfigDict))
        or not isinstance(m.get("label"), str) or not m["label"]):
      raise config_lib.ConfigError(f"config.models entry {m!r} is not allowed; expected a "
                                   "dict with a non-empty string 'label'")
    labels.append(m["label"])
    for key in m:
      if key != "label" and key not in config.base.model:
        raise config_lib.ConfigError(
            f"config.models[{m['label']!r}].{key} is not allowed; expected label or a "
            f"model field: {', '.join(sorted(config.base.model.keys()))}")
  dirs = [os.path.basename(sweep_lib.point_dir("", label, 0)) for label in labels]
  if len(set(dirs)) != len(dirs):
    raise config_lib.ConfigError(f"config.models labels={labels} are not allowed; expected "
                                 "distinct labels that stay distinct as directory names "
                                 "(characters other than letters, digits, '-_.' become '_')")
  for m in models:
    for lag in dict.fromkeys((search.start_lag, search.max_lag)):
      point = point_config(config, m, lag, search)
      try:
        config_lib.build(point)
      except config_lib.ConfigError as err:
        raise config_lib.ConfigError(
            f"horizon point {m['label']} lag={lag} (budget {point.budget_sequences:,}): "
            f"{err}") from None
  return search


def point_config(config: ml_collections.ConfigDict, model: Mapping[str, Any], lag: int,
                 search: Search) -> ml_collections.ConfigDict:
  """The run config of one point: the sweep's (``base`` with the model's
  overrides, ``lag``, ``num_seeds``) with the budget :func:`budget_for` gives."""
  c = sweep_lib.point_config(config, model, lag)
  c.budget_sequences = budget_for(lag, search)
  return c


def run_horizon(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
                force: bool = False, shard: tuple[int, int] = sweep_lib.WHOLE
                ) -> dict[str, dict[str, Any]]:
  """Search each model's memory horizon; write the tables, the JSON and the plot.

  Per model, in the config's order: ask :func:`next_lag`, run or load that
  point (:func:`lstm_jax.sweep.run_point`), add its solved fraction to the
  evidence, until the search finishes. The outputs are rewritten after each
  model's search. Every field is checked before the first point trains;
  a finished point whose saved config differs (e.g. another budget) raises
  :class:`lstm_jax.workdir.WorkdirError`. ``force``: run points whose memory
  estimate says they do not fit.

  ``shard=(index, count)``: search only that shard's models
  (:func:`lstm_jax.sweep.shard_points` over ``config.models``, round-robin:
  a model's lags depend on its earlier results, so a model's whole search
  stays in one shard) and, with ``count > 1``, write no outputs; the shards
  may share ``workdir`` (each point has its own run directory) and
  :func:`merge_horizon` writes the outputs when all have finished.

  Returns:
    ``{label: {"horizon": Horizon, "rows": [row, ...]}}`` for the models
    searched, rows (the :data:`COLUMNS`) in the order tried.
  """
  search = _check_config(config)
  index, count = sweep_lib.check_shard(*shard)
  wd.ensure_dir(workdir)
  results: dict[str, dict[str, Any]] = {}
  for m in sweep_lib.shard_points(list(config.models), index, count):
    results[m["label"]], _ = _search_model(config, m, search, lambda name: workdir,
                                           progress=progress, force=force)
    if count == 1:
      write_results(results, workdir, config, search)
  return results


def _search_model(config: ml_collections.ConfigDict, m: Mapping[str, Any], search: Search,
                  locate: Callable[[str], str | None], *, progress: bool = True,
                  force: bool = False) -> tuple[dict[str, Any], int | None]:
  """One model's search: ``({"horizon", "rows"}, None)`` when it finished,
  else the evidence so far (horizon ``"open"``) and the lag it stopped at.

  ``locate(run directory name)``: the workdir to run or load the point in,
  or ``None`` to stop the search there (a point no shard has finished)."""
  evidence: dict[int, float] = {}
  rows = []
  while (lag := next_lag(evidence, search)) is not None:
    point = point_config(config, m, lag, search)
    where = locate(sweep_lib.point_name(m["label"], lag))
    if where is None:
      return {"horizon": horizon_of(evidence, search), "rows": rows}, lag
    row = sweep_lib.run_point(point, m["label"], where, config.metric, progress=progress,
                              force=force, check_saved=True)
    _check_metric(row, sweep_lib.point_dir(where, m["label"], lag), config.metric)
    evidence[lag] = row["solved_fraction"]
    if progress:
      print(f"horizon search {m['label']}: lag {lag}, budget {point.budget_sequences:,} "
            f"sequences: solved by {row['solved_fraction']:.2f} of the seeds",
            file=sys.stderr, flush=True)
    rows.append({**row, "order": len(rows), "budget_sequences": point.budget_sequences,
                 "solved": row["solved_fraction"] >= search.threshold})
  return {"horizon": horizon_of(evidence, search), "rows": rows}, None


class Merged(NamedTuple):
  """What :func:`merge_horizon` found: the results (as :func:`run_horizon`
  returns them; an unfinished model's horizon is ``"open"`` with the
  evidence found), per model whose search is not finished the next lag it
  needs, whether the outputs were written, and per point read (run
  directory name) the workdir it was read from."""
  results: dict[str, dict[str, Any]]
  missing: dict[str, int]
  written: bool
  sources: dict[str, str]


def merge_horizon(config: ml_collections.ConfigDict, workdir: str,
                  sources: Sequence[str] = (), *, partial: bool = False) -> Merged:
  """The outputs of a search whose models ran in shards; trains nothing.

  Per model, the search rule is replayed over the finished points found (by
  run directory name) in ``workdir`` and then each of ``sources`` (the first
  holding a point finished wins), loaded as :func:`run_horizon` loads them
  (a differing saved config raises :class:`lstm_jax.workdir.WorkdirError`).
  A model is missing when the rule asks for a lag no source has finished.
  With none missing, ``workdir`` gets the files :func:`run_horizon` writes
  (:func:`write_results`), equal to an unsharded search's. With some
  missing, nothing is written unless ``partial``: then those models appear
  with horizon "open" and the lags found so far.
  """
  search = _check_config(config)
  dirs = list(dict.fromkeys([workdir, *sources]))
  found: dict[str, str] = {}

  def locate(name: str) -> str | None:
    source = sweep_lib.finished_in(name, dirs)
    if source is not None:
      found[name] = source
    return source

  results: dict[str, dict[str, Any]] = {}
  missing: dict[str, int] = {}
  for m in config.models:
    results[m["label"]], lag = _search_model(config, m, search, locate, progress=False)
    if lag is not None:
      missing[m["label"]] = lag
  written = partial or not missing
  if written:
    wd.ensure_dir(workdir)
    write_results(results, workdir, config, search,
                  run_dirs={name: os.path.join(d, name) for name, d in found.items()})
  return Merged(results, missing, written, found)


def _check_metric(row: dict[str, Any], path: str, metric: str) -> None:
  """A metric missing from a point's summary (NaN at every seed) is a config error."""
  if math.isnan(row["median"]) and math.isnan(row["min"]):
    with open(os.path.join(path, "summary.json")) as f:
      names = sorted({k for p in json.load(f)["per_seed"] for k in p["metrics"]})
    if names and metric not in names:
      raise config_lib.ConfigError(
          f"config.metric={metric!r} is not allowed; expected one of the run's metrics: "
          f"{', '.join(map(repr, names))} (the finished points are kept)")


# ----------------------------------------------------------------------------
# Outputs.


def horizons_markdown(results: Mapping[str, Mapping[str, Any]],
                      config: ml_collections.ConfigDict, search: Search) -> str:
  """``horizons.md``: the search rule, one line per model with its horizon,
  and per model the evidence table in the order tried."""
  metric, seeds = config.metric, config.num_seeds
  lines = [f"# Memory horizons: {config.base.task}", "",
           f"Horizon: the largest lag at which at least {search.threshold:g} of "
           f"{seeds} seeds meet the task's criterion within the budget.", "",
           f"Search: {search.describe()}.", ""]
  for label, result in results.items():
    lines.append(f"- **{label}**: {result['horizon'].explain()}")
  for label, result in results.items():
    lines += ["", f"## {label}: horizon {result['horizon']}", "",
              f"| lag | budget (sequences) | solved (of {seeds} seeds) | median sequences "
              f"to criterion | final {metric}: median [min, max] |",
              "|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
      med = r["median_sequences_to_criterion"]
      lines.append(f"| {r['lag']} | {r['budget_sequences']:,} | {r['solved_fraction']:.2f} | "
                   f"{'-' if med is None else f'{med:,.0f}'} | "
                   f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] |")
  return "\n".join(lines) + "\n"


def horizons_json(results: Mapping[str, Mapping[str, Any]],
                  config: ml_collections.ConfigDict, search: Search) -> dict[str, Any]:
  """``horizons.json``: the search parameters and rule, and per model the
  horizon and the evidence rows in the order tried."""
  params = dataclasses.asdict(search)
  return {"task": config.base.task, "metric": config.metric, "num_seeds": config.num_seeds,
          "search": params, "rule": search.describe(),
          "models": {label: {**r["horizon"].to_json(), "evidence": r["rows"]}
                     for label, r in results.items()}}


def write_results(results: Mapping[str, Mapping[str, Any]], workdir: str,
                  config: ml_collections.ConfigDict, search: Search,
                  run_dirs: Mapping[str, str] | None = None) -> None:
  """Write ``horizons.md``, ``horizons.csv``, ``horizons.json`` and
  ``horizon.png``, each atomically (a temporary file renamed), and
  ``diagnostics.png`` when some point logged diagnostics. ``run_dirs``: per
  point name, its run directory when not ``workdir/<name>`` (a merge of
  shards in other workdirs, :func:`merge_horizon`)."""
  if not devices.is_primary():  # several processes: process 0 writes the tables
    return
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore")
  writer.writeheader()
  for result in results.values():
    writer.writerows(result["rows"])
  wd.write_text_atomic(os.path.join(workdir, "horizons.csv"), table.getvalue())
  wd.write_text_atomic(os.path.join(workdir, "horizons.md"),
                       horizons_markdown(results, config, search))
  wd.write_text_atomic(os.path.join(workdir, "horizons.json"),
                       json.dumps(horizons_json(results, config, search), indent=1) + "\n")
  plot(results, os.path.join(workdir, "horizon.png"), config, search)
  names = [(label, r["lag"], sweep_lib.point_name(label, r["lag"]))
           for label, result in results.items() for r in result["rows"]]
  entries = [(label, lag, (run_dirs or {}).get(name, os.path.join(workdir, name)))
             for label, lag, name in names]
  sweep_lib.plot_diagnostics(entries, os.path.join(workdir, "diagnostics.png"),
                             f"{config.base.task}: memory diagnostics")


def plot(results: Mapping[str, Mapping[str, Any]], path: str,
         config: ml_collections.ConfigDict, search: Search) -> None:
  """Metric against lag (log x), one line per model over the lags tried
  (median, min-max band), the horizon a dashed vertical line in the model's
  colour (a '>' marker at max_lag when not bounded)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for label, result in results.items():
    rs = sorted(result["rows"], key=lambda r: r["lag"])
    lags = [r["lag"] for r in rs]
    h = result["horizon"]
    (line,) = ax.plot(lags, [r["median"] for r in rs], marker="o",
                      label=f"{label} (horizon {h})")
    ax.fill_between(lags, [r["min"] for r in rs], [r["max"] for r in rs],
                    color=line.get_color(), alpha=0.15, linewidth=0)
    if h.kind == "bounded":
      ax.axvline(h.solved, color=line.get_color(), linestyle="--", linewidth=1)
    elif h.kind == "unbounded":
      ax.axvline(h.solved, color=line.get_color(), linestyle="--", linewidth=1)
      top = max(r["median"] for r in rs if r["lag"] == h.solved)
      ax.plot([h.solved], [top], marker=">", markersize=10, color=line.get_color())
  ax.set_xscale("log")
  ax.set_xlabel("lag (time steps)")
  ax.set_ylabel(f"held-out {config.metric} (median, min-max over seeds)")
  ax.set_title(f"{config.base.task}: memory horizons (dashed), budget {search.budget_rule}",
               fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)

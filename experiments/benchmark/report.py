"""The report of :func:`~experiments.benchmark.harness.run_benchmark`: header,
Markdown table, loss check and JSON file.

Table columns, per shape and implementation: sequences/s with ``(+-x%)``,
half the min-max spread over rounds relative to the median; ``x torch`` and
``x linen``, this implementation's sequences/s over the peer's (above 1:
faster than the peer); GFLOP/s = FLOPs * (sequences/s) / B / 1e9 (FLOPs:
:mod:`experiments.benchmark.shapes`); compile time, the first call minus the
median steady step; peak MiB (:mod:`experiments.benchmark.memory`); the loss.
"""

from __future__ import annotations

import math
import os
from typing import Any

from lstm_jax.workdir import write_json_atomic

from experiments.benchmark.implementations import CEILING


def _finite_or_none(value: Any) -> Any:
  """``value`` with every NaN or infinite float replaced by ``None`` (JSON ``null``)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_or_none(v) for v in value]
  return value


def write_json(report: dict[str, Any], path: str) -> None:
  """Write ``report`` to ``path`` atomically (NaN as ``null``), creating parent directories."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_json_atomic(path, _finite_or_none(report))


def num(value: float | None, digits: int = 3) -> str:
  """``value`` to ``digits`` significant digits (whole, comma-grouped, from 100 up);
  ``-`` if missing."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if abs(value) >= 100:
    return f"{value:,.0f}"
  return f"{value:.{digits}g}"


def ratio(value: float | None) -> str:
  """A ratio with two decimals; ``-`` if missing."""
  return "-" if value is None else f"{value:.2f}"


def mib(value: int | None) -> str:
  """Bytes as MiB with one decimal; ``-`` if missing."""
  return "-" if value is None else f"{value / 2**20:.1f}"


def _seq(mode: dict[str, Any]) -> str:
  if math.isfinite(mode.get("spread", float("nan"))):
    return f"{num(mode['seq_per_s'])} (+-{mode['spread'] * 100:.0f}%)"
  return num(mode.get("seq_per_s"))


def environment_line(env: dict[str, Any], title: str, versions: str) -> str:
  """``"<title> on <platform> (...), float32; jax ..., <versions>; XLA_FLAGS=...; ..."``:
  where a report was measured, from :func:`~experiments.benchmark.harness.environment`."""
  return (f"{title} on {env['platform']} ({env['device_kind']}, {env['cores']} cores "
          f"visible), {env['dtype']}; jax {env['jax']}, {versions}; "
          f"XLA_FLAGS={env['xla_flags'] or '(default)'}; "
          f"{env.get('host_memory', 'default host allocator settings')}; 1-min load average "
          f"{num(env.get('load_avg_start'))} at start, {num(env.get('load_avg_end'))} at end.")


def header(report: dict[str, Any]) -> str:
  """The lines above the table: where and how it was measured."""
  env, st = report["environment"], report["settings"]
  torch_part = (f"torch {env['torch']} on {env['torch_device']} ({env['torch_threads']} threads,"
                " subprocess)" if "torch" in env else "torch: not run")
  return "\n".join([
      environment_line(env, "LSTM throughput", f"flax {env['flax']}, {torch_part}"),
      f"Medians of {st['rounds']} round-robin rounds; sequences/s (+- half the min-max spread "
      "over rounds). train = forward + gradient w.r.t. params of mean(ys**2); ratios = "
      "seq/s / peer's seq/s.",
      "GFLOP/s: forward 2BT(I+H)4H, train 2BT4H(2I+3H) (matmuls only); ceiling = lax.scan of "
      "only h@W [B,H]x[H,4H] (forward 2BTH4H, train 3x).",
      "compile = first call - steady step (torch: first-call overhead); peak MiB: XLA temp "
      "buffers (memory_analysis), torch peak RSS growth (CUDA: max_memory_allocated).",
      "Measured on this platform; the same script runs unchanged on GPU (torch then on CUDA).",
  ])


def markdown_table(report: dict[str, Any]) -> str:
  """One row per shape and implementation (``ceiling`` last per shape), then the skipped."""
  cols = ["shape", "impl", "train seq/s", "train x torch", "train x linen", "train GFLOP/s",
          "fwd seq/s", "fwd x torch", "fwd x linen", "fwd GFLOP/s",
          "compile s (train/fwd)", "peak MiB (train/fwd)", "loss"]
  lines = ["| " + " | ".join(cols) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
  for res in report["results"]:
    s = res["shape"]
    shape_text = f"({s['B']}, {s['T']}, {s['I']}, {s['H']})"
    for name, entry in res["implementations"].items():
      tr, fw = entry["train"], entry["forward"]
      label = "ceiling (h@W only)" if name == CEILING else name
      loss = "-" if name == CEILING else f"{entry['loss']:.6g}"
      lines.append("| " + " | ".join([
          shape_text, label,
          _seq(tr), ratio(tr.get("ratio_torch")), ratio(tr.get("ratio_flax_linen")),
          num(tr["gflop_per_s"]),
          _seq(fw), ratio(fw.get("ratio_torch")), ratio(fw.get("ratio_flax_linen")),
          num(fw["gflop_per_s"]),
          f"{num(tr['compile_s'], 2)} / {num(fw['compile_s'], 2)}",
          f"{mib(tr['peak_bytes'])} / {mib(fw['peak_bytes'])}",
          loss,
      ]) + " |")
    for name, reason in res.get("skipped", {}).items():
      lines.append(f"| {shape_text} | {name} | skipped: {reason} |" + " |" * (len(cols) - 3))
  return "\n".join(lines)


def notes(report: dict[str, Any]) -> str:
  """Per-shape check that every implementation computed the same loss."""
  out = []
  for res in report["results"]:
    diff = res.get("loss_max_rel_diff")
    if diff is not None:
      flag = "" if diff < 1e-4 else "  <-- implementations DISAGREE"
      out.append(f"- {res['label']}: largest relative loss difference to ours: {diff:.1e}{flag}")
  return "\n".join(out)

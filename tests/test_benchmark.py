"""Tests of experiments/benchmark/ on tiny shapes (no timing asserts).

They check the report's structure and arithmetic (ratios, FLOPs, JSON, table)
and that the implementations compared do the same work (same loss, same
gradients for the same parameters); never which one is faster.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax
from experiments import benchmark as bm
from experiments.benchmark import torch_worker
from lstm_jax import interop

TINY = bm.Shape(2, 5, 3, 4)
FAST = dict(rounds=1, target_s=0.0, max_iters=2, settle_s=0.0)
MODE_KEYS = {"seq_per_s", "per_round_seq_per_s", "spread", "iters", "step_s", "gflop_per_s",
             "first_call_s", "compile_s", "peak_bytes", "memory"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"
  rep = bm.run_benchmark([TINY], ("ours", "flax_linen", "ceiling"), json_path=str(path),
                         **FAST)
  return rep, path


def test_report_has_every_implementation_and_key(report):
  rep, _ = report
  assert set(rep) == {"environment", "settings", "results"}
  assert rep["environment"]["platform"] == jax.devices()[0].platform
  assert rep["environment"]["dtype"] == "float32"
  (res,) = rep["results"]
  assert res["shape"] == {"B": 2, "T": 5, "I": 3, "H": 4}
  assert list(res["implementations"]) == ["ours", "flax_linen", "ceiling"]
  for name, entry in res["implementations"].items():
    for mode in bm.MODES:
      m = entry[mode]
      assert MODE_KEYS <= set(m), (name, mode, MODE_KEYS - set(m))
      assert m["seq_per_s"] > 0
      assert len(m["per_round_seq_per_s"]) == 1 and m["per_round_seq_per_s"][0] > 0
      assert 1 <= m["iters"] <= 2
      assert m["compile_s"] >= 0 and m["first_call_s"] > 0
      assert m["peak_bytes"] is None or m["peak_bytes"] >= 0
      expected = bm.flops(name, TINY, mode) * m["seq_per_s"] / TINY.B / 1e9
      assert m["gflop_per_s"] == pytest.approx(expected)


def test_ratios_are_seq_per_s_over_the_peers(report):
  rep, _ = report
  impls = rep["results"][0]["implementations"]
  for mode in bm.MODES:
    linen = impls["flax_linen"][mode]["seq_per_s"]
    for name in ("ours", "flax_linen"):
      m = impls[name][mode]
      assert m["ratio_flax_linen"] == pytest.approx(m["seq_per_s"] / linen)
      assert m["ratio_torch"] is None  # torch was not run
    assert impls["flax_linen"][mode]["ratio_flax_linen"] == pytest.approx(1.0)
    assert "ratio_torch" not in impls["ceiling"][mode]


def test_same_loss_reported_by_ours_and_linen(report):
  rep, _ = report
  res = rep["results"][0]
  impls = res["implementations"]
  assert impls["ours"]["loss"] == pytest.approx(impls["flax_linen"]["loss"], rel=1e-5)
  assert res["loss_max_rel_diff"] < 1e-5


def test_json_written_and_loadable(report):
  rep, path = report
  loaded = json.loads(path.read_text())
  assert loaded["settings"]["rounds"] == 1
  got = loaded["results"][0]["implementations"]
  want = rep["results"][0]["implementations"]
  for name in want:
    for mode in bm.MODES:
      assert got[name][mode]["seq_per_s"] == pytest.approx(want[name][mode]["seq_per_s"])


def test_markdown_table_lists_every_implementation(report):
  rep, _ = report
  table = bm.markdown_table(rep)
  lines = table.splitlines()
  assert lines[0].startswith("| shape | impl | train seq/s")
  assert len(lines) == 2 + 3
  for name in ("ours", "flax_linen", "ceiling"):
    assert any(f"| {name}" in line for line in lines[2:]), name
  assert "cpu" in bm.header(rep) or jax.devices()[0].platform in bm.header(rep)


def test_implementations_compute_the_same_loss_and_gradients():
  """Same params -> same loss and grads in ours (fused), ours_split (B=3 over the
  test process's 2 devices), ours_scan, ours_remat, flax linen and nnx."""
  shape = bm.Shape(3, 6, 2, 5)
  params, xs = bm.make_problem(shape, seed=1)
  impls = {n: bm.build_jax_impl(n, shape, params, xs) for n in bm.JAX_IMPLS}
  losses = {n: float(i.fns["forward"](*i.args)) for n, i in impls.items()}
  for name, value in losses.items():
    assert value == pytest.approx(losses["ours"], rel=1e-6), name
  # The linen params are exactly ours converted (forget bias 0, no offset at run time).
  linen_vars = impls["flax_linen"].args[0]
  back = interop.from_flax_lstm(linen_vars)
  for k in params:
    np.testing.assert_array_equal(np.asarray(back[k]), params[k])
  grads = {n: i.fns["train"](*i.args) for n, i in impls.items()}
  ours = grads["ours"]
  for name in ("ours_split", "ours_auto", "ours_scan", "ours_remat"):
    for k in ("w_x", "w_h", "b"):
      np.testing.assert_allclose(grads[name][k], ours[k], rtol=1e-5, atol=1e-7)
  linen = interop.from_flax_lstm(grads["flax_linen"])
  nnx_g = grads["flax_nnx"]["cell"]
  nnx_flat = {"w_x": nnx_g["dense_i"]["kernel"][...], "w_h": nnx_g["dense_h"]["kernel"][...],
              "b": nnx_g["dense_h"]["bias"][...]}
  for k in ("w_x", "w_h", "b"):
    np.testing.assert_allclose(linen[k], ours[k], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nnx_flat[k], ours[k], rtol=1e-5, atol=1e-7)


def test_ours_auto_splits_the_batch_where_a_run_would():
  """B=8, T=100, I=8, H=64: 6 * 800 * (8 + 64) * 256 = 88 MFLOP per training step,
  44 per device with 4 rows each, above devices.SPLIT_MIN_FLOPS: split over the
  two test devices. The tiny shape stays on one."""
  from lstm_jax import devices  # pylint: disable=import-outside-toplevel
  assert devices.SPLIT_MIN_FLOPS <= 44e6 and devices.SPLIT_MIN_ROWS <= 4
  for shape, used in ((bm.Shape(8, 100, 8, 64), 2), (bm.Shape(3, 6, 2, 5), 1)):
    params, xs = bm.make_problem(shape)
    impl = bm.build_jax_impl("ours_auto", shape, params, xs)
    assert len(impl.args[1].sharding.device_set) == used, shape


def test_flop_formulas():
  s = bm.Shape(3, 7, 5, 11)
  fwd = 2 * 3 * 7 * (5 + 11) * 4 * 11
  assert bm.model_flops(s, "forward") == fwd
  # forward + weight gradients (x and h) + gradient w.r.t. h_prev
  assert bm.model_flops(s, "train") == fwd + fwd + 2 * 3 * 7 * 11 * 4 * 11
  assert bm.ceiling_flops(s, "train") == 3 * bm.ceiling_flops(s, "forward") \
      == 3 * 2 * 3 * 7 * 11 * 4 * 11
  with pytest.raises(ValueError):
    bm.model_flops(s, "backward")


def test_parse_shapes():
  assert bm.parse_shapes("32x100x8x128, 1X1000x8x64") == [bm.Shape(32, 100, 8, 128),
                                                          bm.Shape(1, 1000, 8, 64)]
  for bad in ("32x100x8", "axbxcxd", "", "0x1x1x1"):
    with pytest.raises(ValueError):
      bm.parse_shapes(bad)


def test_main_skips_torch_when_missing(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(torch_worker, "torch_available", lambda: False)
  path = tmp_path / "b.json"
  rc = bm.main(["--quick", "--quiet", "--shapes=2x3x2x3", "--impls=ours,torch",
                "--rounds=1", "--max_iters=1", f"--json={path}"])
  out = capsys.readouterr().out
  assert rc == 0
  assert bm.TORCH_MISSING in out
  assert "| ours |" in out
  res = json.loads(path.read_text())["results"][0]
  assert list(res["implementations"]) == ["ours"]
  assert res["skipped"] == {"torch": bm.TORCH_MISSING}
  assert res["implementations"]["ours"]["train"]["ratio_torch"] is None


def test_main_rejects_bad_flags(capsys):
  assert bm.main(["--impls=ours,tensorflow"]) == 2
  assert bm.main(["--shapes=1x2x3"]) == 2
  assert bm.main(["--torch_threads=-1"]) == 2
  assert "error:" in capsys.readouterr().err


def test_torch_subprocess_round_robin(torch):
  del torch  # only needs to be installed: the benchmark runs it in a subprocess
  res = bm.run_shape(TINY, ("ours", "torch"), torch_threads=1, **FAST)
  assert res["skipped"] == {}
  impls = res["implementations"]
  assert list(impls) == ["ours", "torch"]
  assert impls["torch"]["threads"] == 1
  assert impls["torch"]["loss"] == pytest.approx(impls["ours"]["loss"], rel=1e-5)
  for mode in bm.MODES:
    t, o = impls["torch"][mode], impls["ours"][mode]
    assert MODE_KEYS <= set(t)
    assert t["seq_per_s"] > 0 and t["peak_bytes"] >= 0
    assert t["ratio_torch"] == pytest.approx(1.0)
    assert o["ratio_torch"] == pytest.approx(o["seq_per_s"] / t["seq_per_s"])
    assert o["ratio_flax_linen"] is None  # linen was not run
  table = bm.markdown_table({"results": [res]})
  assert "| torch |" in table and "| ours |" in table


def test_cudnn_weights_match_ours_through_the_reference_lstm():
  """Our parameters packed for jax.experimental.rnn give our outputs through its
  pure-JAX reference (lstm_ref), so the GPU-only cuDNN row uses the same model."""
  from jax.experimental import rnn as jrnn
  shape = bm.Shape(3, 5, 2, 4)
  params, xs = bm.make_problem(shape, seed=2)
  flat = bm.cudnn_weights(params)
  assert flat.shape == (jrnn.get_num_params_in_lstm(shape.I, shape.H, 1, False),)
  w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(jnp.asarray(flat), shape.I, shape.H, 1,
                                                    False)
  zeros = jnp.zeros((1, shape.B, shape.H))
  ys, _, _ = jrnn.lstm_ref(jnp.asarray(xs), zeros, zeros, w_ih, w_hh, b_ih, b_hh,
                           jnp.full((shape.B,), shape.T, jnp.int32), shape.I, shape.H, 1,
                           0.0, False)
  ours, _ = lstm_jax.rnn(bm.bench_cell(shape), {k: jnp.asarray(v) for k, v in params.items()},
                         jnp.asarray(xs))
  np.testing.assert_allclose(ys, ours, rtol=1e-5, atol=1e-6)


def test_cudnn_row_runs_on_gpu_and_is_skipped_with_a_message_elsewhere():
  res = bm.run_shape(TINY, ("ours", "jax_cudnn"), **FAST)
  platform = jax.devices()[0].platform
  if platform == "gpu":
    assert res["implementations"]["jax_cudnn"]["loss"] == pytest.approx(
        res["implementations"]["ours"]["loss"], rel=1e-4)
  else:
    assert list(res["implementations"]) == ["ours"]
    assert "cuDNN" in res["skipped"]["jax_cudnn"] and platform in res["skipped"]["jax_cudnn"]
    table = bm.markdown_table({"results": [res], "environment": {}})
    assert "| jax_cudnn | skipped: " in table


def test_grids_cover_every_axis_value_and_the_corners():
  axes = bm.GRID_AXES
  full = bm.grid_shapes("full")
  assert len(full) == len(set(full)) == 7 * 2 * 3 * 6
  cover = bm.grid_shapes("cover")
  assert len(cover) == len(set(cover)) and set(cover) <= set(full)
  for name, values in axes.items():
    assert sorted({getattr(s, name) for s in cover}) == sorted(values), name
  # The small-small and large-large corner of every pair of axes.
  for a in "BTIH":
    for b in "BTIH":
      for pick in (min, max):
        assert any(getattr(s, a) == pick(axes[a]) and getattr(s, b) == pick(axes[b])
                   for s in cover), (a, b, pick.__name__)
  # The experiments' plane: every batch size with every hidden size at T=100, I=8.
  plane = {(s.B, s.H) for s in cover if (s.T, s.I) == (100, 8)}
  assert plane == {(b, h) for b in axes["B"] for h in axes["H"]}
  assert bm.grid_shapes("quick") == [bm.Shape(1, 4, 1, 2), bm.Shape(3, 6, 2, 5)]
  gpu = bm.grid_shapes("gpu")
  assert len(gpu) == 12 and set(gpu) <= set(full)
  assert {s.T for s in gpu} == {100, 1000} and {s.B for s in gpu} == {1, 32, 256}
  with pytest.raises(ValueError, match=r"--grid='huge'; allowed: cover, full, gpu, quick"):
    bm.grid_shapes("huge")


def test_config_shapes_are_the_configs_batches():
  import importlib  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  from lstm_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  rows = bm.config_shapes()
  stems = sorted(p.stem for p in (pathlib.Path(bm.__file__).parents[2] / "configs").glob("*.py")
                 if p.stem != "__init__")
  named = [n for s in rows for n in s.name.split(", ")]
  assert sorted(named) == stems and len(set(rows)) == len(rows)
  by_name = {n: s for s in rows for n in s.name.split(", ")}
  for stem in ("copy", "hs3b", "hs2c"):  # T and I read off a sampled batch
    cfg = importlib.import_module(f"configs.{stem}").get_config(None)
    task, _, _ = config_lib.build(cfg)
    batch = task.sample(jax.random.key(0), 1)
    _, t, i = batch.inputs.shape
    assert by_name[stem] == bm.Shape(cfg.batch_size, t, i, cfg.model.hidden_size)
  assert by_name["hs3a"] is by_name["hs3c"]  # one row for configs of the same shape


def _grid_entry(ratio_torch, ratio_linen, step_s):
  return {mode: {"ratio_torch": ratio_torch, "ratio_flax_linen": ratio_linen,
                 "step_s": step_s} for mode in bm.MODES}


def test_grid_summary_minimum_geometric_mean_and_small_batch_cost():
  def res(b, t, entry, name=""):
    shape = bm.Shape(b, t, 1, 2, name=name)
    return {"shape": shape.as_dict(), "name": name, "label": shape.label,
            "implementations": {"ours": entry}}
  report = {"results": [
      res(1, 10, _grid_entry(2.0, 1.5, 1e-4)),       # 10 us per step
      res(4, 10, _grid_entry(0.5, 1.2, 1.5e-4)),     # 15 us: 1.5x B=1
      res(8, 10, _grid_entry(1.0, None, 2.5e-4)),    # 25 us: 2.5x B=1
      res(8, 20, _grid_entry(4.0, 2.0, 1e-3), "cfg"),  # no B=1 at T=20
  ]}
  summary = bm.grid_summarise(report)
  for mode in bm.MODES:
    torch_r, linen_r = summary["ratios"][mode]["torch"], summary["ratios"][mode]["flax_linen"]
    assert torch_r["n"] == 4 and torch_r["min"] == 0.5
    assert torch_r["min_at"] == "B=4 T=10 I=1 H=2"
    assert torch_r["geomean"] == pytest.approx((2.0 * 0.5 * 1.0 * 4.0) ** 0.25)
    assert torch_r["below_target"] == ["B=4 T=10 I=1 H=2"]  # 1.0 meets the 1.0x target
    assert linen_r["n"] == 3 and linen_r["geomean"] == pytest.approx((1.5 * 1.2 * 2.0) ** (1 / 3))
    assert linen_r["below_target"] == ["B=4 T=10 I=1 H=2"]
    small = summary["small_batch"][mode]
    assert small["n"] == 2 and small["max"] == pytest.approx(2.5)
    assert small["max_at"] == "B=8 T=10 I=1 H=2" and small["above_target"] == [small["max_at"]]
  table = bm.grid_table(report).splitlines()
  assert table[2] == "| (1, 10, 1, 2) |  | 10.0 | 2.00 | 1.50 | 10.0 | 2.00 | 1.50 |"
  assert table[4] == "| (8, 10, 1, 2) |  | 25.0 | 1.00 | - | 25.0 | 1.00 | - |"
  assert table[5] == "| (8, 20, 1, 2) | cfg | 50.0 | 4.00 | 2.00 | 50.0 | 4.00 | 2.00 |"
  text = bm.grid_summary_text(summary)
  assert "train, ours / torch: min 0.50 (at B=4 T=10 I=1 H=2), geometric mean 1.41" in text
  assert "1 below the target 1.0x" in text and "max 2.50x (at B=8 T=10 I=1 H=2)" in text


def test_main_runs_a_grid(tmp_path, capsys):
  path = tmp_path / "grid.json"
  rc = bm.main(["--grid=quick", "--quick", "--quiet",
                "--impls=ours_auto,ours,flax_linen,ceiling",
                "--rounds=1", "--max_iters=1", f"--json={path}"])
  out = capsys.readouterr().out
  assert rc == 0
  assert "| shape | config | train us/step | train x torch | train x linen |" in out
  # A row the grid table leaves out (here the ceiling): the full table follows.
  assert "| shape | impl | train seq/s |" in out and "| ceiling (h@W only) |" in out
  assert "| (1, 4, 1, 2) |  |" in out and "| (3, 6, 2, 5) |  |" in out
  assert "train, ours_auto / flax linen: min" in out and "over 2 shapes" in out
  assert "train, ours / flax linen: min" in out
  results = json.loads(path.read_text())["results"]
  assert [r["shape"] for r in results] == [s.as_dict() for s in bm.grid_shapes("quick")]
  assert bm.main(["--grid=huge"]) == 2
  assert bm.main(["--grid", "--shapes=1x2x3x4"]) == 2
  err = capsys.readouterr().err
  assert "--grid='huge'; allowed" in err and "give one of them" in err


def test_main_runs_the_cells_in_every_form(tmp_path, capsys):
  """--cells --quick through the CLI: a row per cell and form with finite positive
  timings, the scan/parallel and x LSTM ratios, and the same loss in every form."""
  path = tmp_path / "cells.json"
  rc = bm.main(["--cells", "--quick", "--quiet", "--cell_names=gru,mingru,slstm,mlstm",
                "--rounds=1", "--max_iters=1", f"--json={path}"])
  out = capsys.readouterr().out
  assert rc == 0
  assert "| shape | cell | form | train us/step |" in out
  assert "| shape | cell | heads | auto | train best | train scan/par |" in out
  loaded = json.loads(path.read_text())
  assert loaded["settings"]["cells"] == ["vanilla", "gru", "mingru", "slstm", "mlstm"]
  (res,) = loaded["results"]
  assert res["shape"] == dict(zip("BTIH", bm.QUICK_CELL_SHAPES[0]))
  cells = res["cells"]
  assert sorted(cells) == sorted(loaded["settings"]["cells"])
  assert res["lstm_form"] == "fused"
  for name, c in cells.items():
    assert c["skipped"] == {}, name
    assert sorted(c["forms"]) == sorted(bm.CELL_FORMS[name]), name
    for form, entry in c["forms"].items():
      assert f"| {name} | {form}" in out, (name, form)
      assert np.isfinite(entry["loss"])
      for mode in bm.MODES:
        m = entry[mode]
        assert m["step_s"] > 0 and np.isfinite(m["step_s"]), (name, form, mode)
        assert m["us_per_step"] == pytest.approx(m["step_s"] / res["shape"]["T"] * 1e6)
        assert m["x_lstm"] > 0 and m["scan_over"] > 0 and m["compile_s"] > 0
    for mode in bm.MODES:
      assert c["best"][mode] in c["forms"]
      assert c["best_x_lstm"][mode] > 0
      if len(c["forms"]) > 1:
        other = c["forms"]["fused" if name == "vanilla" else "parallel"][mode]
        assert c["scan_over_parallel"][mode] == pytest.approx(
            c["forms"]["scan"][mode]["step_s"] / other["step_s"])
        assert c["loss_max_rel_diff"] < 1e-4
      else:
        assert c["scan_over_parallel"][mode] is None
  assert cells["mlstm"]["num_heads"] == 1 and cells["gru"]["num_heads"] is None
  assert bm.main(["--cells", "--cell_names=lstm9"]) == 2
  assert bm.main(["--cells", "--impls=ours"]) == 2
  assert bm.main(["--cell_names=gru"]) == 2
  assert "error:" in capsys.readouterr().err


def test_cells_skip_a_form_over_the_memory_budget():
  shape = bm.Shape(2, 6, 3, 4)
  xs = jnp.zeros((shape.B, shape.T, shape.I))
  builders = {"mingru/scan": lambda: bm.cell_impl("mingru", "scan", shape, xs)}
  results, skipped = bm.time_jax(shape, builders, rounds=1, target_s=0.0, max_iters=1,
                                 settle_s=0.0, max_bytes=16)
  assert results == {} and "over the 1.49e-08 GiB budget" in skipped["mingru/scan"]


def test_cell_defaults():
  assert [bm.xlstm_heads(h) for h in (4, 32, 64, 100, 128)] == [1, 1, 2, 2, 4]
  assert bm.parse_cell_names("mlstm, gru") == ["vanilla", "mlstm", "gru"]
  shapes = bm.cells_default_shapes()
  assert [(s.B, s.T, s.I, s.H) for s in shapes[:3]] == list(bm.LONG_CELL_SHAPES)
  assert {"adding", "copy"} <= {s.name for s in shapes}

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
  for name in ("ours_split", "ours_scan", "ours_remat"):
    for k in ("w_x", "w_h", "b"):
      np.testing.assert_allclose(grads[name][k], ours[k], rtol=1e-5, atol=1e-7)
  linen = interop.from_flax_lstm(grads["flax_linen"])
  nnx_g = grads["flax_nnx"]["cell"]
  nnx_flat = {"w_x": nnx_g["dense_i"]["kernel"][...], "w_h": nnx_g["dense_h"]["kernel"][...],
              "b": nnx_g["dense_h"]["bias"][...]}
  for k in ("w_x", "w_h", "b"):
    np.testing.assert_allclose(linen[k], ours[k], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nnx_flat[k], ours[k], rtol=1e-5, atol=1e-7)


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

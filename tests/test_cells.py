"""Cells of ``lstm_jax.cells`` against an independent NumPy (float64) reference.

The reference below is written gate by gate from the papers, with its own
description of every named variant (``SPECS``), and never calls ``lstm_jax``:

* Hochreiter & Schmidhuber 1997 (no forget gate), Gers et al. 2000 (forget
  gate), Gers & Schmidhuber 2000 (peepholes: i, f see c_prev, o sees new c);
* Greff et al. 2017: NIG i=1, NFG f=1, NOG o=1, NIAF g=z_g, NOAF h=o*c, NP no
  peepholes, CIFG f=1-i, FGR previous [i, f, o] @ W_gates added to i, f, o;
* Ba et al. 2016 eq. 20-22 layer norm; Sak et al. 2014 LSTMP h=(o*tanh c) W_proj;
* GRU in the torch convention (r, z, n; b_hn inside r * (...)); Elman tanh RNN.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax
from lstm_jax import LSTMState, LSTMVariant, VARIANTS, lstm_gates, make_cell

B, I, H, P = 2, 3, 4, 2
EPS = 1e-5
TOL = dict(rtol=1e-5, atol=1e-5)

# ----------------------------------------------------------------------------
# Independent description of the named variants.

_BASE = dict(i=True, f="learned", o=True, g_act="tanh", h_act="tanh", peep=False,
             fgr=False, ln=False, proj=False)


def _spec(**kw):
  return {**_BASE, **kw}


SPECS = {
    "vanilla": _spec(),
    "lstm1997": _spec(f="none"),
    "peephole": _spec(peep=True),
    "nig": _spec(peep=True, i=False),
    "nfg": _spec(peep=True, f="none"),
    "nog": _spec(peep=True, o=False),
    "niaf": _spec(peep=True, g_act="identity"),
    "noaf": _spec(peep=True, h_act="identity"),
    "np": _spec(),
    "cifg": _spec(peep=True, f="coupled"),
    "fgr": _spec(peep=True, fgr=True),
    "layernorm": _spec(ln=True),
    "lstmp": _spec(proj=True),
}
LSTM_NAMES = list(SPECS)
LSTMGatesFields = ("i", "f", "g", "o", "c", "h")
ALL_NAMES = LSTM_NAMES + ["gru", "elman"]


def gate_blocks(spec):
  """Gate blocks present in the fused kernels, documented order i, f, g, o."""
  out = []
  if spec["i"]:
    out.append("i")
  if spec["f"] == "learned":
    out.append("f")
  out.append("g")
  if spec["o"]:
    out.append("o")
  return out


def test_specs_cover_every_named_variant():
  assert set(SPECS) == set(VARIANTS)
  # minGRU and minLSTM have their own reference in tests/test_mincells.py,
  # sLSTM and mLSTM in tests/test_xlstm.py.
  assert (set(ALL_NAMES) | set(lstm_jax.MIN_CELLS) | set(lstm_jax.cells.XLSTM_CELLS)
          == set(lstm_jax.CELL_NAMES))


# ----------------------------------------------------------------------------
# NumPy reference.


def np_sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def np_ln_stats(v):
  mu = v.mean(axis=-1, keepdims=True)
  var = ((v - mu) ** 2).mean(axis=-1, keepdims=True)
  return mu, var


def ref_lstm_step(spec, per, p, h_prev, c_prev, gates_prev, x):
  """One step of the LSTM described by ``spec``; ``per[n]`` holds gate ``n``'s
  own weights ``wx [I, H]``, ``wh [R, H]``, ``b [H]``. Returns a dict of every
  intermediate value."""
  hsz = c_prev.shape[-1]
  blocks = gate_blocks(spec)
  zx = {n: x @ per[n]["wx"] for n in blocks}
  zh = {n: h_prev @ per[n]["wh"] for n in blocks}
  if spec["ln"]:
    # LN over the whole concatenated G*H pre-activation vector, gain only.
    def normalise(zd, gain):
      mu, var = np_ln_stats(np.concatenate([zd[n] for n in blocks], axis=-1))
      return {n: gain[k * hsz:(k + 1) * hsz] * (zd[n] - mu) / np.sqrt(var + EPS)
              for k, n in enumerate(blocks)}
    zx, zh = normalise(zx, p["ln_x"]), normalise(zh, p["ln_h"])
  z = {n: zx[n] + zh[n] + per[n]["b"] for n in blocks}
  if spec["fgr"]:
    for k, n in enumerate(("i", "f", "o")):
      z[n] = z[n] + gates_prev @ p["w_gates"][:, k * hsz:(k + 1) * hsz]
  peep = p["w_peep"] if spec["peep"] else np.zeros((3, hsz))
  ones = np.ones_like(c_prev)
  i = np_sigmoid(z["i"] + peep[0] * c_prev) if spec["i"] else ones
  if spec["f"] == "learned":
    f = np_sigmoid(z["f"] + peep[1] * c_prev)
  elif spec["f"] == "coupled":
    f = 1.0 - i
  else:
    f = ones
  g = np.tanh(z["g"]) if spec["g_act"] == "tanh" else z["g"]
  c = f * c_prev + i * g
  o = np_sigmoid(z["o"] + peep[2] * c) if spec["o"] else ones
  if spec["ln"]:
    mu, var = np_ln_stats(c)
    c_out = p["ln_c"] * (c - mu) / np.sqrt(var + EPS) + p["ln_c_bias"]
  else:
    c_out = c
  h = o * (np.tanh(c_out) if spec["h_act"] == "tanh" else c_out)
  if spec["proj"]:
    h = h @ p["w_proj"]
  return dict(i=i, f=f, g=g, o=o, c=c, h=h, z_g=z["g"],
              gates=np.concatenate([i, f, o], axis=-1) if spec["fgr"] else None)


def ref_gru_step(per, b_hn, h_prev, x):
  r = np_sigmoid(x @ per["r"]["wx"] + per["r"]["b"] + h_prev @ per["r"]["wh"])
  u = np_sigmoid(x @ per["z"]["wx"] + per["z"]["b"] + h_prev @ per["z"]["wh"])
  n = np.tanh(x @ per["n"]["wx"] + per["n"]["b"] + r * (h_prev @ per["n"]["wh"] + b_hn))
  return (1.0 - u) * n + u * h_prev


def ref_elman_step(w_x, w_h, b, h_prev, x):
  out = np.empty((x.shape[0], w_x.shape[1]))
  for bb in range(x.shape[0]):
    for j in range(w_x.shape[1]):
      out[bb, j] = np.tanh(x[bb] @ w_x[:, j] + h_prev[bb] @ w_h[:, j] + b[j])
  return out


# ----------------------------------------------------------------------------
# Random parameters (NumPy float64) in the documented layout.


def make_lstm_params(rng, spec, scale=0.5, in_size=I, hsz=H):
  """Per-gate weights and the fused library layout built from them."""
  r = P if spec["proj"] else hsz
  blocks = gate_blocks(spec)
  per = {n: dict(wx=rng.normal(size=(in_size, hsz)) * scale,
                 wh=rng.normal(size=(r, hsz)) * scale,
                 b=rng.normal(size=(hsz,)) * scale) for n in blocks}
  p = {"w_x": np.concatenate([per[n]["wx"] for n in blocks], axis=1),
       "w_h": np.concatenate([per[n]["wh"] for n in blocks], axis=1),
       "b": np.concatenate([per[n]["b"] for n in blocks])}
  if spec["peep"]:
    p["w_peep"] = rng.normal(size=(3, hsz)) * scale
  if spec["fgr"]:
    p["w_gates"] = rng.normal(size=(3 * hsz, 3 * hsz)) * scale
  if spec["ln"]:
    g_h = len(blocks) * hsz
    p["ln_x"] = 1.0 + rng.normal(size=(g_h,)) * 0.5
    p["ln_h"] = 1.0 + rng.normal(size=(g_h,)) * 0.5
    p["ln_c"] = 1.0 + rng.normal(size=(hsz,)) * 0.5
    p["ln_c_bias"] = rng.normal(size=(hsz,)) * 0.5
  if spec["proj"]:
    p["w_proj"] = rng.normal(size=(hsz, P)) * scale
  return per, p


def make_gru_params(rng, scale=0.5):
  per = {n: dict(wx=rng.normal(size=(I, H)) * scale, wh=rng.normal(size=(H, H)) * scale,
                 b=rng.normal(size=(H,)) * scale) for n in ("r", "z", "n")}
  b_hn = rng.normal(size=(H,)) * scale
  p = {"w_x": np.concatenate([per[n]["wx"] for n in "rzn"], axis=1),
       "w_h": np.concatenate([per[n]["wh"] for n in "rzn"], axis=1),
       "b": np.concatenate([per[n]["b"] for n in "rzn"]), "b_hn": b_hn}
  return per, p


def make_elman_params(rng, scale=0.5):
  return {"w_x": rng.normal(size=(I, H)) * scale, "w_h": rng.normal(size=(H, H)) * scale,
          "b": rng.normal(size=(H,)) * scale}


def to_jnp(tree, dtype=jnp.float32):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def cell_for(name):
  return make_cell(name, H, proj_size=P if name == "lstmp" else 0)


def random_lstm_carry(rng, spec, scale=0.5):
  r = P if spec["proj"] else H
  h0 = rng.normal(size=(B, r)) * scale
  c0 = rng.normal(size=(B, H))
  g0 = rng.uniform(0.05, 0.95, size=(B, 3 * H)) if spec["fgr"] else None
  return h0, c0, g0


def assert_close(got, expected, what, tol=TOL):
  np.testing.assert_allclose(np.asarray(got, np.float64), expected, err_msg=what, **tol)


# ----------------------------------------------------------------------------
# Forward values vs the reference, three chained steps.


@pytest.mark.parametrize("name", LSTM_NAMES)
def test_lstm_steps_match_reference(name):
  spec = SPECS[name]
  rng = np.random.default_rng(100 + LSTM_NAMES.index(name))
  per, p = make_lstm_params(rng, spec)
  h, c, gts = random_lstm_carry(rng, spec)
  xs = rng.normal(size=(3, B, I))
  cell = cell_for(name)
  params = to_jnp(p)
  assert cell.check_params(params) == I
  carry = LSTMState(h=jnp.asarray(h, jnp.float32), c=jnp.asarray(c, jnp.float32),
                    gates=None if gts is None else jnp.asarray(gts, jnp.float32))
  for t in range(3):
    ref = ref_lstm_step(spec, per, p, h, c, gts, xs[t])
    x_t = jnp.asarray(xs[t], jnp.float32)
    # Every intermediate value of the step.
    v = lstm_gates(params, carry, x_t, cell.variant)
    for field in ("i", "f", "g", "o", "c", "h"):
      assert_close(getattr(v, field), ref[field], f"{name} step {t} {field}")
    carry, y = cell.step(params, carry, x_t)
    assert y.shape == (B, cell.output_size)
    assert_close(y, ref["h"], f"{name} step {t} y")
    assert_close(carry.h, ref["h"], f"{name} step {t} carry.h")
    assert_close(carry.c, ref["c"], f"{name} step {t} carry.c")
    if spec["fgr"]:
      assert carry.gates.shape == (B, 3 * H)
      assert_close(carry.gates, ref["gates"], f"{name} step {t} carry.gates")
    else:
      assert carry.gates is None
    h, c, gts = ref["h"], ref["c"], ref["gates"]


def _swap_blocks(p, a, b, order="ifgo", hsz=H):
  """``p`` with gate blocks ``a`` and ``b`` of the fused w_x, w_h and b exchanged."""
  out = dict(p)
  ka, kb = order.index(a), order.index(b)
  for key in ("w_x", "w_h", "b"):
    v = np.array(p[key])
    sa, sb = slice(ka * hsz, (ka + 1) * hsz), slice(kb * hsz, (kb + 1) * hsz)
    v[..., sa], v[..., sb] = p[key][..., sb], p[key][..., sa]
    out[key] = v
  return out


@pytest.mark.parametrize("a, b", [("i", "f"), ("g", "o"), ("i", "g"), ("f", "o")])
def test_fused_gate_blocks_are_read_in_order_i_f_g_o(a, b):
  """The fused kernels hold the blocks in the documented order i, f, g, o: the
  reference, reading them in that order, matches the cell step and the
  sequence layer, and the same parameters with two blocks exchanged give
  clearly different outputs (so a cell reading another order fails)."""
  spec = SPECS["vanilla"]
  rng = np.random.default_rng(31)
  per, p = make_lstm_params(rng, spec)
  # Distinct per-gate biases so that every exchange changes the gates.
  p["b"] = p["b"] + np.repeat([1.5, -1.0, 0.5, 2.5], H)
  for k, n in enumerate("ifgo"):
    per[n]["b"] = p["b"][k * H:(k + 1) * H]
  h, c, _ = random_lstm_carry(rng, spec)
  xs = rng.normal(size=(3, B, I))
  ref_h, ref_c = [], []
  hh, cc = h, c
  for t in range(3):
    ref = ref_lstm_step(spec, per, p, hh, cc, None, xs[t])
    hh, cc = ref["h"], ref["c"]
    ref_h.append(hh)
    ref_c.append(cc)
  ref_h = np.stack(ref_h, axis=1)                       # [B, T, H]
  cell = cell_for("vanilla")

  def run(params):
    carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32), None)
    ys = []
    for t in range(3):
      carry, y = cell.step(params, carry, jnp.asarray(xs[t], jnp.float32))
      ys.append(np.asarray(y, np.float64))
    return np.stack(ys, axis=1), np.asarray(carry.c, np.float64)

  ys, c_last = run(to_jnp(p))
  assert_close(ys, ref_h, "step outputs")
  assert_close(c_last, ref_c[-1], "step final c")
  init = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32), None)
  xs_b = jnp.asarray(np.swapaxes(xs, 0, 1), jnp.float32)
  for impl in ("scan", "fused"):
    ys_rnn, final = lstm_jax.rnn(cell, to_jnp(p), xs_b, init, impl=impl)
    assert_close(ys_rnn, ref_h, f"rnn impl={impl} outputs")
    assert_close(final.c, ref_c[-1], f"rnn impl={impl} final c")
  swapped, swapped_c = run(to_jnp(_swap_blocks(p, a, b)))
  assert np.max(np.abs(swapped - ref_h)) > 0.05 or np.max(np.abs(swapped_c - ref_c[-1])) > 0.05


CUSTOM = [
    (LSTMVariant(peepholes=True, layer_norm=True), _spec(peep=True, ln=True)),
    (LSTMVariant(forget_gate="coupled", layer_norm=True, output_activation="identity"),
     _spec(f="coupled", ln=True, h_act="identity")),
    (LSTMVariant(input_gate=False, input_activation="identity", peepholes=True),
     _spec(i=False, g_act="identity", peep=True)),
    (LSTMVariant(gate_recurrence=True), _spec(fgr=True)),
    (LSTMVariant(peepholes=True, gate_recurrence=True, forget_gate="learned"),
     _spec(peep=True, fgr=True, proj=True)),
    (LSTMVariant(output_gate=False, forget_gate="none", layer_norm=True),
     _spec(o=False, f="none", ln=True, proj=True)),
]


@pytest.mark.parametrize("k", range(len(CUSTOM)))
def test_custom_variant_steps_match_reference(k):
  variant, spec = CUSTOM[k]
  rng = np.random.default_rng(200 + k)
  per, p = make_lstm_params(rng, spec)
  h, c, gts = random_lstm_carry(rng, spec)
  xs = rng.normal(size=(3, B, I))
  cell = make_cell(variant, H, proj_size=P if spec["proj"] else 0)
  params = to_jnp(p)
  assert cell.check_params(params) == I
  carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32),
                    None if gts is None else jnp.asarray(gts, jnp.float32))
  for t in range(3):
    ref = ref_lstm_step(spec, per, p, h, c, gts, xs[t])
    carry, y = cell.step(params, carry, jnp.asarray(xs[t], jnp.float32))
    assert_close(y, ref["h"], f"custom {k} step {t} h")
    assert_close(carry.c, ref["c"], f"custom {k} step {t} c")
    if spec["fgr"]:
      assert_close(carry.gates, ref["gates"], f"custom {k} step {t} gates")
    h, c, gts = ref["h"], ref["c"], ref["gates"]


def test_gru_steps_match_reference():
  rng = np.random.default_rng(7)
  per, p = make_gru_params(rng)
  h = rng.normal(size=(B, H)) * 0.5
  xs = rng.normal(size=(3, B, I))
  cell = make_cell("gru", H)
  params = to_jnp(p)
  assert cell.check_params(params) == I
  carry = jnp.asarray(h, jnp.float32)
  for t in range(3):
    h = ref_gru_step(per, p["b_hn"], h, xs[t])
    carry, y = cell.step(params, carry, jnp.asarray(xs[t], jnp.float32))
    assert_close(carry, h, f"gru step {t} carry")
    assert_close(y, h, f"gru step {t} y")


def test_gru_reset_gate_acts_after_recurrent_matmul():
  """b_hn is scaled by r: the torch/cuDNN form, not Cho et al.'s r * h_prev."""
  rng = np.random.default_rng(8)
  per, p = make_gru_params(rng)
  p["b_hn"] = rng.normal(size=(H,)) * 3.0
  h = np.zeros((B, H))  # with h = 0 only b_hn separates the two forms
  x = rng.normal(size=(B, I))
  expected = ref_gru_step(per, p["b_hn"], h, x)
  r = np_sigmoid(x @ per["r"]["wx"] + per["r"]["b"])
  u = np_sigmoid(x @ per["z"]["wx"] + per["z"]["b"])
  n_other = np.tanh(x @ per["n"]["wx"] + per["n"]["b"] + p["b_hn"])
  other = (1 - u) * n_other
  assert not np.allclose(expected, other, atol=1e-3)
  assert not np.allclose(r, 1.0)
  got, _ = make_cell("gru", H).step(to_jnp(p), jnp.zeros((B, H)), jnp.asarray(x, jnp.float32))
  assert_close(got, expected, "gru with h=0")


def test_elman_steps_match_reference():
  rng = np.random.default_rng(9)
  p = make_elman_params(rng)
  h = rng.normal(size=(B, H)) * 0.5
  xs = rng.normal(size=(3, B, I))
  cell = make_cell("elman", H)
  params = to_jnp(p)
  assert cell.check_params(params) == I
  carry = jnp.asarray(h, jnp.float32)
  for t in range(3):
    h = ref_elman_step(p["w_x"], p["w_h"], p["b"], h, xs[t])
    carry, y = cell.step(params, carry, jnp.asarray(xs[t], jnp.float32))
    assert_close(carry, h, f"elman step {t} carry")
    assert_close(y, h, f"elman step {t} y")


@pytest.mark.parametrize("name", ["vanilla", "layernorm"])
def test_lstm_without_bias(name):
  spec = SPECS[name]
  rng = np.random.default_rng(11)
  per, p = make_lstm_params(rng, spec)
  for n in per:
    per[n]["b"] = np.zeros(H)
  del p["b"]
  h, c, _ = random_lstm_carry(rng, spec)
  x = rng.normal(size=(B, I))
  cell = make_cell(name, H, use_bias=False)
  params = to_jnp(p)
  assert cell.check_params(params) == I
  assert "b" not in cell.init(jax.random.key(0), I)
  carry, y = cell.step(params, LSTMState(jnp.asarray(h, jnp.float32),
                                         jnp.asarray(c, jnp.float32)),
                       jnp.asarray(x, jnp.float32))
  ref = ref_lstm_step(spec, per, p, h, c, None, x)
  assert_close(y, ref["h"], f"{name} no bias h")
  assert_close(carry.c, ref["c"], f"{name} no bias c")


def test_batch_shape_free_step():
  """The step works on extra leading batch axes (``[..., I]``)."""
  spec = SPECS["peephole"]
  rng = np.random.default_rng(12)
  per, p = make_lstm_params(rng, spec)
  x = rng.normal(size=(2, B, I))
  cell = make_cell("peephole", H)
  carry = cell.initial_state((2, B))
  assert carry.h.shape == (2, B, H) and carry.c.shape == (2, B, H)
  carry, y = cell.step(to_jnp(p), carry, jnp.asarray(x, jnp.float32))
  for k in range(2):
    ref = ref_lstm_step(spec, per, p, np.zeros((B, H)), np.zeros((B, H)), None, x[k])
    assert_close(y[k], ref["h"], f"batch slice {k}")


@pytest.mark.parametrize("name", ["fgr", "layernorm", "lstmp", "gru", "elman"])
def test_unbatched_step_matches_batched(name):
  cell = cell_for(name)
  params = cell.init(jax.random.key(5), I)
  x = jnp.asarray(np.random.default_rng(13).normal(size=(B, I)), jnp.float32)
  carry, y = cell.step(params, cell.initial_state(B), x)
  carry1, y1 = cell.step(params, cell.initial_state(), x[1])
  assert y1.shape == (cell.output_size,)
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y[1]), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(carry1), jax.tree_util.tree_leaves(carry)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b[1]), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# Gradients in float64.


def _x64_args(rng, name):
  if name == "gru":
    _, p = make_gru_params(rng)
    carry = rng.normal(size=(B, H)) * 0.5
  elif name == "elman":
    p = make_elman_params(rng)
    carry = rng.normal(size=(B, H)) * 0.5
  else:
    spec = SPECS[name]
    _, p = make_lstm_params(rng, spec)
    h, c, g = random_lstm_carry(rng, spec)
    carry = LSTMState(h, c, g)
  x = rng.normal(size=(B, I))
  return to_jnp(p, jnp.float64), to_jnp(carry, jnp.float64), jnp.asarray(x, jnp.float64)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_step_check_grads_float64(name):
  rng = np.random.default_rng(21)
  cell = cell_for(name)
  with jax.enable_x64(True):
    params, carry, x = _x64_args(rng, name)
    new_carry, y = cell.step(params, carry, x)
    assert y.dtype == jnp.float64
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(new_carry))
    check_grads(cell.step, (params, carry, x), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", ["peephole", "fgr", "layernorm", "lstmp", "gru"])
def test_step_check_grads_second_order(name):
  rng = np.random.default_rng(22)
  cell = cell_for(name)
  with jax.enable_x64(True):
    params, carry, x = _x64_args(rng, name)
    check_grads(lambda p, x_: cell.step(p, carry, x_)[1], (params, x), order=2,
                modes=("rev",))


# ----------------------------------------------------------------------------
# Each variant's defining property, read off lstm_gates.


def _gates_for(name, rng=None, scale=0.5, params_override=None):
  spec = SPECS[name]
  rng = rng or np.random.default_rng(31)
  per, p = make_lstm_params(rng, spec, scale=scale)
  if params_override:
    p.update(params_override)
  h, c, g = random_lstm_carry(rng, spec)
  x = rng.normal(size=(B, I))
  carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32),
                    None if g is None else jnp.asarray(g, jnp.float32))
  v = lstm_gates(to_jnp(p), carry, jnp.asarray(x, jnp.float32), VARIANTS[name])
  return v, spec, per, p, (h, c, g, x)


@pytest.mark.parametrize("name", ["lstm1997", "nfg"])
def test_no_forget_gate_means_f_is_one(name):
  v, spec, per, p, (h, c, g, x) = _gates_for(name)
  np.testing.assert_array_equal(np.asarray(v.f), np.ones((B, H)))
  # c = c_prev + i * g (nothing is forgotten).
  assert_close(v.c, c + np.asarray(v.i, np.float64) * np.asarray(v.g, np.float64), name)
  assert VARIANTS[name].forget_gate == "none"


def test_nig_input_gate_is_one():
  v, *_ = _gates_for("nig")
  np.testing.assert_array_equal(np.asarray(v.i), np.ones((B, H)))
  assert not np.allclose(np.asarray(v.f), 1.0)


def test_nog_output_gate_is_one():
  v, *_ = _gates_for("nog")
  np.testing.assert_array_equal(np.asarray(v.o), np.ones((B, H)))
  np.testing.assert_allclose(np.asarray(v.h), np.tanh(np.asarray(v.c, np.float64)), rtol=1e-6,
                             atol=1e-6)


def test_cifg_forget_is_one_minus_input_exactly():
  v, *_ = _gates_for("cifg")
  i = np.asarray(v.i)
  np.testing.assert_array_equal(np.asarray(v.f), np.float32(1.0) - i)
  assert not np.allclose(i, 0.5, atol=1e-2)


def test_niaf_candidate_is_preactivation():
  v, spec, per, p, (h, c, g, x) = _gates_for("niaf", scale=1.5)
  ref = ref_lstm_step(spec, per, p, h, c, g, x)
  assert_close(v.g, ref["z_g"], "niaf g == z_g", tol=dict(rtol=1e-5, atol=1e-5))
  assert np.max(np.abs(np.asarray(v.g))) > 1.0  # no tanh squashing


def test_noaf_output_is_o_times_c():
  v, *_ = _gates_for("noaf", scale=1.5)
  o, c, h = np.asarray(v.o), np.asarray(v.c), np.asarray(v.h)
  np.testing.assert_array_equal(h, o * c)
  assert not np.allclose(h, o * np.tanh(c), atol=1e-3)


def test_peephole_vs_vanilla():
  rng = np.random.default_rng(41)
  _, p = make_lstm_params(rng, SPECS["peephole"])
  h, c, _ = random_lstm_carry(rng, SPECS["peephole"])
  x = jnp.asarray(rng.normal(size=(B, I)), jnp.float32)
  carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32))
  vanilla_params = to_jnp({k: v for k, v in p.items() if k != "w_peep"})
  van = lstm_gates(vanilla_params, carry, x, VARIANTS["vanilla"])
  peep = lstm_gates(to_jnp(p), carry, x, VARIANTS["peephole"])
  assert np.any(p["w_peep"] != 0)
  for field in ("i", "f", "o", "c", "h"):
    assert not np.allclose(np.asarray(getattr(van, field)), np.asarray(getattr(peep, field)),
                           atol=1e-4), field
  np.testing.assert_array_equal(np.asarray(van.g), np.asarray(peep.g))
  zero = to_jnp({**p, "w_peep": np.zeros((3, H))})
  peep0 = lstm_gates(zero, carry, x, VARIANTS["peephole"])
  for field in LSTMGatesFields:
    np.testing.assert_allclose(np.asarray(getattr(van, field)),
                               np.asarray(getattr(peep0, field)), rtol=1e-7, atol=1e-7,
                               err_msg=field)



def test_peephole_output_gate_sees_new_cell():
  """Only w_peep[2] set: i, f unchanged vs vanilla; o uses the *new* c."""
  rng = np.random.default_rng(42)
  _, p = make_lstm_params(rng, SPECS["peephole"])
  p["w_peep"] = np.zeros((3, H))
  p["w_peep"][2] = 2.0
  h, c, _ = random_lstm_carry(rng, SPECS["peephole"])
  x = rng.normal(size=(B, I))
  carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32))
  v = lstm_gates(to_jnp(p), carry, jnp.asarray(x, jnp.float32), VARIANTS["peephole"])
  z_o = x @ p["w_x"][:, 3 * H:] + h @ p["w_h"][:, 3 * H:] + p["b"][3 * H:]
  c_new = np.asarray(v.c, np.float64)
  assert_close(v.o, np_sigmoid(z_o + 2.0 * c_new), "o peeps at new c")
  assert not np.allclose(np.asarray(v.o), np_sigmoid(z_o + 2.0 * c), atol=1e-3)


def test_fgr_zero_w_gates_reduces_to_peephole():
  rng = np.random.default_rng(43)
  _, p = make_lstm_params(rng, SPECS["fgr"])
  h, c, g = random_lstm_carry(rng, SPECS["fgr"])
  x = jnp.asarray(rng.normal(size=(B, I)), jnp.float32)
  carry = LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32),
                    jnp.asarray(g, jnp.float32))
  peep_params = to_jnp({k: v for k, v in p.items() if k != "w_gates"})
  ref = lstm_gates(peep_params, LSTMState(carry.h, carry.c), x, VARIANTS["peephole"])
  fgr = lstm_gates(to_jnp(p), carry, x, VARIANTS["fgr"])
  assert not np.allclose(np.asarray(fgr.h), np.asarray(ref.h), atol=1e-4)
  fgr0 = lstm_gates(to_jnp({**p, "w_gates": np.zeros((3 * H, 3 * H))}), carry, x,
                    VARIANTS["fgr"])
  for field in LSTMGatesFields:
    np.testing.assert_allclose(np.asarray(getattr(fgr0, field)), np.asarray(getattr(ref, field)),
                               rtol=1e-7, atol=1e-7, err_msg=field)


def test_fgr_carries_previous_gate_activations():
  cell = make_cell("fgr", H)
  params = cell.init(jax.random.key(0), I)
  carry = cell.initial_state(B)
  assert carry.gates.shape == (B, 3 * H)
  x = jnp.asarray(np.random.default_rng(44).normal(size=(B, I)), jnp.float32)
  new, _ = cell.step(params, carry, x)
  v = lstm_gates(params, carry, x, cell.variant)
  np.testing.assert_array_equal(np.asarray(new.gates),
                                np.concatenate([np.asarray(v.i), np.asarray(v.f),
                                                np.asarray(v.o)], axis=-1))


def test_lstmp_projects_output():
  v, spec, per, p, (h, c, g, x) = _gates_for("lstmp")
  assert v.h.shape == (B, P) and v.c.shape == (B, H)
  unproj = np.asarray(v.o, np.float64) * np.tanh(np.asarray(v.c, np.float64))
  assert_close(v.h, unproj @ p["w_proj"], "lstmp h")


def test_layernorm_normalises_cell_before_tanh():
  v, spec, per, p, (h, c, g, x) = _gates_for("layernorm")
  c_new = np.asarray(v.c, np.float64)
  mu, var = np_ln_stats(c_new)
  expected = np.asarray(v.o, np.float64) * np.tanh(
      p["ln_c"] * (c_new - mu) / np.sqrt(var + EPS) + p["ln_c_bias"])
  assert_close(v.h, expected, "layernorm h")
  assert not np.allclose(np.asarray(v.h), np.asarray(v.o) * np.tanh(np.asarray(v.c)),
                         atol=1e-3)


# ----------------------------------------------------------------------------
# Carry dtypes.


U_BF16 = 2.0 ** -8   # bfloat16 unit roundoff: 8 significand bits, round to nearest


def _reference_case(name, rng):
  """Random parameters (float64, library layout), a random carry (NumPy
  arrays in the library's carry structure) and the reference step
  ``(carry, x) -> (carry, y)``."""
  if name in ("gru", "elman"):
    if name == "gru":
      per, p = make_gru_params(rng)
      step = lambda h, x: ref_gru_step(per, p["b_hn"], h, x)           # noqa: E731
    else:
      p = make_elman_params(rng)
      step = lambda h, x: ref_elman_step(p["w_x"], p["w_h"], p["b"], h, x)  # noqa: E731
    return p, rng.normal(size=(B, H)) * 0.5, lambda h, x: (lambda n: (n, n))(step(h, x))
  spec = SPECS[name]
  per, p = make_lstm_params(rng, spec)

  def lstm_step(carry, x):
    ref = ref_lstm_step(spec, per, p, carry.h, carry.c, carry.gates, x)
    return LSTMState(ref["h"], ref["c"], ref["gates"]), ref["h"]
  return p, LSTMState(*random_lstm_carry(rng, spec)), lstm_step


def _rounded(tree, dtype):
  """NumPy float64 values of ``tree`` rounded to ``dtype``."""
  return jax.tree_util.tree_map(lambda a: np.asarray(jnp.asarray(a, dtype), np.float64), tree)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bfloat16_input_keeps_float32_carry(name):
  """A bfloat16 input with float32 parameters promotes to float32 in the
  matmul, so the input's own rounding is the only bfloat16 rounding: the
  outputs equal the reference at the rounded input to float32 accuracy."""
  rng = np.random.default_rng(2)
  p, carry0, ref_step = _reference_case(name, rng)
  cell = cell_for(name)
  params = to_jnp(p)
  carry, ref_carry = to_jnp(carry0), _rounded(carry0, jnp.float32)
  for t in range(2):
    x = jnp.asarray(rng.normal(size=(B, I)), jnp.bfloat16)
    carry, y = cell.step(params, carry, x)
    ref_carry, ref_y = ref_step(ref_carry, np.asarray(x, np.float64))
    assert_close(y, ref_y, f"{name} step {t} y")
    for got, want in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(ref_carry)):
      assert_close(got, want, f"{name} step {t} carry")
  leaves = jax.tree_util.tree_leaves(carry)
  assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves), \
      [leaf.dtype for leaf in leaves]
  assert y.dtype == jnp.float32 and y.shape == (B, cell.output_size)


@pytest.mark.parametrize("name", ["vanilla", "fgr", "layernorm", "lstmp", "gru", "elman"])
def test_bfloat16_carry_stays_bfloat16(name):
  """A bfloat16 carry with float32 parameters and input: the step computes in
  float32 (bfloat16 operands promote) and rounds the new carry and output to
  bfloat16 once, so each differs from the reference at the (rounded) carry by
  at most one rounding, 2^-8 of its value, plus float32 error (1e-5)."""
  rng = np.random.default_rng(3)
  p, carry0, ref_step = _reference_case(name, rng)
  cell = cell_for(name)
  carry = to_jnp(carry0, jnp.bfloat16)
  x = rng.normal(size=(B, I))
  new_carry, y = cell.step(to_jnp(p), carry, jnp.asarray(x, jnp.float32))
  ref_carry, ref_y = ref_step(_rounded(carry0, jnp.bfloat16), x)
  leaves = jax.tree_util.tree_leaves(new_carry)
  assert leaves and all(leaf.dtype == jnp.bfloat16 for leaf in leaves), \
      [leaf.dtype for leaf in leaves]
  assert y.dtype == jnp.bfloat16
  tol = dict(rtol=U_BF16 + 1e-5, atol=1e-6)
  assert_close(y, ref_y, f"{name} y", tol)
  for got, want in zip(leaves, jax.tree_util.tree_leaves(ref_carry)):
    assert_close(got, want, f"{name} carry", tol)
  # The rounding is visible: the output is not the float32 value.
  assert np.abs(np.asarray(y, np.float64) - ref_y).max() > 1e-5


@pytest.mark.parametrize("name", ALL_NAMES)
def test_initial_state_shapes(name):
  cell = cell_for(name)
  carry = cell.initial_state(B)
  if cell.kind == "lstm":
    assert carry.h.shape == (B, P if name == "lstmp" else H)
    assert carry.c.shape == (B, H)
    assert (carry.gates is not None) == SPECS[name]["fgr"]
  else:
    assert carry.shape == (B, H)
  assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree_util.tree_leaves(carry))


# ----------------------------------------------------------------------------
# Validation.


def test_make_cell_unknown_name_lists_allowed():
  with pytest.raises(ValueError, match="allowed") as info:
    make_cell("lstm2000", H)
  message = str(info.value)
  assert "lstm2000" in message
  for name in ALL_NAMES:
    assert name in message


@pytest.mark.parametrize("proj", [H, H + 1])
def test_proj_size_not_smaller_than_hidden(proj):
  with pytest.raises(ValueError, match="proj_size"):
    make_cell("lstmp", H, proj_size=proj)


def test_lstmp_requires_proj_size():
  with pytest.raises(ValueError, match="proj_size"):
    make_cell("lstmp", H)


def test_proj_size_only_for_lstm():
  with pytest.raises(ValueError, match="proj_size"):
    make_cell("gru", H, proj_size=2)


def test_unknown_option():
  with pytest.raises(ValueError, match="forget_biass"):
    make_cell("vanilla", H, forget_biass=1.0)


def test_chrono_needs_t_max():
  with pytest.raises(ValueError, match="chrono_t_max"):
    make_cell("vanilla", H, bias_init="chrono")
  with pytest.raises(ValueError, match="chrono_t_max"):
    make_cell("vanilla", H, bias_init="chrono", chrono_t_max=2)
  cell = make_cell("vanilla", H, bias_init="chrono", chrono_t_max=10)
  assert cell.chrono_t_max == 10


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_hidden_size_must_be_positive_int(bad):
  with pytest.raises(ValueError, match="hidden_size"):
    make_cell("vanilla", bad)


def test_invalid_variant_combinations():
  with pytest.raises(ValueError, match="coupled"):
    LSTMVariant(input_gate=False, forget_gate="coupled")
  with pytest.raises(ValueError, match="gate_recurrence"):
    LSTMVariant(output_gate=False, gate_recurrence=True)
  with pytest.raises(ValueError, match="forget_gate"):
    LSTMVariant(forget_gate="sometimes")
  with pytest.raises(ValueError, match="input_activation"):
    LSTMVariant(input_activation="relu")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_check_params_accepts_own_init(name):
  cell = cell_for(name)
  params = cell.init(jax.random.key(0), I)
  assert cell.check_params(params) == I
  assert cell.check_params(params, I) == I


@pytest.mark.parametrize("name", ["vanilla", "cifg", "fgr", "layernorm", "lstmp", "gru"])
def test_check_params_wrong_shape(name):
  cell = cell_for(name)
  params = dict(cell.init(jax.random.key(0), I))
  params["w_h"] = jnp.zeros((params["w_h"].shape[0] + 1, params["w_h"].shape[1]))
  with pytest.raises(ValueError, match=re.escape("params['w_h']")):
    cell.check_params(params)


@pytest.mark.parametrize("name,key", [("vanilla", "w_h"), ("peephole", "w_peep"),
                                      ("fgr", "w_gates"), ("layernorm", "ln_c_bias"),
                                      ("lstmp", "w_proj"), ("vanilla", "b"), ("cifg", "b"),
                                      ("gru", "b_hn"), ("gru", "b"), ("elman", "b")])
def test_check_params_missing_key(name, key):
  cell = cell_for(name)
  params = dict(cell.init(jax.random.key(0), I))
  del params[key]
  with pytest.raises(ValueError, match=re.escape(f"params[{key!r}]")):
    cell.check_params(params)


@pytest.mark.parametrize("name", ["vanilla", "gru", "elman"])
def test_check_params_extra_key(name):
  cell = cell_for(name)
  params = dict(cell.init(jax.random.key(0), I))
  params["w_peep"] = jnp.zeros((3, H))
  with pytest.raises(ValueError, match=re.escape("params['w_peep']")):
    cell.check_params(params)


@pytest.mark.parametrize("name", ["vanilla", "gru", "elman"])
def test_check_params_bias_given_to_cell_without_bias(name):
  with_bias = dict(cell_for(name).init(jax.random.key(0), I))
  cell = make_cell(name, H, use_bias=False)
  without = cell.init(jax.random.key(0), I)
  assert "b" not in without and "b_hn" not in without
  assert cell.check_params(without) == I
  with pytest.raises(ValueError, match=re.escape("params['b']")):
    cell.check_params({**without, "b": with_bias["b"]})


def test_check_params_input_size_mismatch():
  cell = make_cell("vanilla", H)
  params = cell.init(jax.random.key(0), I)
  with pytest.raises(ValueError, match="input size"):
    cell.check_params(params, I + 1)


def test_check_params_not_a_mapping():
  with pytest.raises(TypeError):
    make_cell("vanilla", H).check_params([1, 2, 3])


def test_cell_is_hashable_and_static():
  a, b = make_cell("cifg", H), make_cell("cifg", H)
  assert a == b and hash(a) == hash(b)
  assert a != make_cell("cifg", H + 1)
  params = a.init(jax.random.key(0), I)
  x = jnp.ones((B, I))
  step = jax.jit(lambda cell, p, c, x_: cell.step(p, c, x_), static_argnums=0)
  _, y = step(a, params, a.initial_state(B), x)
  _, y_eager = a.step(params, a.initial_state(B), x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_eager), rtol=1e-6, atol=1e-6)

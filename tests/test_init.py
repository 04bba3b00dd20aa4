"""Initialisers of ``lstm_jax.init`` (and their use by ``Cell.init``).

Expected values are written out from the sources: Gers et al. 2000 / Jozefowicz
et al. 2015 (forget bias), Tallec & Ollivier 2018 eq. 16 (chrono), Hochreiter &
Schmidhuber 1997 (staircase of negative input/output biases, small uniform
weights), Saxe et al. 2014 (orthogonal recurrent kernels), LeCun et al. 1998,
Glorot & Bengio 2010 and He et al. 2015 (kernel variances 1/fan_in,
2/(fan_in + fan_out), 2/fan_in).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import init as initializers
from lstm_jax import make_cell

H, I, P = 8, 5, 3

# Gate blocks (documented order i, f, g, o, absent gates skipped) per cell name.
BLOCKS = {
    "vanilla": "ifgo", "lstm1997": "igo", "peephole": "ifgo", "nig": "fgo", "nfg": "igo",
    "nog": "ifg", "niaf": "ifgo", "noaf": "ifgo", "np": "ifgo", "cifg": "igo", "fgr": "ifgo",
    "layernorm": "ifgo", "lstmp": "ifgo", "gru": "rzn", "elman": "h",
}
LSTM_NAMES = [n for n in BLOCKS if n not in ("gru", "elman")]


def cell_for(name, **kw):
  return make_cell(name, H, proj_size=P if name == "lstmp" else 0, **kw)


def block(v, k, h=H):
  return np.asarray(v)[..., k * h:(k + 1) * h]


# ----------------------------------------------------------------------------
# Biases.


@pytest.mark.parametrize("forget_bias", [1.0, 2.5, -0.5])
def test_forget_bias_scheme(forget_bias):
  b = np.asarray(initializers.lstm_bias("forget", jax.random.key(0), H,
                                        forget_bias=forget_bias))
  assert b.shape == (4 * H,) and b.dtype == np.float32
  np.testing.assert_array_equal(block(b, 0), 0.0)
  np.testing.assert_allclose(block(b, 1), forget_bias, rtol=1e-7)
  np.testing.assert_array_equal(block(b, 2), 0.0)
  np.testing.assert_array_equal(block(b, 3), 0.0)


@pytest.mark.parametrize("name", LSTM_NAMES)
def test_cell_init_bias_has_forget_bias_only_in_f_block(name):
  cell = cell_for(name, forget_bias=1.75)
  b = np.asarray(cell.init(jax.random.key(3), I)["b"])
  blocks = BLOCKS[name]
  assert b.shape == (len(blocks) * H,)
  for k, gate in enumerate(blocks):
    expected = 1.75 if gate == "f" else 0.0
    np.testing.assert_allclose(block(b, k), expected, err_msg=f"{name} block {gate}")


@pytest.mark.parametrize("name", ["gru", "elman"])
def test_baseline_biases_are_zero(name):
  params = cell_for(name).init(jax.random.key(3), I)
  np.testing.assert_array_equal(np.asarray(params["b"]), np.zeros(len(BLOCKS[name]) * H))
  if name == "gru":
    np.testing.assert_array_equal(np.asarray(params["b_hn"]), np.zeros(H))


@pytest.mark.parametrize("t_max", [3.0, 10.0, 784.0])
def test_chrono_bias(t_max):
  h = 64
  b = np.asarray(initializers.lstm_bias("chrono", jax.random.key(5), h, t_max=t_max),
                 np.float64)
  b_i, b_f, b_g, b_o = (block(b, k, h) for k in range(4))
  lo, hi = math.log(1.0), math.log(t_max - 1.0)
  assert np.all(b_f >= lo - 1e-6) and np.all(b_f <= hi + 1e-6)
  np.testing.assert_array_equal(b_i, -b_f)
  np.testing.assert_array_equal(b_g, 0.0)
  np.testing.assert_array_equal(b_o, 0.0)
  # Random, not constant: log of a uniform over [1, T_max - 1] spreads out.
  assert np.std(b_f) > 0.05 * (hi - lo)
  # The upper part of the range is reached (u near T_max - 1).
  assert np.max(b_f) > math.log(1.0 + 0.75 * (t_max - 2.0))


def test_chrono_bias_via_cell():
  cell = make_cell("vanilla", H, bias_init="chrono", chrono_t_max=50)
  b = np.asarray(cell.init(jax.random.key(2), I)["b"])
  b_i, b_f = block(b, 0), block(b, 1)
  assert np.all((b_f >= 0.0) & (b_f <= math.log(49.0) + 1e-6))
  np.testing.assert_array_equal(b_i, -b_f)
  np.testing.assert_array_equal(block(b, 2), 0.0)
  np.testing.assert_array_equal(block(b, 3), 0.0)


def _ks_uniform(samples, lo, hi):
  """Kolmogorov-Smirnov statistic of ``samples`` against U[lo, hi]."""
  x = np.sort(np.asarray(samples, np.float64))
  cdf = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  n = len(x)
  return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


@pytest.mark.parametrize("t_max", [3.0, 10.0, 784.0])
def test_chrono_forget_bias_is_log_of_a_uniform(t_max):
  """Tallec & Ollivier 2018 eq. 16: exp(b_f) ~ U[1, T_max - 1]. A KS test over
  4,096 units at the 0.1% level (critical value 1.95 / sqrt(n) = 0.030); a
  forget bias uniform on [0, log(T_max - 1)] instead gives D >= 0.09 here."""
  n = 4096
  b = np.asarray(initializers.lstm_bias("chrono", jax.random.key(5), n, t_max=t_max),
                 np.float64)
  b_i, b_f = block(b, 0, n), block(b, 1, n)
  assert _ks_uniform(np.exp(b_f), 1.0, t_max - 1.0) < 1.95 / math.sqrt(n)
  np.testing.assert_array_equal(b_i, -b_f)
  np.testing.assert_array_equal(b[2 * n:], 0.0)


@pytest.mark.parametrize("task, params, max_length", [("copy", dict(lag=5), 25),
                                                      ("hs2c", dict(lag=5, p=3), 96)])
def test_config_chrono_t_max_default_is_three_halves_of_max_length(task, params, max_length):
  """config.build: model.chrono_t_max = 0 means T_max = 1.5 * the task's
  longest sequence (copy: lag + 20 steps; hs2c: q + 3 + 88); a set value is
  kept."""
  from lstm_jax import config as config_lib
  from lstm_jax.tasks import make_task
  assert make_task(task, **params).max_length == max_length
  c = config_lib.default_config()
  c.task, c.lag = task, params["lag"]
  c.task_params.update({k: v for k, v in params.items() if k != "lag"})
  c.model.bias_init = "chrono"
  assert c.model.chrono_t_max == 0.0
  assert config_lib.build(c).model.cell.chrono_t_max == 1.5 * max_length
  c.model.chrono_t_max = 50.0
  assert config_lib.build(c).model.cell.chrono_t_max == 50.0


@pytest.mark.parametrize("t_max", [None, 2.0, 1.0])
def test_chrono_bias_needs_t_max(t_max):
  """The cell checks T_max when it is built (lstm_bias trusts its arguments)."""
  with pytest.raises(ValueError, match="T_max"):
    make_cell("vanilla", H, bias_init="chrono", chrono_t_max=t_max)


def test_hs1997_staircase_h8():
  b = np.asarray(initializers.lstm_bias("hs1997", jax.random.key(0), 8, forget_bias=1.0,
                                        input_step=1.0, output_step=0.5))
  stair = np.array([-1, -1, -2, -2, -3, -3, -4, -4], np.float64)  # 4 blocks of 2 cells
  np.testing.assert_allclose(block(b, 0, 8), stair)
  np.testing.assert_allclose(block(b, 1, 8), 1.0)
  np.testing.assert_array_equal(block(b, 2, 8), 0.0)
  np.testing.assert_allclose(block(b, 3, 8), 0.5 * stair)


def test_hs1997_staircase_fewer_units_than_blocks():
  b = np.asarray(initializers.lstm_bias("hs1997", jax.random.key(0), 3, forget_bias=0.0,
                                        input_step=2.0, output_step=1.0))
  np.testing.assert_allclose(block(b, 0, 3), [-2.0, -4.0, -6.0])
  np.testing.assert_array_equal(block(b, 1, 3), 0.0)
  np.testing.assert_allclose(block(b, 3, 3), [-1.0, -2.0, -3.0])


@pytest.mark.parametrize("h", [4, 10, 13])
def test_hs1997_staircase_properties(h):
  b = np.asarray(initializers.lstm_bias("hs1997", jax.random.key(0), h), np.float64)
  for k in (0, 3):  # input and output gates: closed at the start, a staircase
    stair = block(b, k, h)
    assert np.all(stair < 0)
    assert np.all(np.diff(stair) <= 0)  # contiguous blocks, monotone
    assert set(np.round(stair).tolist()) == {-1.0, -2.0, -3.0, -4.0}
    np.testing.assert_allclose(stair, np.round(stair))
  np.testing.assert_allclose(block(b, 1, h), 1.0)
  np.testing.assert_array_equal(block(b, 2, h), 0.0)


def test_hs1997_via_cell_without_forget_gate():
  b = np.asarray(make_cell("lstm1997", H, bias_init="hs1997").init(jax.random.key(0), I)["b"])
  # lstm1997 has blocks i, g, o.
  stair = np.array([-1, -1, -2, -2, -3, -3, -4, -4], np.float64)
  np.testing.assert_allclose(block(b, 0), stair)
  np.testing.assert_array_equal(block(b, 1), 0.0)
  np.testing.assert_allclose(block(b, 2), stair)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("scheme", ["forget", "chrono", "hs1997"])
def test_bias_dtype(scheme, dtype):
  b = initializers.lstm_bias(scheme, jax.random.key(0), H, t_max=20.0, dtype=dtype)
  assert b.dtype == dtype and b.shape == (4 * H,)


# ----------------------------------------------------------------------------
# Kernels.


def _assert_orthogonal(q, what):
  q = np.asarray(q, np.float64)
  np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-5, err_msg=what)


@pytest.mark.parametrize("name", ["vanilla", "cifg", "gru", "elman"])
def test_orthogonal_recurrent_kernel_per_gate_block(name):
  cell = cell_for(name)
  assert cell.recurrent_init == "orthogonal"
  w_h = np.asarray(cell.init(jax.random.key(4), I)["w_h"])
  n = len(BLOCKS[name])
  assert w_h.shape == (H, n * H)
  for k in range(n):
    _assert_orthogonal(block(w_h, k), f"{name} block {k}")
  if n > 1:
    # Each block is drawn independently, so the whole matrix is not orthogonal.
    assert not np.allclose(block(w_h, 0), block(w_h, 1))
    gram = w_h.T.astype(np.float64) @ w_h
    assert not np.allclose(gram, np.eye(n * H), atol=1e-3)


def test_orthogonal_gate_kernel_direct():
  w = initializers.gate_kernel("orthogonal", jax.random.key(9), 6, 6, 3)
  assert w.shape == (6, 18)
  for k in range(3):
    _assert_orthogonal(block(w, k, 6), f"block {k}")


def test_orthogonal_rectangular_lstmp_recurrent_kernel_has_orthonormal_rows():
  w_h = np.asarray(cell_for("lstmp").init(jax.random.key(4), I)["w_h"], np.float64)
  assert w_h.shape == (P, 4 * H)
  for k in range(4):
    blk = block(w_h, k)
    np.testing.assert_allclose(blk @ blk.T, np.eye(P), atol=1e-5)


@pytest.mark.parametrize("scale", [0.1, 0.3])
def test_uniform_kernel_within_scale(scale):
  w = np.asarray(initializers.gate_kernel("uniform", jax.random.key(1), 40, 16, 4,
                                          scale=scale))
  assert w.shape == (40, 64)
  assert np.all(np.abs(w) <= scale)
  # Fills the interval, centred at zero, variance scale^2 / 3.
  assert np.max(w) > 0.95 * scale and np.min(w) < -0.95 * scale
  assert abs(np.mean(w)) < 0.05 * scale
  np.testing.assert_allclose(np.var(w), scale ** 2 / 3, rtol=0.1)


def test_uniform_kernel_via_cell_init_scale():
  cell = make_cell("vanilla", H, kernel_init="uniform", recurrent_init="uniform",
                   init_scale=0.05)
  params = cell.init(jax.random.key(6), I)
  for key in ("w_x", "w_h"):
    w = np.asarray(params[key])
    assert np.all(np.abs(w) <= 0.05), key
    assert np.max(np.abs(w)) > 0.03, key


def test_zeros_kernel():
  w = initializers.gate_kernel("zeros", jax.random.key(0), 3, 4, 2)
  assert w.shape == (3, 8)
  np.testing.assert_array_equal(np.asarray(w), 0.0)


@pytest.mark.parametrize("num_gates", [1, 4])
def test_lecun_normal_scale_is_per_gate_block(num_gates):
  fan_in, h = 400, 64
  w = np.asarray(initializers.gate_kernel("lecun_normal", jax.random.key(2), fan_in, h,
                                          num_gates), np.float64)
  assert w.shape == (fan_in, num_gates * h)
  # Variance 1 / fan_in whatever the number of gate blocks.
  np.testing.assert_allclose(np.std(w), 1.0 / math.sqrt(fan_in), rtol=0.05)


# Each name's defining property, on gate blocks [fan_in, H] = [192, 64] of a
# 4-gate kernel (12,288 entries a block: the sample variance is within ~1% of
# its expectation, so 5% separates 1/fan_in = 0.0052, 2/(fan_in + H) = 0.0078,
# 2/fan_in = 0.0104 and scale^2/3 = 0.03 for init_scale 0.3):
# (variance, shape, orthogonal): shape "uniform" when the largest |w| is the
# bound sqrt(3 var) of a uniform with that variance, "normal" when it lies
# beyond it (the normal initialisers of jax.nn.initializers are truncated at
# two standard deviations of the untruncated normal, 1.31 times that bound).
FAN_IN, WIDTH, SCALE = 192, 64, 0.3
LECUN, GLOROT, HE = 1 / FAN_IN, 2 / (FAN_IN + WIDTH), 2 / FAN_IN
KERNEL_SIGNATURES = {
    "lecun_normal": (LECUN, "normal", False),
    "lecun_uniform": (LECUN, "uniform", False),
    "glorot_normal": (GLOROT, "normal", False),
    "glorot_uniform": (GLOROT, "uniform", False),
    "he_normal": (HE, "normal", False),
    "orthogonal": (LECUN, "normal", True),        # unit columns: mean square 1/fan_in
    "uniform": (SCALE ** 2 / 3, "uniform", False),
    "zeros": (0.0, None, False),
}


def _signature(w, candidates=(0.0, LECUN, GLOROT, HE, SCALE ** 2 / 3)):
  """(variance among ``candidates`` within 5%, shape, Q^T Q = I) of a block."""
  w = np.asarray(w, np.float64)
  var = float(np.mean(w ** 2))
  matches = [v for v in candidates if abs(var - v) <= 0.05 * v or var == v == 0.0]
  if var == 0.0:
    shape = None
  else:
    ratio = np.max(np.abs(w)) / math.sqrt(3 * var)
    shape = "uniform" if 0.98 <= ratio <= 1.02 else "normal" if ratio > 1.2 else "?"
  orthogonal = bool(np.allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-5))
  return (matches[0] if len(matches) == 1 else matches), shape, orthogonal


def test_kernel_signatures_are_distinct():
  assert len(set(KERNEL_SIGNATURES.values())) == len(KERNEL_SIGNATURES)
  assert set(KERNEL_SIGNATURES) == set(initializers.KERNEL_INITS)


@pytest.mark.parametrize("name", initializers.KERNEL_INITS)
def test_every_kernel_init_name_selects_its_initialiser(name):
  w = np.asarray(initializers.gate_kernel(name, jax.random.key(1), FAN_IN, WIDTH, 4,
                                          scale=SCALE), np.float64)
  for k in range(4):
    assert _signature(block(w, k, WIDTH)) == KERNEL_SIGNATURES[name], f"{name} block {k}"
  var = KERNEL_SIGNATURES[name][0]
  if KERNEL_SIGNATURES[name][1] == "uniform":     # inside the exact bound
    assert np.max(np.abs(w)) <= math.sqrt(3 * var) * (1 + 1e-6)
  if name == "uniform":
    assert np.max(np.abs(w)) <= SCALE and np.max(w) > 0.99 * SCALE and np.min(w) < -0.99 * SCALE


def test_cell_kernel_init_names_reach_their_initialisers():
  """Cell.init passes kernel_init to w_x and recurrent_init to w_h."""
  cell = make_cell("vanilla", WIDTH, kernel_init="glorot_uniform", recurrent_init="he_normal")
  params = cell.init(jax.random.key(2), FAN_IN)
  for k in range(4):
    assert _signature(block(params["w_x"], k, WIDTH)) == KERNEL_SIGNATURES["glorot_uniform"]
    w_h = np.asarray(block(params["w_h"], k, WIDTH), np.float64)   # [64, 64]: 4,096 entries
    assert np.mean(w_h ** 2) == pytest.approx(2 / WIDTH, rel=0.1)   # he: 2/fan_in, not 1/fan_in
    assert np.max(np.abs(w_h)) > 1.2 * math.sqrt(3 * 2 / WIDTH)    # normal, not uniform


@pytest.mark.parametrize("name", initializers.KERNEL_INITS)
def test_every_kernel_init_shape_and_dtype(name):
  for dtype in (jnp.float32, jnp.bfloat16):
    w = initializers.gate_kernel(name, jax.random.key(0), 6, 5, 3, dtype=dtype)
    assert w.shape == (6, 15) and w.dtype == dtype
    if name != "zeros":
      assert np.any(np.asarray(w, np.float32) != 0)
  # Drawn in float32 and cast: the bfloat16 kernel is the float32 one, rounded.
  w32 = initializers.gate_kernel(name, jax.random.key(0), 6, 5, 3)
  w16 = initializers.gate_kernel(name, jax.random.key(0), 6, 5, 3, dtype=jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(w16, np.float32),
                                np.asarray(w32.astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("name", list(BLOCKS))
def test_cell_param_shapes(name):
  cell = cell_for(name)
  params = cell.init(jax.random.key(0), I)
  g = len(BLOCKS[name])
  r = P if name == "lstmp" else H
  expected = {"w_x": (I, g * H), "w_h": (r, g * H), "b": (g * H,)}
  if name == "gru":
    expected["b_hn"] = (H,)
  if name in ("peephole", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "fgr"):
    expected["w_peep"] = (3, H)
  if name == "fgr":
    expected["w_gates"] = (3 * H, 3 * H)
  if name == "layernorm":
    expected.update(ln_x=(g * H,), ln_h=(g * H,), ln_c=(H,), ln_c_bias=(H,))
  if name == "lstmp":
    expected["w_proj"] = (H, P)
  assert {k: tuple(v.shape) for k, v in params.items()} == expected
  assert cell.param_shapes(I) == expected
  assert all(v.dtype == jnp.float32 for v in params.values())
  if name == "layernorm":
    np.testing.assert_array_equal(np.asarray(params["ln_x"]), 1.0)
    np.testing.assert_array_equal(np.asarray(params["ln_h"]), 1.0)
    np.testing.assert_array_equal(np.asarray(params["ln_c"]), 1.0)
    np.testing.assert_array_equal(np.asarray(params["ln_c_bias"]), 0.0)


def test_cell_init_dtype():
  params = cell_for("fgr").init(jax.random.key(0), I, jnp.bfloat16)
  assert all(v.dtype == jnp.bfloat16 for v in params.values())


# ----------------------------------------------------------------------------
# Names and keys.


def test_unknown_kernel_init_lists_allowed():
  with pytest.raises(ValueError, match="allowed") as info:
    initializers.gate_kernel("he_uniformm", jax.random.key(0), 3, 4, 4)
  assert "he_uniformm" in str(info.value)
  for name in initializers.KERNEL_INITS:
    assert name in str(info.value)


def test_unknown_bias_init_lists_allowed():
  with pytest.raises(ValueError, match="allowed") as info:
    initializers.lstm_bias("zero", jax.random.key(0), H)
  for name in ("forget", "chrono", "hs1997"):
    assert name in str(info.value)
  assert tuple(initializers.BIAS_INITS) == ("forget", "chrono", "hs1997")


@pytest.mark.parametrize("field", ["kernel_init", "recurrent_init", "bias_init"])
def test_unknown_init_name_in_cell(field):
  with pytest.raises(ValueError, match=field):
    make_cell("vanilla", H, **{field: "bogus"})


@pytest.mark.parametrize("name", ["vanilla", "fgr", "lstmp", "gru", "elman"])
def test_init_is_deterministic_in_key(name):
  cell = cell_for(name, bias_init="chrono", chrono_t_max=20) if name == "vanilla" \
      else cell_for(name)
  a = cell.init(jax.random.key(11), I)
  b = cell.init(jax.random.key(11), I)
  c = cell.init(jax.random.key(12), I)
  assert a.keys() == b.keys() == c.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
  for k in ("w_x", "w_h"):
    assert not np.allclose(np.asarray(a[k]), np.asarray(c[k])), k
  if name == "vanilla":  # chrono biases are random too
    assert not np.allclose(np.asarray(a["b"]), np.asarray(c["b"]))


def test_gate_kernel_and_chrono_deterministic():
  k1, k2 = jax.random.key(0), jax.random.key(1)
  for name in ("lecun_normal", "orthogonal", "uniform"):
    np.testing.assert_array_equal(
        np.asarray(initializers.gate_kernel(name, k1, 4, 3, 4)),
        np.asarray(initializers.gate_kernel(name, k1, 4, 3, 4)))
    assert not np.allclose(np.asarray(initializers.gate_kernel(name, k1, 4, 3, 4)),
                           np.asarray(initializers.gate_kernel(name, k2, 4, 3, 4)))
  np.testing.assert_array_equal(
      np.asarray(initializers.lstm_bias("chrono", k1, H, t_max=9.0)),
      np.asarray(initializers.lstm_bias("chrono", k1, H, t_max=9.0)))

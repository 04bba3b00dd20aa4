"""flax.nnx cells: nnx.RNN / nnx.Bidirectional over them equal the core functions
and the linen cells, params round-trip as the core dict, options reach the core."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax as L
from lstm_jax import linen as lnn
from lstm_jax import nnx as lnnx

B, T, I, H, P = 2, 5, 3, 4, 2
LENGTHS = jnp.array([5, 2])
CASES = [("vanilla", 0), ("peephole", 0), ("cifg", 0), ("fgr", 0), ("layernorm", 0),
         ("lstmp", P), ("gru", 0), ("elman", 0)]


def _xs(seed: int = 0, shape: tuple[int, ...] = (B, T, I)) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape)


def _perturb(params: dict, seed: int = 7) -> dict:
  """Noise on every entry, so zero-initialised peepholes etc. take part."""
  names = sorted(params)
  keys = jax.random.split(jax.random.key(seed), len(names))
  return {n: params[n] + 0.3 * jax.random.normal(k, params[n].shape, params[n].dtype)
          for n, k in zip(names, keys)}


def _assert_tree_close(got, want, atol: float = 1e-6) -> None:
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol)


def _valid(ys: jax.Array, lengths: jax.Array) -> np.ndarray:
  """``ys [B, T, F]`` with padded steps zeroed (flax leaves them non-zero)."""
  mask = np.arange(ys.shape[1])[None, :] < np.asarray(lengths)[:, None]
  return np.where(mask[..., None], np.asarray(ys), 0.0)


@pytest.mark.parametrize("name,proj", CASES)
def test_rnn_matches_core_and_linen(name, proj):
  core = L.make_cell(name, H, proj_size=proj)
  fresh = lnnx.RecurrentCell(I, H, cell=name, proj_size=proj, rngs=nnx.Rngs(0))
  assert fresh.core == core
  assert {k: v.shape for k, v in fresh.core_params().items()} == core.param_shapes(I)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  assert isinstance(cell.w_x, nnx.Param)
  xs = _xs()
  carry, ys = nnx.RNN(cell)(xs, return_carry=True)
  want_ys, want_carry = L.rnn(core, params, xs)
  assert ys.shape == (B, T, core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(carry, want_carry)
  # linen with the same params: the same numbers.
  linen_layer = nn.RNN(lnn.RecurrentCell.from_core(core))
  l_carry, l_ys = linen_layer.apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  _assert_tree_close(ys, l_ys, atol=0)
  _assert_tree_close(carry, l_carry, atol=0)


def test_bare_cell_step_matches_core_step():
  core = L.make_cell("fgr", H)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  x = _xs(shape=(B, I))
  carry = cell.initialize_carry(x.shape)
  new_carry, y = cell(carry, x)
  want_carry, want_y = core.step(params, carry, x)
  _assert_tree_close(y, want_y)
  _assert_tree_close(new_carry, want_carry)


def test_bidirectional_and_seq_lengths_match_core():
  core = L.make_cell("peephole", H)
  k_f, k_b = jax.random.split(jax.random.key(0))
  params = {"fwd": _perturb(core.init(k_f, I), 1), "bwd": _perturb(core.init(k_b, I), 2)}
  fwd = lnnx.RecurrentCell.from_core_params(core, params["fwd"])
  bwd = lnnx.RecurrentCell.from_core_params(core, params["bwd"])
  layer = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd))
  xs = _xs()
  carry, ys = layer(xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(core, params, xs)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(carry, want_carry)
  # With lengths flax picks each sequence's last real carry and reverses each
  # sequence within its length: same finals and real-step outputs as the core.
  carry, ys = layer(xs, return_carry=True, seq_lengths=LENGTHS)
  want_ys, want_carry = L.bidirectional_rnn(core, params, xs, lengths=LENGTHS)
  _assert_tree_close(carry, want_carry)
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)
  carry, ys = nnx.RNN(fwd)(xs, return_carry=True, seq_lengths=LENGTHS)
  _assert_tree_close(carry, want_carry[0])
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys[..., :H], rtol=0, atol=1e-6)


def test_gradients_match_core():
  core = L.make_cell("cifg", H)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  xs = _xs()

  def nnx_loss(model):
    return jnp.sum(nnx.RNN(model)(xs) ** 2)

  grads = nnx.grad(nnx_loss)(cell)
  want = jax.grad(lambda p: jnp.sum(L.rnn(core, p, xs)[0] ** 2))(params)
  got = {k: v.get_value() for k, v in nnx.to_flat_state(grads)}
  got = {k[-1]: v for k, v in got.items()}
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(got["w_peep"]).sum()) > 0


def test_forget_bias_and_chrono():
  cell = lnnx.RecurrentCell(I, H, forget_bias=3.0, rngs=nnx.Rngs(0))
  blocks = np.asarray(cell.b.get_value()).reshape(4, H)  # i, f, g, o
  np.testing.assert_array_equal(blocks[1], 3.0)
  np.testing.assert_array_equal(blocks[[0, 2, 3]], 0.0)

  t_max = 10.0
  cell = lnnx.LSTMCell(I, H, bias_init="chrono", chrono_t_max=t_max, rngs=nnx.Rngs(0))
  b_i, b_f, b_g, b_o = np.asarray(cell.b.get_value()).reshape(4, H)
  assert np.all(b_f >= 0) and np.all(b_f <= np.log(t_max - 1) + 1e-6)
  assert np.unique(b_f).size == H
  np.testing.assert_allclose(b_i, -b_f)
  np.testing.assert_array_equal(np.stack([b_g, b_o]), 0.0)


def test_other_options_and_dtypes():
  cell = lnnx.RecurrentCell(I, H, cell="elman", kernel_init="zeros", recurrent_init="uniform",
                            init_scale=0.01, use_bias=False, rngs=nnx.Rngs(0))
  assert cell.param_names == ("w_x", "w_h")
  np.testing.assert_array_equal(cell.w_x.get_value(), 0.0)
  assert 0 < float(jnp.abs(cell.w_h.get_value()).max()) <= 0.01

  cell = lnnx.RecurrentCell(I, H, cell="gru", param_dtype=jnp.bfloat16,
                            carry_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert {v.dtype for v in cell.core_params().values()} == {jnp.dtype(jnp.bfloat16)}
  assert cell.initialize_carry((B, I)).dtype == jnp.bfloat16

  custom = L.LSTMVariant(gate_recurrence=True)
  cell = lnnx.RecurrentCell(I, H, cell=custom, rngs=nnx.Rngs(0))
  assert cell.core.variant == custom and cell.w_gates.get_value().shape == (3 * H, 3 * H)

  a = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(0)).core_params()
  b = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(0)).core_params()
  c = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(1)).core_params()
  _assert_tree_close(a, b, atol=0)
  assert not np.allclose(a["w_x"], c["w_x"])


def test_initialize_carry():
  lstmp = lnnx.RecurrentCell(I, H, cell="lstmp", proj_size=P, rngs=nnx.Rngs(0))
  carry = lstmp.initialize_carry((B, I))
  assert isinstance(carry, L.LSTMState) and carry.gates is None
  assert carry.h.shape == (B, P) and carry.c.shape == (B, H)
  assert lstmp.num_feature_axes == 1
  fgr = lnnx.RecurrentCell(I, H, cell="fgr", rngs=nnx.Rngs(0))
  ones = fgr.initialize_carry((7, I), nnx.Rngs(carry=1),
                              carry_init=nnx.initializers.ones_init())
  assert ones.gates.shape == (7, 3 * H)
  assert all(np.all(np.asarray(leaf) == 1) for leaf in jax.tree_util.tree_leaves(ones))
  with pytest.raises(ValueError, match="carry_init needs an nnx.Rngs"):
    fgr.initialize_carry((7, I), carry_init=nnx.initializers.ones_init())


def test_core_params_round_trip_and_split_merge():
  cell = lnnx.RecurrentCell(I, H, cell="layernorm", rngs=nnx.Rngs(0))
  params = cell.core_params()
  assert set(params) == set(cell.core.param_shapes(I))
  again = lnnx.RecurrentCell.from_core_params(cell.core, params)
  _assert_tree_close(again.core_params(), params, atol=0)
  graphdef, state = nnx.split(cell, nnx.Param)
  merged = nnx.merge(graphdef, state)
  _assert_tree_close(merged.core_params(), params, atol=0)
  assert merged.core == cell.core


def test_bad_arguments_raise():
  allowed = re.escape(", ".join(L.CELL_NAMES))
  with pytest.raises(ValueError, match=r"cell='bogus' is not a known name; allowed: " + allowed):
    lnnx.RecurrentCell(I, H, cell="bogus", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cell='elman' is not an LSTM variant"):
    lnnx.LSTMCell(I, H, cell="elman", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="needs proj_size > 0"):
    lnnx.RecurrentCell(I, H, cell="lstmp", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="kernel_init='he' is not a known name"):
    lnnx.RecurrentCell(I, H, kernel_init="he", rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="rngs: an nnx.Rngs is needed"):
    lnnx.RecurrentCell(I, H)
  params = L.make_cell("vanilla", H).init(jax.random.key(0), I)
  with pytest.raises(ValueError, match="does not match params\\['w_x'\\]"):
    lnnx.RecurrentCell(I + 1, H, params=params)
  with pytest.raises(ValueError, match=r"params\['w_peep'\] is missing"):
    lnnx.RecurrentCell(I, H, cell="peephole", params=params)

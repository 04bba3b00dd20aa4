"""flax.linen cells: nn.RNN / nn.Bidirectional over them equal the core functions,
params are the core params dict, constructor options reach the core cell."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax as L
from lstm_jax import linen as lnn

B, T, I, H, P = 2, 5, 3, 4, 2
LENGTHS = jnp.array([5, 2])
# (cell, proj_size): every structurally different kind of carry and param set.
CASES = [("vanilla", 0), ("peephole", 0), ("cifg", 0), ("fgr", 0), ("layernorm", 0),
         ("lstmp", P), ("gru", 0), ("elman", 0)]


def _xs(seed: int = 0, shape: tuple[int, ...] = (B, T, I)) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape)


def _perturb(params: dict, seed: int = 7) -> dict:
  """Add noise to every entry, so zero-initialised peepholes, gate recurrence
  and layer-norm offsets take part in the comparison."""
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
def test_rnn_matches_core_rnn(name, proj):
  cell = lnn.RecurrentCell(features=H, cell=name, proj_size=proj)
  core = cell.core
  assert core == L.make_cell(name, H, proj_size=proj)
  layer = nn.RNN(cell)
  xs = _xs()
  shapes = jax.eval_shape(layer.init, jax.random.key(0), xs)  # no compile
  assert {k: v.shape for k, v in lnn.to_core_params(shapes).items()} == core.param_shapes(I)
  params = _perturb(core.init(jax.random.key(0), I))
  carry, ys = layer.apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  want_ys, want_carry = L.rnn(core, params, xs)
  assert ys.shape == (B, T, core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(carry, want_carry)


def test_bare_cell_step_matches_core_step():
  cell = lnn.RecurrentCell(features=H, cell="fgr")
  x = _xs(shape=(B, I))
  carry = cell.initialize_carry(jax.random.key(1), x.shape)
  variables = cell.init(jax.random.key(0), carry, x)
  # The params collection *is* the core params dict.
  assert set(variables) == {"params"}
  params = _perturb(lnn.to_core_params(variables))
  carry1, y = cell.apply(lnn.to_variables(params), carry, x)
  want_carry, want_y = cell.core.step(params, carry, x)
  _assert_tree_close(y, want_y)
  _assert_tree_close(carry1, want_carry)
  assert float(jnp.abs(carry1.gates).sum()) > 0  # FGR carries [i, f, o].


def test_extra_batch_axes():
  cell = lnn.RecurrentCell(features=H, cell="peephole")
  xs = _xs(shape=(2, 3, T, I))  # batch axes (2, 3)
  params = _perturb(cell.core.init(jax.random.key(0), I))
  carry, ys = nn.RNN(cell).apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  want_ys, want_carry = L.rnn(cell.core, params, xs.reshape(6, T, I))
  _assert_tree_close(ys.reshape(6, T, H), want_ys)
  _assert_tree_close(jax.tree_util.tree_map(lambda a: a.reshape(6, -1), carry), want_carry)


@pytest.mark.parametrize("name,proj", [("lstmp", P), ("gru", 0)])
def test_bidirectional_matches_core(name, proj):
  cell = lnn.RecurrentCell(features=H, cell=name, proj_size=proj)
  layer = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell.clone()))
  xs = _xs()
  variables = layer.init(jax.random.key(0), xs)
  params = lnn.to_core_params(variables)
  assert set(params) == {"fwd", "bwd"}
  assert not np.allclose(params["fwd"]["w_x"], params["bwd"]["w_x"])  # independent
  params = {"fwd": _perturb(params["fwd"], 1), "bwd": _perturb(params["bwd"], 2)}
  carry, ys = layer.apply(lnn.to_variables(params, "bidirectional"), xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(cell.core, params, xs)
  assert ys.shape == (B, T, 2 * cell.core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(carry, want_carry)


def test_bidirectional_with_one_cell_instance_shares_params():
  cell = lnn.RecurrentCell(features=H, cell="cifg")
  layer = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))
  xs = _xs()
  variables = layer.init(jax.random.key(0), xs)
  assert set(variables["params"]) == {"forward_rnn"}  # linen module sharing
  params = lnn.to_core_params(variables)
  assert params["fwd"] is params["bwd"]
  carry, ys = layer.apply(variables, xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(cell.core, params, xs)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(carry, want_carry)


def test_seq_lengths_forward_reverse_and_bidirectional():
  """flax selects the carry after each sequence's last real step and (with
  reverse) flips each sequence within its length: the final carries and the
  outputs at real steps equal lstm_jax's padding semantics."""
  cell = lnn.RecurrentCell(features=H, cell="fgr")
  core = cell.core
  xs = _xs()
  params = _perturb(core.init(jax.random.key(0), I))
  var = lnn.to_variables(params, "rnn")
  for reverse in (False, True):
    layer = nn.RNN(cell, reverse=reverse, keep_order=True)
    carry, ys = layer.apply(var, xs, seq_lengths=LENGTHS, return_carry=True)
    want_ys, want_carry = L.rnn(core, params, xs, lengths=LENGTHS, reverse=reverse)
    _assert_tree_close(carry, want_carry)
    np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)

  bi = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell.clone()))
  bparams = {"fwd": params, "bwd": _perturb(params, 3)}
  carry, ys = bi.apply(lnn.to_variables(bparams, "bidirectional"), xs,
                       seq_lengths=LENGTHS, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(core, bparams, xs, lengths=LENGTHS)
  _assert_tree_close(carry, want_carry)
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)


def test_forget_bias_in_f_block():
  cell = lnn.RecurrentCell(features=H, forget_bias=3.0)
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
  blocks = np.asarray(params["b"]).reshape(4, H)  # i, f, g, o
  np.testing.assert_array_equal(blocks[1], 3.0)
  np.testing.assert_array_equal(blocks[[0, 2, 3]], 0.0)


def test_chrono_bias():
  t_max = 10.0
  cell = lnn.LSTMCell(features=H, bias_init="chrono", chrono_t_max=t_max)
  assert cell.core.bias_init == "chrono" and cell.core.chrono_t_max == t_max
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
  b_i, b_f, b_g, b_o = np.asarray(params["b"]).reshape(4, H)
  assert np.all(b_f >= 0) and np.all(b_f <= np.log(t_max - 1) + 1e-6)
  assert np.unique(b_f).size == H  # drawn, not constant
  np.testing.assert_allclose(b_i, -b_f)
  np.testing.assert_array_equal(np.stack([b_g, b_o]), 0.0)


def test_other_options_reach_the_core():
  xs = _xs()
  cell = lnn.RecurrentCell(features=H, cell="elman", kernel_init="zeros",
                           recurrent_init="uniform", init_scale=0.01, use_bias=False)
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), xs))
  assert set(params) == {"w_x", "w_h"}  # use_bias=False
  np.testing.assert_array_equal(params["w_x"], 0.0)
  assert 0 < float(jnp.abs(params["w_h"]).max()) <= 0.01

  cell = lnn.RecurrentCell(features=H, cell="gru", param_dtype=jnp.bfloat16,
                           carry_dtype=jnp.bfloat16)
  variables = nn.RNN(cell).init(jax.random.key(0), xs.astype(jnp.bfloat16))
  assert {v.dtype for v in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.bfloat16)}
  assert cell.initialize_carry(jax.random.key(0), (B, I)).dtype == jnp.bfloat16

  custom = L.LSTMVariant(peepholes=True, output_activation="identity")
  cell = lnn.RecurrentCell(features=H, cell=custom)
  assert cell.core.variant == custom and "w_peep" in cell.core.param_shapes(I)


def test_initialize_carry_and_feature_axes():
  lstmp = lnn.RecurrentCell(features=H, cell="lstmp", proj_size=P)
  carry = lstmp.initialize_carry(jax.random.key(0), (B, I))
  assert isinstance(carry, L.LSTMState) and carry.gates is None
  assert carry.h.shape == (B, P) and carry.c.shape == (B, H)
  assert lstmp.num_feature_axes == 1
  fgr = lnn.RecurrentCell(features=H, cell="fgr").initialize_carry(None, (7, 2, I))
  assert fgr.gates.shape == (7, 2, 3 * H) and not np.any(np.asarray(fgr.c))
  gru = lnn.RecurrentCell(features=H, cell="gru").initialize_carry(None, (B, I))
  assert gru.shape == (B, H)


def test_init_is_deterministic_per_key():
  layer = nn.RNN(lnn.RecurrentCell(features=H, cell="layernorm"))
  xs = _xs()
  a = lnn.to_core_params(layer.init(jax.random.key(0), xs))
  b = lnn.to_core_params(layer.init(jax.random.key(0), xs))
  c = lnn.to_core_params(layer.init(jax.random.key(1), xs))
  _assert_tree_close(a, b, atol=0)
  assert not np.allclose(a["w_x"], c["w_x"])
  np.testing.assert_array_equal(a["ln_c"], 1.0)  # layer-norm gains start at one


def test_from_core_round_trip():
  core = L.make_cell("nfg", H, forget_bias=2.0, kernel_init="glorot_uniform", init_scale=0.5)
  cell = lnn.RecurrentCell.from_core(core, carry_dtype=jnp.float16)
  assert cell.core == core and cell.carry_dtype == jnp.float16
  custom = L.make_cell(L.LSTMVariant(layer_norm=True, peepholes=True), H)
  assert lnn.LSTMCell.from_core(custom).core == custom


def test_to_variables_round_trip_and_errors():
  params = L.make_cell("vanilla", H).init(jax.random.key(0), I)
  for layout in ("cell", "rnn"):
    assert lnn.to_core_params(lnn.to_variables(params, layout)) == params
  pair = {"fwd": params, "bwd": params}
  assert lnn.to_core_params(lnn.to_variables(pair, "bidirectional")) == pair
  with pytest.raises(ValueError, match="layout='stack'.*allowed: cell, rnn, bidirectional"):
    lnn.to_variables(params, "stack")
  with pytest.raises(ValueError, match="needs {'fwd': params, 'bwd': params}"):
    lnn.to_variables(params, "bidirectional")
  with pytest.raises(ValueError, match=r"got entries \['dense'\]"):
    lnn.to_core_params({"params": {"dense": {"kernel": params["w_x"]}}})


def test_bad_options_raise():
  allowed = re.escape(", ".join(L.CELL_NAMES))
  with pytest.raises(ValueError, match=r"cell='bogus' is not a known name; allowed: " + allowed):
    lnn.RecurrentCell(features=H, cell="bogus")
  with pytest.raises(ValueError, match="cell='gru' is not an LSTM variant"):
    lnn.LSTMCell(features=H, cell="gru")
  with pytest.raises(ValueError, match="needs proj_size > 0"):
    lnn.RecurrentCell(features=H, cell="lstmp")
  with pytest.raises(ValueError, match="proj_size=2 is only available for LSTM"):
    lnn.RecurrentCell(features=H, cell="gru", proj_size=2)
  with pytest.raises(ValueError, match="bias_init='nope' is not a known name"):
    lnn.RecurrentCell(features=H, bias_init="nope")
  with pytest.raises(ValueError, match="chrono_t_max=None"):
    lnn.RecurrentCell(features=H, bias_init="chrono")

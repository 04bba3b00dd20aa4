"""Tests of lstm_jax.interop: torch.nn.LSTM and flax.linen LSTM cell parameters.

torch tests take the ``torch`` fixture (tests/conftest.py): they skip when torch
is absent, and fail instead where LSTM_JAX_REQUIRE_TORCH=1 (CI); flax tests
never import torch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax import interop

ATOL_TORCH = 1e-5
ATOL_FLAX = 1e-6
I, H, P, T, B = 3, 5, 2, 6, 4

# A covering array: every pair of values of any two of the five options
# (num_layers, bidirectional, proj_size, bias, batch_first) occurs in some row.
TORCH_GRID = [
    (1, False, 0, True, False),
    (1, False, 0, True, True),
    (1, True, P, False, False),
    (2, False, P, False, False),
    (2, True, 0, False, True),
    (2, True, P, True, True),
]


def _ids(case):
  layers, bi, proj, bias, bf = case
  return f"L{layers}-{'bi' if bi else 'uni'}-P{proj}-{'bias' if bias else 'nobias'}-" \
         f"{'bf' if bf else 'tm'}"


def _torch_lstm(torch, layers, bi, proj, bias, bf, seed=0):
  torch.manual_seed(seed)
  m = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bi, proj_size=proj, bias=bias,
                    batch_first=bf)
  if bias:  # make bias_hh distinct from bias_ih so the sum is exercised
    with torch.no_grad():
      for name, p in m.named_parameters():
        if name.startswith("bias_hh"):
          p.add_(0.3)
  return m


def _state_dict(m):
  return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def _close(a, b, atol):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def _random_like(tree, seed=0):
  """Random float32 NumPy leaves shaped like ``tree`` (arrays or ShapeDtypeStructs).

  Cheaper than running initialisers (no orthogonal init to compile).
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(0, 0.5, a.shape).astype(np.float32), tree)


def _cell_params(cell, input_size, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(0, 0.5, shape).astype(np.float32)
          for k, shape in cell.param_shapes(input_size).items()}


def _stack(cell, input_size, num_layers=1, bidirectional=False, seed=0):
  shapes = jax.eval_shape(lambda: lstm_jax.init_stack(cell, jax.random.key(0), input_size,
                                                      num_layers, bidirectional=bidirectional))
  return _random_like(shapes, seed)


# ----------------------------------------------------------------------------
# torch.nn.LSTM parity.


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("case", TORCH_GRID, ids=_ids)
def test_torch_parity(case, torch):
  layers, bi, proj, bias, bf = case
  m = _torch_lstm(torch, layers, bi, proj, bias, bf)
  model = interop.from_torch_lstm(_state_dict(m), batch_first=bf)
  d = 2 if bi else 1
  assert (model.num_layers, model.bidirectional, model.proj_size, model.bias,
          model.batch_first, model.input_size, model.hidden_size) == (
              layers, bi, proj, bias, bf, I, H)
  assert model.torch_kwargs() == dict(input_size=I, hidden_size=H, num_layers=layers,
                                      bias=bias, batch_first=bf, bidirectional=bi,
                                      proj_size=proj)
  g = torch.Generator().manual_seed(1)
  x = torch.randn((B, T, I) if bf else (T, B, I), generator=g)
  h0 = torch.randn(layers * d, B, proj or H, generator=g)
  c0 = torch.randn(layers * d, B, H, generator=g)
  xu = torch.randn(T, I, generator=g)
  with torch.no_grad():
    runs = [(m(x), model(x.numpy())),
            (m(x, (h0, c0)), model(x.numpy(), (h0.numpy(), c0.numpy()))),
            (m(xu, (h0[:, 0], c0[:, 0])), model(xu.numpy(), (h0[:, 0].numpy(),
                                                              c0[:, 0].numpy())))]
  for (t_out, (t_h, t_c)), (out, (h_n, c_n)) in runs:
    assert out.shape == tuple(t_out.shape)
    assert h_n.shape == tuple(t_h.shape) and c_n.shape == tuple(t_c.shape)
    _close(out, t_out.numpy(), ATOL_TORCH)
    _close(h_n, t_h.numpy(), ATOL_TORCH)
    _close(c_n, t_c.numpy(), ATOL_TORCH)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_lengths_match_packed_sequence(batch_first, torch):
  from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
  m = _torch_lstm(torch, 2, True, P, True, batch_first)
  model = interop.from_torch_lstm(_state_dict(m), batch_first=batch_first)
  lengths = torch.tensor([3, T, 1, 4])  # unsorted; max == T so torch keeps T steps
  g = torch.Generator().manual_seed(2)
  x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g)
  h0 = torch.randn(4, B, P, generator=g)
  c0 = torch.randn(4, B, H, generator=g)
  with torch.no_grad():
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    t_packed, (t_h, t_c) = m(packed, (h0, c0))
    t_out, _ = pad_packed_sequence(t_packed, batch_first=batch_first)
  out, (h_n, c_n) = model(x.numpy(), (h0.numpy(), c0.numpy()), lengths=lengths.numpy())
  _close(out, t_out.numpy(), ATOL_TORCH)
  _close(h_n, t_h.numpy(), ATOL_TORCH)
  _close(c_n, t_c.numpy(), ATOL_TORCH)


@pytest.mark.parametrize("bias", [True, False])
def test_torch_round_trip_state_dict(bias, torch):
  sd = _state_dict(_torch_lstm(torch, 2, True, P, bias, False))
  model = interop.from_torch_lstm(sd)
  back = interop.to_torch_lstm(model)
  assert list(back) == list(sd)  # same keys, torch's order
  again = interop.to_torch_lstm(model.params, model.cell)
  assert list(again) == list(back)
  for k in back:
    np.testing.assert_array_equal(again[k], back[k])
  for k, v in back.items():
    assert isinstance(v, np.ndarray) and v.shape == sd[k].shape and v.dtype == sd[k].dtype
    if k.startswith("weight"):
      np.testing.assert_array_equal(v, sd[k])
    elif k.startswith("bias_hh"):
      np.testing.assert_array_equal(v, np.zeros_like(v))
    else:
      hh = k.replace("bias_ih", "bias_hh")
      np.testing.assert_allclose(v, sd[k] + sd[hh], rtol=0, atol=1e-7)
  if not bias:
    assert not any(k.startswith("bias") for k in back)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_ours_to_torch_module(torch):
  cell = lstm_jax.make_cell("lstmp", H, proj_size=P)
  layers = _stack(cell, I, num_layers=2, bidirectional=True)
  sd = interop.to_torch_lstm(layers, cell, bidirectional=True)
  kwargs = interop.TorchLSTM.from_params(cell, layers, batch_first=True).torch_kwargs()
  m = torch.nn.LSTM(**kwargs)
  m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  xs = np.random.default_rng(1).normal(size=(B, T, I)).astype(np.float32)
  out, finals = lstm_jax.stacked_rnn(cell, layers, xs, bidirectional=True)
  h_n, c_n = interop.to_torch_state(finals, bidirectional=True)
  with torch.no_grad():
    t_out, (t_h, t_c) = m(torch.from_numpy(xs))
  _close(out, t_out.numpy(), ATOL_TORCH)
  _close(h_n, t_h.numpy(), ATOL_TORCH)
  _close(c_n, t_c.numpy(), ATOL_TORCH)


def test_torch_model_is_a_pytree_and_jits():
  cell = lstm_jax.make_cell("vanilla", H, use_bias=False)
  layers = _stack(cell, I)
  model = interop.TorchLSTM.from_params(cell, layers)
  assert not model.bidirectional and not model.bias
  xs = np.random.default_rng(1).normal(size=(T, B, I)).astype(np.float32)
  out, (h_n, c_n) = jax.jit(lambda m, x: m(x))(model, xs)
  ref, (ref_h, ref_c) = model(xs)
  _close(out, ref, 1e-6)
  assert h_n.shape == (1, B, H) and c_n.shape == (1, B, H)
  _close(h_n, ref_h, 1e-6)
  _close(c_n, ref_c, 1e-6)
  _close(h_n[0], out[-1], 1e-6)     # one forward layer, full lengths: h_n is the last output
  assert not any(k.startswith("bias") for k in interop.to_torch_lstm(layers, cell))


def test_torch_state_helpers_order():
  rows = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
  states = interop.from_torch_state((rows, rows + 100), num_layers=2, bidirectional=True)
  assert len(states) == 2
  np.testing.assert_array_equal(states[1][0].h, rows[2])  # layer 1 fwd = row 1*2+0
  np.testing.assert_array_equal(states[1][1].c, rows[3] + 100)
  h_n, c_n = interop.to_torch_state(states, bidirectional=True)
  np.testing.assert_array_equal(h_n, rows)
  np.testing.assert_array_equal(c_n, rows + 100)


# ----------------------------------------------------------------------------
# torch: bad input.


def _sd(torch, **kw):
  return _state_dict(_torch_lstm(torch, **kw))


def test_torch_missing_key(torch):
  sd = _sd(torch, layers=2, bi=True, proj=0, bias=True, bf=False)
  del sd["weight_hh_l1_reverse"]
  with pytest.raises(ValueError, match=r"'weight_hh_l1_reverse'.* missing.*\(20, 5\)"):
    interop.from_torch_lstm(sd)
  sd = _sd(torch, layers=1, bi=False, proj=0, bias=True, bf=False)
  del sd["bias_hh_l0"]
  with pytest.raises(ValueError, match=r"'bias_hh_l0'.* missing"):
    interop.from_torch_lstm(sd)


def test_torch_wrong_shape(torch):
  sd = _sd(torch, layers=2, bi=False, proj=P, bias=True, bf=False)
  sd["weight_ih_l1"] = np.zeros((4 * H, H), np.float32)  # layer 1 reads P features
  with pytest.raises(ValueError, match=r"'weight_ih_l1'.*expected shape \(20, 2\).*got \(20, 5\)"):
    interop.from_torch_lstm(sd)
  sd = _sd(torch, layers=1, bi=False, proj=0, bias=True, bf=False)
  sd["bias_hh_l0"] = np.zeros((7,), np.float32)
  with pytest.raises(ValueError, match=r"'bias_hh_l0'.*expected shape \(20,\).*got \(7,\)"):
    interop.from_torch_lstm(sd)
  sd["weight_ih_l0"] = np.zeros((7, I), np.float32)
  with pytest.raises(ValueError, match=r"'weight_ih_l0'.*multiple of 4.*\(7, 3\)"):
    interop.from_torch_lstm(sd)


def test_torch_unknown_key(torch):
  sd = _sd(torch, layers=1, bi=False, proj=0, bias=True, bf=False)
  sd["lstm.weight_ih_l0"] = sd["weight_ih_l0"]
  with pytest.raises(ValueError, match=r"'lstm.weight_ih_l0'\] is not a torch.nn.LSTM parameter"):
    interop.from_torch_lstm(sd)


def test_torch_bad_initial_state(torch):
  sd = _sd(torch, layers=2, bi=True, proj=0, bias=True, bf=False)
  model = interop.from_torch_lstm(sd)
  xs = np.zeros((T, B, I), np.float32)
  with pytest.raises(ValueError, match=r"h_0: expected shape \(4, 4, 5\)"):
    model(xs, (np.zeros((2, B, H), np.float32), np.zeros((4, B, H), np.float32)))
  with pytest.raises(ValueError, match=r"input_size"):
    model(np.zeros((T, B, I + 1), np.float32))


@pytest.mark.parametrize("name, match", [("peephole", "'peephole'.*peepholes"),
                                         ("layernorm", "'layernorm'.*layer_norm"),
                                         ("cifg", "'cifg'"), ("gru", "'gru'")])
def test_export_unsupported_variant(name, match):
  cell = lstm_jax.make_cell(name, H)
  layers = _stack(cell, I)
  with pytest.raises(ValueError, match=match):
    interop.to_torch_lstm(layers, cell)
  with pytest.raises(ValueError, match=match):
    interop.to_flax_lstm(layers[0], cell)


def test_export_params_not_fitting_cell():
  cell = lstm_jax.make_cell("vanilla", H)
  layers = _stack(cell, I, num_layers=2)
  with pytest.raises(ValueError, match=r"bidirectional=True"):
    interop.to_torch_lstm(layers, cell, bidirectional=True)
  bad = [layers[0], dict(layers[1], w_h=jnp.zeros((H + 1, 4 * H)))]
  with pytest.raises(ValueError, match=r"params\[1\].*'w_h'"):
    interop.to_torch_lstm(bad, cell)


# ----------------------------------------------------------------------------
# flax.linen.LSTMCell / OptimizedLSTMCell (no torch).


@pytest.mark.parametrize("flax_cell", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_flax_to_ours(flax_cell):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(B, T, I)).astype(np.float32)
  rnn = nn.RNN(flax_cell(features=H), return_carry=True)
  # flax's own parameter tree (shapes from eval_shape), filled with random values
  variables = _random_like(jax.eval_shape(rnn.init, jax.random.key(1), xs), seed=1)
  carry0 = tuple(rng.normal(size=(B, H)).astype(np.float32) for _ in range(2))  # (c, h)
  (c_f, h_f), ys_f = rnn.apply(variables, xs, initial_carry=carry0)

  params = interop.from_flax_lstm(variables)  # unwraps {"params": {"cell": ...}}
  assert {k: v.shape for k, v in params.items()} == {
      "w_x": (I, 4 * H), "w_h": (H, 4 * H), "b": (4 * H,)}
  cell = lstm_jax.make_cell("vanilla", H, forget_bias=0.0)
  ys, final = lstm_jax.rnn(cell, params, xs, interop.carry_from_flax(carry0))
  _close(ys, ys_f, ATOL_FLAX)
  c, h = interop.carry_to_flax(final)
  _close(c, c_f, ATOL_FLAX)
  _close(h, h_f, ATOL_FLAX)
  # The bare cell params and the variables dict give the same result.
  bare = interop.from_flax_lstm(variables["params"]["cell"])
  jax.tree.map(np.testing.assert_array_equal, bare, params)


@pytest.mark.parametrize("flax_cell", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_ours_to_flax(flax_cell):
  cell = lstm_jax.make_cell("vanilla", H, forget_bias=0.0)
  params = _cell_params(cell, I)
  xs = np.random.default_rng(2).normal(size=(B, T, I)).astype(np.float32)
  state0 = interop.carry_from_flax((jnp.full((B, H), 0.5), jnp.full((B, H), -0.25)))
  ys, final = lstm_jax.rnn(cell, params, xs, state0)

  tree = interop.to_flax_lstm(params, cell)
  rnn = nn.RNN(flax_cell(features=H), return_carry=True)
  (c_f, h_f), ys_f = rnn.apply({"params": {"cell": tree}}, xs,
                               initial_carry=interop.carry_to_flax(state0))
  _close(ys_f, ys, ATOL_FLAX)
  _close(c_f, final.c, ATOL_FLAX)
  _close(h_f, final.h, ATOL_FLAX)
  # One flax step with the bare tree, carry order (c, h).
  (c1, h1), y1 = flax_cell(features=H).apply({"params": tree},
                                             interop.carry_to_flax(state0), xs[:, 0])
  s1, y1_ours = lstm_jax.lstm_step(params, state0, xs[:, 0])
  _close(y1, y1_ours, ATOL_FLAX)
  _close(c1, s1.c, ATOL_FLAX)


def test_flax_round_trip_and_no_bias():
  cell = lstm_jax.make_cell("vanilla", H, forget_bias=0.0)
  params = _cell_params(cell, I)
  back = interop.from_flax_lstm(interop.to_flax_lstm(params))
  jax.tree.map(np.testing.assert_array_equal, back, params)
  tree = interop.to_flax_lstm(params)
  assert sorted(tree) == ["hf", "hg", "hi", "ho", "if", "ig", "ii", "io"]
  assert tree["ii"]["kernel"].shape == (I, H) and set(tree["ii"]) == {"kernel"}
  assert tree["ho"]["bias"].shape == (H,)
  # Flax init on the same shapes yields the same tree structure.
  flax_tree = jax.eval_shape(nn.LSTMCell(features=H).init, jax.random.key(0),
                             (jnp.zeros((1, H)), jnp.zeros((1, H))), jnp.zeros((1, I)))["params"]
  assert jax.tree.structure(flax_tree) == jax.tree.structure(tree)
  assert jax.tree.map(jnp.shape, flax_tree) == jax.tree.map(jnp.shape, tree)
  nobias = lstm_jax.make_cell("vanilla", H, use_bias=False)
  tree = interop.to_flax_lstm(_cell_params(nobias, I), nobias)
  np.testing.assert_array_equal(tree["hf"]["bias"], np.zeros(H))


def test_flax_bad_input():
  cell = lstm_jax.make_cell("vanilla", H)
  tree = interop.to_flax_lstm(_cell_params(cell, I))
  missing = {k: v for k, v in tree.items() if k != "hf"}
  with pytest.raises(ValueError, match=r"flax_params\['hf'\] is missing"):
    interop.from_flax_lstm(missing)
  wrong = dict(tree, ho={"kernel": tree["ho"]["kernel"], "bias": jnp.zeros(H + 1)})
  with pytest.raises(ValueError, match=r"flax_params\['ho'\]\['bias'\]: expected shape \(5,\).*"
                                       r"got \(6,\)"):
    interop.from_flax_lstm(wrong)
  with pytest.raises(ValueError, match=r"flax_params\['extra'\]"):
    interop.from_flax_lstm(dict(tree, extra={"kernel": jnp.zeros((I, H))}))
  with pytest.raises(ValueError, match=r"flax_params\['ii'\]: expected entries \['kernel'\]"):
    interop.from_flax_lstm(dict(tree, ii={"kernel": tree["ii"]["kernel"], "bias": jnp.zeros(H)}))
  lstmp = lstm_jax.make_cell("lstmp", H, proj_size=P)
  p = _cell_params(lstmp, I)
  with pytest.raises(ValueError, match=r"'lstmp' with proj_size=2"):
    interop.to_flax_lstm(p, lstmp)
  with pytest.raises(ValueError, match=r"params\['w_proj'\]"):
    interop.to_flax_lstm(p)
  with pytest.raises(ValueError, match=r"params\['w_x'\]: expected shape \[input_size, 20\]"):
    interop.to_flax_lstm(dict(_cell_params(cell, I), w_x=jnp.zeros((I, 12))))


def test_flax_carry_converters():
  c, h, g = (jnp.full((B, n), v) for n, v in ((H, 1.0), (P, 2.0), (3 * H, 3.0)))
  state = interop.carry_from_flax((c, h))
  assert state == lstm_jax.LSTMState(h=h, c=c, gates=None)
  assert interop.carry_from_flax(state) is state  # already ours
  assert interop.carry_to_flax(state) == (c, h)
  # Full gate recurrence: (c, h, gates) on the Flax side.
  fgr = interop.carry_from_flax([c, h, g])
  assert fgr.gates is g and fgr.c is c and fgr.h is h
  out = interop.carry_to_flax(fgr)
  assert type(out) is tuple and len(out) == 3 and out[2] is g
  with pytest.raises(ValueError, match=r"carry: expected a flax LSTM carry \(c, h\), or "
                                       r"\(c, h, gates\) for FGR, got tuple of 1"):
    interop.carry_from_flax((c,))
  with pytest.raises(ValueError, match="state: expected an lstm_jax.LSTMState, got tuple"):
    interop.carry_to_flax((c, h))


def test_flax_nnx_layouts():
  """The NNX trees (pure dicts, nnx.State) give the params the linen tree gives."""
  cell = lstm_jax.make_cell("vanilla", H, forget_bias=0.0)
  params = _cell_params(cell, I)
  linen_tree = interop.to_flax_lstm(params, cell)
  nnx_tree = interop.to_flax_lstm(params, cell, layout="nnx")
  fused = interop.to_flax_lstm(params, cell, layout="nnx_optimized")
  assert set(nnx_tree) == set(linen_tree) - {"if"} | {"if_"}
  np.testing.assert_array_equal(nnx_tree["if_"]["kernel"], linen_tree["if"]["kernel"])
  assert jax.tree.map(jnp.shape, fused) == {"dense_i": {"kernel": (I, 4 * H)},
                                            "dense_h": {"kernel": (H, 4 * H), "bias": (4 * H,)}}
  for tree in (nnx_tree, fused):
    jax.tree.map(np.testing.assert_array_equal, interop.from_flax_lstm(tree), params)
  # Flax's own NNX cells: their State and its pure dict read alike, with the
  # trees of Flax's cells (the f gate's input kernel is `if_` in nnx.LSTMCell).
  for flax_cell in (nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(0)),
                    nnx.LSTMCell(I, H, rngs=nnx.Rngs(0))):
    state = nnx.state(flax_cell, nnx.Param)
    got = interop.from_flax_lstm(state)
    jax.tree.map(np.testing.assert_array_equal, got,
                 interop.from_flax_lstm({"params": state.to_pure_dict()}))
    assert jax.tree.map(jnp.shape, got) == {"w_x": (I, 4 * H), "w_h": (H, 4 * H), "b": (4 * H,)}
  with pytest.raises(ValueError, match="layout='torch' is not allowed; allowed: 'linen', 'nnx', "
                                       "'nnx_optimized'"):
    interop.to_flax_lstm(params, layout="torch")
  with pytest.raises(ValueError, match=r"flax_params\['dense_h'\]: expected entries "
                                       r"\['kernel', 'bias'\], got \['kernel'\]"):
    interop.from_flax_lstm({"dense_i": fused["dense_i"],
                            "dense_h": {"kernel": fused["dense_h"]["kernel"]}})
  with pytest.raises(ValueError, match=r"flax_params\['dense_i'\]\['kernel'\]: expected shape "
                                       r"\[input_size, 20\]"):
    interop.from_flax_lstm({"dense_i": {"kernel": jnp.zeros((I, 8))}, "dense_h": fused["dense_h"]})
  fgr = lstm_jax.make_cell("fgr", H)
  with pytest.raises(ValueError, match="'fgr' cannot be converted to flax.nnx.OptimizedLSTMCell"):
    interop.to_flax_lstm(_cell_params(fgr, I), fgr, layout="nnx_optimized")

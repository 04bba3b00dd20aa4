"""The modern memory benchmarks: selective copying, MQAR, and parity and
modular arithmetic with length extrapolation. Batches are checked against
answers worked out again from the sampled inputs with plain Python; the
length-extrapolation tasks against their train and test length ranges, and
the evaluation path (``make_eval``, a run) against the longer test lengths."""

from __future__ import annotations

import functools
import importlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax import tasks, training
from lstm_jax.models import make_model
from lstm_jax.runner import train_and_evaluate
from lstm_jax.tasks import Batch, make_task
from test_experiments import _reference_training, _train_lines

B = 256
KEY = jax.random.key(3)

SMALL = {
    "selective_copy": dict(lag=12, num_tokens=4, num_symbols=5),
    "mqar": dict(lag=15, num_pairs=4, vocab_size=12),
    "parity": dict(lag=8, train_min=2, test_min=10, test_max=20),
    "modular_arithmetic": dict(lag=9, train_min=3, test_min=10, test_max=21),
}
LENGTH_TASKS = ("parity", "modular_arithmetic")


@functools.lru_cache(maxsize=None)
def _sampled(name: str, held_out: bool = False):
  """(task, batch as NumPy arrays) of the small configuration of ``name``
  (its held-out version with ``held_out``)."""
  task = make_task(name, **SMALL[name])
  task = task.held_out if held_out else task
  return task, Batch(*jax.device_get(task.sample(KEY, B)))


def _tokens(batch) -> np.ndarray:
  """``[B, T]`` token of every step (-1 on padding, whose inputs are all zero)."""
  return np.where(batch.inputs.sum(-1) > 0, batch.inputs.argmax(-1), -1)


def _cases():
  return [(name, held) for name in SMALL for held in ((False, True) if name in LENGTH_TASKS
                                                      else (False,))]


# ----------------------------------------------------------------------------
# Layout, shapes and determinism.


@pytest.mark.parametrize("name, held_out", _cases())
def test_shapes_dtypes_and_one_hot_inputs(name, held_out):
  task, batch = _sampled(name, held_out)
  t = task.max_length
  assert batch.inputs.shape == (B, t, task.input_size) and batch.inputs.dtype == np.float32
  assert batch.targets.shape == (B, t) and batch.targets.dtype == np.int32
  assert batch.mask.shape == (B, t) and batch.mask.dtype == np.float32
  assert batch.lengths.shape == (B,) and batch.lengths.dtype == np.int32
  assert 0 <= batch.targets.min() and batch.targets.max() < task.output_size
  real = np.arange(t)[None] < batch.lengths[:, None]
  assert (batch.inputs.sum(-1) == real).all()          # one-hot on real steps, zero after
  assert not batch.mask[~real].any() and not batch.targets[~real].any()


@pytest.mark.parametrize("name, held_out", _cases())
def test_sampling_is_deterministic_in_the_key(name, held_out):
  task, batch = _sampled(name, held_out)
  again = jax.device_get(task.sample(KEY, B))
  other = jax.device_get(task.sample(jax.random.key(4), B))
  for x, y in zip(batch, again):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(batch.inputs, other.inputs)


# ----------------------------------------------------------------------------
# Targets worked out again from the inputs.


def test_selective_copy_targets_are_the_data_tokens_in_order():
  task, batch = _sampled("selective_copy")
  k, v, length = task.num_tokens, task.num_symbols, task.lag
  tokens = _tokens(batch)
  assert task.max_length == length + k and (batch.lengths == length + k).all()
  assert (tokens[:, length:] == v + 1).all()                 # the marker steps
  assert batch.mask.sum() == B * k and (batch.mask[:, length:] == 1).all()
  positions_seen = np.zeros(length)
  for row in range(B):
    data = [int(x) for x in tokens[row, :length] if x != 0]   # noise is token 0
    assert len(data) == k and all(1 <= x <= v for x in data)
    assert [int(x) for x in batch.targets[row, length:]] == [x - 1 for x in data]
    positions_seen[np.flatnonzero(tokens[row, :length])] += 1
  assert positions_seen.min() > 0                            # the positions vary
  assert make_task("selective_copy").max_length == 4096 + 16


def test_mqar_targets_are_the_values_of_the_queried_keys():
  task, batch = _sampled("mqar")
  p, v = task.num_pairs, task.vocab_size
  tokens = _tokens(batch)
  for row in range(B):
    pairs = tokens[row, :2 * p]
    keys, values = list(pairs[0::2]), list(pairs[1::2])
    assert len(set(keys)) == p and all(0 <= x < v // 2 for x in keys)
    assert all(v // 2 <= x < v for x in values)
    table = dict(zip(keys, values))
    asked = []
    for t in range(2 * p, task.lag):
      token = int(tokens[row, t])
      if token == v:                                          # blank
        assert batch.mask[row, t] == 0
        continue
      asked.append(token)
      assert batch.mask[row, t] == 1 and batch.targets[row, t] == table[token] - v // 2
    assert sorted(asked) == sorted(keys)                      # each key queried once
  assert not batch.mask[:, :2 * p].any()


def test_parity_answers_by_counting_the_ones():
  for held_out in (False, True):
    _, batch = _sampled("parity", held_out)
    tokens = _tokens(batch)
    for row in range(B):
      n = int(batch.lengths[row])
      ones = 0
      for t in range(n):
        ones += int(tokens[row, t])
      assert batch.targets[row, n - 1] == ones % 2 and batch.mask[row, n - 1] == 1
      assert batch.mask[row].sum() == 1


def _expression(tokens, n) -> str:
  return "".join(str(int(x)) if x < 5 else "+-*"[int(x) - 5] for x in tokens[:n])


def test_modular_arithmetic_answers_by_python_evaluation():
  for held_out in (False, True):
    _, batch = _sampled("modular_arithmetic", held_out)
    tokens = _tokens(batch)
    for row in range(B):
      n = int(batch.lengths[row])
      assert n % 2 == 1
      assert all(tokens[row, t] < 5 for t in range(0, n, 2))
      assert all(5 <= tokens[row, t] < 8 for t in range(1, n, 2))
      text = _expression(tokens[row], n)
      assert batch.targets[row, n - 1] == eval(text) % 5, text  # Python: * before + and -
  # The prefix values of tasks.formal.running_value, on hand-written expressions.
  text = "3-4*2*0+1-2*4"
  codes = [int(c) if c.isdigit() else 5 + "+-*".index(c) for c in text]
  values = np.asarray(tasks.formal.running_value(jnp.asarray([codes], jnp.int32)))[0]
  assert [int(values[t]) for t in range(0, len(text), 2)] == [
      eval(text[:t + 1]) % 5 for t in range(0, len(text), 2)]


# ----------------------------------------------------------------------------
# Train and test lengths; the evaluation path.


@pytest.mark.parametrize("name", LENGTH_TASKS)
def test_train_and_held_out_length_ranges(name):
  task, train = _sampled(name)
  test_task, test = _sampled(name, True)
  odd = name == "modular_arithmetic"
  low, high = SMALL[name]["train_min"], SMALL[name]["lag"]
  want_train = {n - (odd and n % 2 == 0) for n in range(low, high + 1)}
  want_test = {n - (odd and n % 2 == 0) for n in range(SMALL[name]["test_min"],
                                                        SMALL[name]["test_max"] + 1)}
  assert set(train.lengths.tolist()) == want_train   # every length drawn, none outside
  assert set(test.lengths.tolist()) == want_test
  assert task.max_length == high and test_task.max_length == SMALL[name]["test_max"]
  assert (task.split, test_task.split) == ("train", "test")
  assert test_task.held_out is test_task and test_task != task
  assert task.held_out == test_task and hash(task.held_out) == hash(test_task)
  assert task.params == test_task.params == {"output_units": "task", **SMALL[name]}
  assert "split" not in tasks.task_params(name)
  # Defaults: xLSTM's split, train 3..40, test 40..256.
  default = make_task(name)
  assert (default.train_min, default.lag, default.test_min, default.test_max) == (3, 40, 40, 256)
  assert default.max_length == 40 and default.held_out.max_length == 256


def test_every_other_task_is_its_own_held_out_task():
  for name in tasks.TASK_NAMES:
    if name not in LENGTH_TASKS:
      task = make_task(name)
      assert task.held_out is task


def test_make_eval_draws_from_the_test_lengths():
  """``make_eval``'s loss and per-sequence metrics are those of the model on
  ``task.held_out.sample(key, n)``: the longer test sequences (parity; the
  mechanism is the base class's, shared by modular arithmetic)."""
  task = make_task("parity", **SMALL["parity"])
  model = make_model("vanilla", 4, task.output_size)
  params = model.init(jax.random.key(0), task.input_size)
  seeded = jax.tree_util.tree_map(lambda x: x[None], params)
  key = jax.random.key(9)
  loss, per_seq = training.make_eval(model, task, 16)(seeded, key[None])
  test = task.held_out
  held = test.sample(key, 16)
  assert int(held.lengths.max()) > task.lag          # longer than any training sequence
  out = jax.jit(model.apply)(params, held.inputs, held.lengths)
  np.testing.assert_allclose(float(loss[0]), float(test.loss(out, held)), rtol=1e-5)
  np.testing.assert_allclose(per_seq["loss"][0], test.per_sequence(out, held)["loss"],
                             rtol=1e-5)


# ----------------------------------------------------------------------------
# Metrics, baselines and criteria.


@pytest.mark.parametrize("name, held_out", _cases())
def test_perfect_outputs_pass_and_constant_outputs_fail(name, held_out):
  task, batch = _sampled(name, held_out)
  good = 30.0 * np.eye(task.output_size, dtype=np.float32)[batch.targets]
  flat = np.zeros(good.shape, np.float32)
  ok, ko = task.per_sequence(good, batch), task.per_sequence(flat, batch)
  assert bool(ok["correct"].all()) and not bool(ko["correct"].any())
  summary = task.summarize(jax.device_get(ok))
  assert summary["accuracy"] == 1.0
  reps = -(-task.criterion.eval_size // B)
  tile = lambda d: {k: np.tile(np.asarray(v), reps) for k, v in d.items()}  # noqa: E731
  assert task.criterion.eval_ok(tile(ok)) and not task.criterion.eval_ok(tile(ko))
  if name in ("selective_copy", "mqar"):
    assert summary["step_accuracy"] == 1.0
    # One wrong answer per sequence: step accuracy 1 - 1/K, no sequence correct.
    first = batch.mask.argmax(1)
    off = good.copy()
    off[np.arange(B), first] = np.roll(off[np.arange(B), first], 1, axis=-1)
    bad = jax.device_get(task.per_sequence(off, batch))
    k = task.num_tokens if name == "selective_copy" else task.num_pairs
    np.testing.assert_allclose(bad["step_accuracy"], 1 - 1 / k, rtol=1e-6)
    assert not bad["correct"].any()
  else:
    assert summary["normalized_accuracy"] == 1.0
    chance = task.summarize(jax.device_get(ko))
    assert chance["normalized_accuracy"] == pytest.approx(-task.chance_accuracy /
                                                          (1 - task.chance_accuracy))


@pytest.mark.parametrize("name, baseline", [
    ("selective_copy", math.log(5)), ("mqar", math.log(6)), ("parity", math.log(2))])
def test_memoryless_baseline_is_the_loss_of_uniform_outputs(name, baseline):
  task, batch = _sampled(name)
  assert task.baseline == pytest.approx(baseline)
  flat = np.zeros(batch.inputs.shape[:2] + (task.output_size,), np.float32)
  assert float(task.loss(flat, batch)) == pytest.approx(baseline, rel=1e-5)
  summary = task.summarize(jax.device_get(task.per_sequence(flat, batch)))
  assert summary["loss_over_baseline"] == pytest.approx(1.0, rel=1e-5)
  assert make_task("modular_arithmetic").baseline is None
  assert make_task("selective_copy").baseline == pytest.approx(math.log(16))


def test_criteria_are_this_projects_accuracy_thresholds():
  for name, metric in (("selective_copy", "step_accuracy"), ("mqar", "step_accuracy"),
                       ("parity", "accuracy"), ("modular_arithmetic", "accuracy")):
    rule = make_task(name).criterion
    assert rule.eval_rules == ((metric, ">=", 0.99),) and rule.eval_size == 1024
    assert rule.window == 0 and "this project's" in rule.description
  assert "40..256" in make_task("parity").criterion.description


# ----------------------------------------------------------------------------
# Bad parameters.


@pytest.mark.parametrize("call, pattern", [
    (lambda: make_task("selective_copy", lag=3, num_tokens=4),
     r"^selective_copy: lag=3 is not allowed; expected an integer >= num_tokens=4"),
    (lambda: make_task("selective_copy", num_tokens=0),
     r"^selective_copy: num_tokens=0 is not allowed; expected an integer >= 1"),
    (lambda: make_task("selective_copy", num_symbols=1),
     r"^selective_copy: num_symbols=1 is not allowed; expected an integer >= 2"),
    (lambda: make_task("mqar", vocab_size=7),
     r"^mqar: vocab_size=7 is not allowed; expected an even integer >= 4"),
    (lambda: make_task("mqar", vocab_size=8, num_pairs=5),
     r"^mqar: num_pairs=5 is not allowed; expected an integer in \[1, 4\]"),
    (lambda: make_task("mqar", lag=20, num_pairs=8),
     r"^mqar: lag=20 is not allowed; expected an integer >= 3 \* num_pairs = 24"),
    (lambda: make_task("parity", lag=10, train_min=11),
     r"^parity: train_min=11 is not allowed; expected an integer in \[1, 10\]"),
    (lambda: make_task("parity", lag=0), r"^parity: lag=0 is not allowed; expected an integer"),
    (lambda: make_task("modular_arithmetic", test_min=0),
     r"^modular_arithmetic: test_min=0 is not allowed; expected an integer >= 1"),
    (lambda: make_task("modular_arithmetic", test_min=50, test_max=49),
     r"^modular_arithmetic: test_max=49 is not allowed; expected an integer >= 50"),
    (lambda: make_task("parity", test_max=2.5), r"^parity: test_max=2\.5 is not allowed"),
    (lambda: make_task("parity", split="test"),
     r"^parity: unknown parameter split='test'; allowed parameters: lag, train_min, "
     r"test_min, test_max, output_units$"),
])
def test_bad_parameters_name_field_value_and_allowed(call, pattern):
  with pytest.raises(ValueError, match=pattern) as err:
    call()
  assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------
# Configs.

CONFIGS = ("selective_copy", "mqar", "parity", "modular_arithmetic")


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_build_with_other_cells_and_reject_bad_values(name):
  module = importlib.import_module(f"configs.{name}")
  for cell in ("vanilla", "gru", "mingru", "minlstm"):
    cfg = module.get_config("quick")
    cfg.model.cell = cell
    task, model, _ = config_lib.build(cfg)
    assert task.name == name and model.output_size == task.output_size
  full, _, _ = config_lib.build(module.get_config())
  assert full == make_task(name)                      # the config runs the task's defaults
  with pytest.raises(ValueError, match=r"config argument 'paper' is not allowed"):
    module.get_config("paper")
  cfg = module.get_config("quick")
  field = {"selective_copy": "num_tokens", "mqar": "num_pairs", "parity": "train_min",
           "modular_arithmetic": "test_min"}[name]
  cfg.task_params[field] = 0
  with pytest.raises(config_lib.ConfigError, match=rf"^config.task_params.{field}=0 is not "):
    config_lib.build(cfg)


def test_parity_quick_config_trains_end_to_end(tmp_path):
  """Two logged chunks of ``configs/parity.py:quick``: the losses are those of
  a reference training on the training lengths, and the final evaluation
  runs on the criterion's 1,024 held-out sequences."""
  cfg = importlib.import_module("configs.parity").get_config("quick")
  cfg.budget_sequences = 20 * cfg.batch_size
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False)
  assert summary["status"] == "finished" and summary["task"] == "parity"
  assert summary["sequences_seen"] == 160 and summary["solved"] is False
  lines = _train_lines(str(tmp_path))
  losses, _ = _reference_training(cfg, 20)
  np.testing.assert_allclose([l["loss"] for l in lines], losses.reshape(2, 10).mean(1),
                             rtol=1e-5)
  with open(tmp_path / "metrics.jsonl") as f:
    [final] = [json.loads(l) for l in f if '"eval"' in l]
  assert final["count"] == 1024.0 and "normalized_accuracy" in final
  assert summary["metrics"]["accuracy"] == final["accuracy"]

"""Shared test setup.

The test process has two CPU devices, so runs with several seeds split them
across devices (lstm_jax.devices) as they do on a multi-core machine. The
README's test command runs the files on two pytest-xdist workers
(``-n 2 --dist loadfile``: a file's tests, and its module fixtures, stay on one
worker); the suite also runs without ``-n``.

PyTorch is optional: tests that compare against it take the ``torch``
fixture, which skips them when torch cannot be imported. Setting
``LSTM_JAX_REQUIRE_TORCH=1`` (``.ci/run`` does, after installing torch) makes
those tests fail instead, so a CI run cannot pass with them silently skipped.
"""

import os

# Tiny shapes: compile time dominates the suite and LLVM's optimisations do not
# pay for themselves, so the tests (and the CLI processes they start, which
# inherit the environment) compile with them off. Set before JAX starts its backend.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

jax.config.update("jax_num_cpu_devices", 2)

REQUIRE_TORCH = os.environ.get("LSTM_JAX_REQUIRE_TORCH", "").strip() not in ("", "0")


@pytest.fixture(scope="session")
def torch():
  """The ``torch`` module; skips the test without it, or fails it where
  ``LSTM_JAX_REQUIRE_TORCH`` is set."""
  if not REQUIRE_TORCH:
    return pytest.importorskip("torch")
  try:
    import torch as module  # pylint: disable=import-outside-toplevel
    return module
  except ImportError as err:
    reason = str(err)
  pytest.fail(f"LSTM_JAX_REQUIRE_TORCH={os.environ['LSTM_JAX_REQUIRE_TORCH']!r} but torch "
              f"cannot be imported ({reason}); install torch (.ci/run installs torch==2.13.0) "
              "or unset LSTM_JAX_REQUIRE_TORCH to skip the torch tests", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache per test process, shared with the
  CLI processes it starts: a program compiled again (the same small run in
  another test, or in a ``python -m experiments.run`` started by one) is loaded
  instead of compiled. Under pytest-xdist each worker has its own."""
  path = str(tmp_path_factory.mktemp("xla_cache"))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return path

"""The test process has two CPU devices, so runs with several seeds split them
across devices (lstm_jax.ensemble) as they do on a multi-core machine."""

import jax

jax.config.update("jax_num_cpu_devices", 2)

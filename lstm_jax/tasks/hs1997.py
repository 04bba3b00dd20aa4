"""The Hochreiter & Schmidhuber (1997) experiments in one namespace.

Exp 1 (embedded Reber grammar) lives in :mod:`lstm_jax.tasks.reber`; Exp 2 in
:mod:`~lstm_jax.tasks.lag_prediction`, Exp 3 in :mod:`~lstm_jax.tasks.two_sequence`,
Exp 4 and 5 in :mod:`~lstm_jax.tasks.arithmetic`, Exp 6 (and its lag-scaled form)
in :mod:`~lstm_jax.tasks.temporal_order`. This module only re-exports them.
"""

from __future__ import annotations

from lstm_jax.tasks.arithmetic import Adding1997, Multiplication1997
from lstm_jax.tasks.lag_prediction import DistractorLongLag, NoiseFreeLongLag, NoisyLongLag
from lstm_jax.tasks.reber import EmbeddedReber
from lstm_jax.tasks.temporal_order import TemporalOrder6a, TemporalOrder6b
from lstm_jax.tasks.two_sequence import (TwoSequence, TwoSequenceNoisy,
                                         TwoSequenceNoisyTargets)

EXPERIMENTS = {
    "1": EmbeddedReber, "2a": NoiseFreeLongLag, "2b": NoisyLongLag, "2c": DistractorLongLag,
    "3a": TwoSequence, "3b": TwoSequenceNoisy, "3c": TwoSequenceNoisyTargets,
    "4": Adding1997, "5": Multiplication1997, "6a": TemporalOrder6a, "6b": TemporalOrder6b,
}
"""Experiment number in the paper -> task class."""

__all__ = ["EXPERIMENTS", "Adding1997", "DistractorLongLag", "EmbeddedReber",
           "Multiplication1997", "NoiseFreeLongLag", "NoisyLongLag", "TemporalOrder6a",
           "TemporalOrder6b", "TwoSequence", "TwoSequenceNoisy", "TwoSequenceNoisyTargets"]

"""Forecasting: when waiting jobs would start, by replaying the live state forward with the same scheduler.

A service both the simulator and the control plane call: ``replay.forecast_private_starts`` (given the
replay engine, the simulator's ``replay_first_starts``, by whoever calls it) and ``runtimes`` (run-time
estimates learned from finished jobs). It imports neither the simulator nor the control plane.
"""

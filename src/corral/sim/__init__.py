"""Discrete-event simulator: replays a scenario through the same scheduler the control plane runs."""

"""Execution backends: make the pods the store says should run actually run, and report how they end."""

"""Experiments that measure corral's scheduler against published results (run by ``corral bench``)."""

"""Pipelines: steps that are corral jobs, artifacts passed between them, and caching that says why."""

"""Scenario files (format v1): cluster YAML, workload JSONL, event log JSONL and summary JSON."""

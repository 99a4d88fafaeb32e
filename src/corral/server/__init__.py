"""The HTTP API (FastAPI): /api/v1."""

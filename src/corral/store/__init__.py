"""The control plane's store: jobs, queues, nodes and events in SQL (SQLite embedded, PostgreSQL in production)."""

"""User-written specs (job files) and how they are validated."""

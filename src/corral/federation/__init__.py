"""Federation: what may cross from the organisation's private clusters to public ones."""

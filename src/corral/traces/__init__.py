"""Importers that turn published cluster traces into corral scenarios."""

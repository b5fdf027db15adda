"""Alembic migrations of the twin store, shipped inside the package and run on open."""

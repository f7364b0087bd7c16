"""Alembic migrations for levant.db (env.py, script template, versions/)."""

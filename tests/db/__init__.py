"""Tests for levant.db: migrations, engines, column types."""

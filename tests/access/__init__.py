"""Tests for levant.access: keys, tenancy, audit, usage, and the keys/audit CLI."""

"""Stored files (``/v1/files``): bytes in a content-addressed store, metadata in the database."""

from levant.files.records import FileNotFound, owner_key
from levant.files.store import FileStore, TooLarge, file_store

__all__ = ["FileNotFound", "FileStore", "TooLarge", "file_store", "owner_key"]

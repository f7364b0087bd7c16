"""The engine: token ids in, token ids out. No HTTP, keys or JSON here."""

"""Tokenizers and chat templates: text and chat messages to token ids and back."""

"""Levant: run your own model provider.

Open-weight and commercial models behind a Mistral- and OpenAI-compatible API,
a chat app, and self-hosting of the open weights.
"""

__version__ = "0.1.0"

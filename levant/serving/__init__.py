"""Text generation on top of the engine: chat rendering, detokenizing, stop strings.

Sits between the API (wire formats) and the engine (token ids): it turns an
internal chat request into prompt ids and the engine's token deltas into text.
"""

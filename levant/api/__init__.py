"""The HTTP API: wire formats in and out, nothing about tensors."""

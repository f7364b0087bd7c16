"""Model architectures, weight loaders and tokenizers.

Architectures are plain ``nn.Module``s that read like the paper; loaders turn a
file format into a ``ModelConfig`` plus a state dict in our parameter names.
"""

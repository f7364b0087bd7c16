"""Structured outputs and tool calling: JSON schemas, tools and tool calls as grammars.

Sits between the API (wire formats) and the engine (token ids): it knows JSON schemas,
tool definitions and a model's tokenizer, and hands the engine an opaque
``LogitsConstraint`` per request and the serving loop an ``OutputParser``.

- ``grammar.py``       llguidance grammars for one tokenizer, LRU-cached; the constraint
- ``llg_tokenizer.py`` our tokenizers as llguidance sees them
- ``json_schema.py``   embedding client schemas in one document (``$ref``-safe)
- ``tools.py``         function tools, tool choice, tool-call ids
- ``syntax.py``        the contracts: OutputSpec, ToolSyntax, OutputParser
- ``envelope.py``      tools for templates without tool syntax (a JSON envelope)
- ``mistral_syntax.py`` tools for Mistral tokenizers (mistral-common's control tokens)
- ``hermes_syntax.py`` tools for chat templates with ``<tool_call>`` blocks (Qwen, Hermes)
- ``lead_parser.py``   answers that are content or, from the first character, calls
- ``output.py``        per model: pick the syntax, plan one request's output
"""

"""assistant: a private, local desktop LLM assistant."""

__version__ = "0.2.0"

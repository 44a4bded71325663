"""picochat: train a small ChatGPT-like model end to end, from raw text to a web chat."""

__version__ = "0.1.0"

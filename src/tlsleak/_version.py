"""The version, in a module of its own so every layer may name it (reports, the CLI)."""

__version__ = "0.1.0"

"""The package's version, in a module of its own: what a node's join says it runs."""

__version__ = "0.1.0"

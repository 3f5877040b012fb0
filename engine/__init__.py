"""Atelier engine. Importing the package stays light: torch loads only where models run."""

__version__ = "0.1.0"

"""``python -m vaecodec`` runs the command line."""

from .cli import entry

entry()

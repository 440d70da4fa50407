"""The command-line interface: parses options, calls one API function, renders the result."""

from napkin.cli.app import app, main

__all__ = ["app", "main"]

"""Subcommands of the speedtrace CLI, one module each."""

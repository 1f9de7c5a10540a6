"""Subcommands, one file each; each exposes register(app)."""

"""The `meterline` command: a thin front door that imports each package lazily, per subcommand."""

__version__ = "0.1.0"

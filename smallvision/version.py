"""The package's version: the one place it is stated (pyproject.toml reads it; the server and `--version` show it)."""

__version__ = "0.1.0"

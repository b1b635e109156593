"""ICM, the Intelligent Contact Manager for Asterisk."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("icm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

"""worldprobe: probe what language models know about where and when."""

from importlib.metadata import PackageNotFoundError, version

from worldprobe.errors import WorldprobeError

try:
    __version__ = version("worldprobe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["WorldprobeError", "__version__"]

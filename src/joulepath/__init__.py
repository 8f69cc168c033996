"""joulepath: follow every joule of an AI workload from a token on a device to the meter at the wall."""

__version__ = "0.1.0"

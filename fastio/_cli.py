"""Shared pieces of fastio's command lines."""

import argparse
import math
from typing import Callable, Optional, TypeVar

__all__ = ["bounded", "format_address"]

_N = TypeVar("_N", int, float)


def bounded(kind: Callable[[str], _N], low: _N, high: Optional[_N] = None) -> Callable[[str], _N]:
    """Return an argparse type accepting `kind` values in [low, high]."""
    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if isinstance(value, float) and not math.isfinite(value):
            # (NaN compares false with any bound; an endless duration or
            # timeout is not what a bound from below asks for either)
            raise argparse.ArgumentTypeError("not a finite number: %r" % text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                "%s is out of range (%s..%s)" % (text, low, "" if high is None else high))
        return value
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def format_address(host: str, port: int) -> str:
    """Return ``host:port``, with an IPv6 host in brackets (``[::1]:10000``)."""
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)

"""Shared pieces of fastio's command lines."""

import argparse

__all__ = ["bounded"]


def bounded(kind, low, high=None):
    """Return an argparse type accepting `kind` values in [low, high]."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                "%s is out of range (%s..%s)" % (text, low, "" if high is None else high))
        return value
    parse.__name__ = kind.__name__
    return parse

"""fastio's loggers: all under "fastio", silent until the application configures logging.

Modules that log take their logger from `get_logger`, so the "fastio" logger
has its NullHandler whenever one of them is imported; ``import fastio`` alone
does not import `logging` (it would cost every program's start).
"""

import logging

# A library's loggers stay silent until the application configures logging
# (without a handler, logging's last resort would print warnings to stderr).
logging.getLogger("fastio").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """Return the logger `name`, one of the "fastio" namespace."""
    return logging.getLogger(name)

"""The AMQP pair's two implementations as one fixture: the compiled
`fastio._impl.amqp_c` and its pure-Python twin `fastio._impl.amqp_py`.

Import the fixture into a test module with
``from amqp_twins import amqp``.
"""

import pytest

import implementations
from fastio._impl import amqp_py, compiled

#: The modules built here, by implementation name.
TWINS = {"py": amqp_py}
if compiled("amqp") is not None:
    TWINS["c"] = compiled("amqp")


@pytest.fixture
def amqp(implementation):
    """Return the amqp pair's module of each implementation in turn."""
    return implementations.pair(implementation, "amqp")

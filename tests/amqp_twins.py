"""The AMQP outbox's two implementations as one fixture: the compiled
`fastio._amqp` and its pure-Python twin `fastio._pyamqp`.

Import the fixture into a test module with
``from amqp_twins import amqp``.
"""

import pytest

import fastio
from fastio import _pyamqp

TWINS = {"python": _pyamqp}
if fastio._ext.amqp is not None:
    TWINS["cython"] = fastio._ext.amqp


@pytest.fixture(params=["cython", "python"])
def amqp(request):
    """Return each twin module in turn; skip the compiled one where it is not built."""
    if request.param not in TWINS:
        pytest.skip("fastio._amqp is not built")
    return TWINS[request.param]

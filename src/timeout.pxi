# Timeouts: seconds in, whole units out, never early.
#
# The stdlib rounds a selector timeout *up* to the syscall's resolution
# (math.ceil(timeout * 1e3) ms for epoll and poll; microseconds for select),
# so a wait never ends before the time asked for. fastio does the same and
# raises the same exception types for the same bad values: TypeError for
# what cannot be compared with 0, ValueError for NaN, OverflowError past the
# syscall's range (INT_MAX ms for epoll/poll, ~292 years for select).

cdef enum:
    NS_PER_MS = 1000000
    NS_PER_US = 1000

cdef int64_t MAX_MS = 2147483647
cdef int64_t MAX_US = 9223372036854775 # int64 nanoseconds / 1000


cdef int64_t timeout_to_ns(object timeout, int64_t unit_ns) except -2:
    """Return `timeout` seconds as ns rounded up to `unit_ns`; -1 means forever.

    None waits forever; zero or negative (including -inf) means don't block.
    """
    cdef double t
    cdef int64_t limit = MAX_MS if unit_ns == NS_PER_MS else MAX_US
    if timeout is None:
        return -1
    if type(timeout) is float or type(timeout) is int:
        t = timeout
        if t <= 0:
            return 0
        if t != t:
            raise ValueError("cannot convert float NaN to integer")
        return seconds_to_ns(t, unit_ns)
    # Anything else goes through the stdlib's own expressions, so it fails
    # (or not) exactly as the stdlib does.
    if timeout <= 0:
        return 0
    units_obj = _math.ceil(timeout * (1e9 / <double>unit_ns))
    if units_obj > limit:
        raise OverflowError("timeout is too large")
    return <int64_t>units_obj * unit_ns


cdef int64_t seconds_to_ns(double t, int64_t unit_ns) except -2:
    """Return `t` > 0 seconds as ns rounded up to `unit_ns`.

    :raises OverflowError: past the syscall's range.
    """
    cdef int64_t limit = MAX_MS if unit_ns == NS_PER_MS else MAX_US
    cdef double units = ceil(t * (1e9 / <double>unit_ns))
    # (the double compare first: casting a double past int64 is undefined;
    # then the exact one, as MAX_US is not a double)
    if units > <double>limit or <int64_t>units > limit:
        raise OverflowError("timeout is too large")
    return <int64_t>units * unit_ns


cdef object select_timeout(object timeout):
    """Check a timeout as the stdlib's SelectSelector and select.select()
    do: max(timeout, 0), then a float or an int (what has __index__); any
    other number is select.select()'s TypeError."""
    timeout = max(timeout, 0)
    if isinstance(timeout, float):
        return timeout
    try:
        return _operator.index(timeout)
    except TypeError:
        pass
    if _sys.version_info < (3, 10) and hasattr(type(timeout), "__int__"):
        # 3.9's select.select() still takes what has __int__ (a Decimal).
        _warnings.warn("an integer is required (got type %s).  Implicit conversion to "
                       "integers using __int__ is deprecated, and may be removed in a "
                       "future version of Python." % type(timeout).__name__,
                       DeprecationWarning, 1)
        return int(timeout)
    raise TypeError("timeout must be a float or None")


cdef inline int ns_to_ms(int64_t ns) noexcept nogil:
    """Round a ns timeout up to whole ms for epoll_wait/poll (-1 stays -1)."""
    if ns < 0:
        return -1
    return <int>((ns + NS_PER_MS - 1) // NS_PER_MS)

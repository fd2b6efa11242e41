# SelectorCore: the C half of fastio.selectors' classes.
#
# fastio.selectors defines `class EpollSelector(SelectorCore, BaseSelector)`
# and friends: this base does the work, the stdlib ABC supplies the type
# identity and __enter__/__exit__, and the Python subclass gives instances a
# __dict__ (the stdlib test suite replaces methods on instances).
#
# The behaviour copies the stdlib's selectors.py line by line, including its
# quirks (PollSelector/EpollSelector.modify don't validate events;
# SelectSelector.modify re-registers and so does; select() masks events with
# key.events), and evaluates the same Python expressions wherever an argument
# is not a plain int, so odd arguments fail with the same exception types.
#
# The state is the stdlib's: `_fd_to_key` is a real dict {fd: SelectorKey}
# and `_map` the stdlib's _SelectorMapping over it, so code that reaches for
# these private names keeps working. `_selector` is the poller made by
# `_selector_cls()`; when it is one of ours, calls skip Python entirely, and
# when it is anything else (a mock, a subclass's own poller) every call goes
# through its Python methods, as the stdlib's would.

cdef object SelectorKey = _stdlib_selectors.SelectorKey
cdef object _SelectorMapping = _stdlib_selectors._SelectorMapping
cdef object _fileobj_to_fd = _stdlib_selectors._fileobj_to_fd

cdef enum:
    EVENT_READ = 1
    EVENT_WRITE = 2


cdef inline uint32_t poller_bits(object events) except? 0xFFFFFFFF:
    """Map selector events to POLLIN/POLLOUT bits (EPOLLIN/EPOLLOUT alike)."""
    cdef int overflow = 0
    cdef long long v
    if type(events) is int:
        v = PyLong_AsLongLongAndOverflow(events, &overflow)
        if not overflow:
            return (POLLIN if v & EVENT_READ else 0) | (POLLOUT if v & EVENT_WRITE else 0)
    return ((POLLIN if events & EVENT_READ else 0)
            | (POLLOUT if events & EVENT_WRITE else 0))


cdef inline int selector_events(uint32_t revents) noexcept:
    """Map reported poller bits to selector events, as the stdlib does.

    Anything but "readable" (writable, hang-up, error) counts as writable,
    and anything but "writable" as readable, so a hang-up wakes both sides.
    """
    return ((EVENT_WRITE if revents & ~POLLIN else 0)
            | (EVENT_READ if revents & ~POLLOUT else 0))


cdef inline object masked(int events, object key):
    """Return `events & key.events`."""
    cdef object kev = <object>PyTuple_GET_ITEM(key, 2)
    cdef int overflow = 0
    cdef long long v
    if type(kev) is int:
        v = PyLong_AsLongLongAndOverflow(kev, &overflow)
        if not overflow:
            return PyLong_FromLong(events & v)
    return events & kev


cdef inline bint is_key(object key):
    return type(key) is SelectorKey or (isinstance(key, tuple) and PyTuple_GET_SIZE(key) == 4)


cdef inline bint valid_events(object events) except -1:
    """Apply the stdlib's register() check: non-zero, only READ and WRITE bits."""
    if type(events) is int and (events == 1 or events == 2 or events == 3):
        return True
    return not ((not events) or (events & ~(EVENT_READ | EVENT_WRITE)))


cdef class SelectorCore:
    """Selector state and hot paths shared by every fastio selector class."""

    cdef object _sel
    cdef Poller _poller
    cdef int64_t _unit
    cdef bint _is_select  # select(2): select.select()'s checks (_select_call)
    cdef bint _reregisters
    cdef public dict _fd_to_key
    cdef public object _map
    # select()'s result cache, indexed by fd: the last (key, events) tuple
    # reported for that fd, or None; `_sev[fd]` is the unmasked selector
    # events it was built from. A Python list, so the GC sees the keys.
    cdef list _results
    cdef unsigned char *_sev

    def __dealloc__(self):
        PyMem_Free(self._sev)

    def __init__(self):
        self._results = []
        self._fd_to_key = {}
        self._map = _SelectorMapping(self)
        self._reregisters = getattr(type(self), "_modify_reregisters", False)
        self._selector = self._selector_cls()

    @property
    def _selector(self):
        return self._sel

    @_selector.setter
    def _selector(self, value):
        self._sel = value
        self._poller = value if isinstance(value, Poller) else None
        self._unit = self._poller._timeout_unit() if self._poller is not None else NS_PER_MS
        self._is_select = isinstance(value, SelectPoller)

    # ------------------------------------------------------------ lookup

    cdef object _lookup(self, object fileobj):
        """Return the fd of `fileobj` as the stdlib's _fileobj_lookup does."""
        cdef object fd
        if type(fileobj) is int:
            if fileobj < 0:
                raise ValueError("Invalid file descriptor: {}".format(fileobj))
            return fileobj
        try:
            fd = fileobj.fileno()
        except (AttributeError, TypeError, ValueError):
            fd = None
        if type(fd) is int and fd >= 0:
            return fd
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            # A closed socket has fileno() == -1: find it by identity.
            for key in self._fd_to_key.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def _fileobj_lookup(self, fileobj):
        """Return the fd of `fileobj`; search registered keys if it has none."""
        return self._lookup(fileobj)

    cdef uint32_t _flags_for(self, object flags) except? 0xFFFFFFFF:
        cdef uint32_t v
        if flags is None or (type(flags) is int and flags == 0):
            return 0
        v = mask_from_object(flags)
        if self._poller is not None and v & ~self._poller.flag_mask:
            raise ValueError("unsupported flags for %s: %#x" % (type(self).__name__, v))
        return v

    # ---------------------------------------------------------- register

    def register(self, fileobj, events, data=None, *, flags=0):
        """Same contract as `selectors.BaseSelector.register`.

        :param flags: extra poller bits (see fastio.selectors).
        """
        cdef uint32_t mask
        if not valid_events(events):
            raise ValueError("Invalid events: {!r}".format(events))
        fd = self._lookup(fileobj)
        key = fastio_key_new(SelectorKey, fileobj, fd, events, data)
        fd_to_key = self._fd_to_key
        mask = poller_bits(events) | self._flags_for(flags)
        if <object>PyDict_SetDefault(fd_to_key, fd, key) is not key:
            raise KeyError("{!r} (FD {}) is already registered".format(fileobj, fd))
        try:
            self._warn_bool_fd(fd)
            if self._poller is not None:
                if self._map is None and not self._poller._kernel_table:
                    mask = self._poller._take_stale(fd, mask, self._reregisters)
                self._poller._add_obj(fd, mask)
            else:
                self._sel.register(fd, mask)
        except BaseException:
            del fd_to_key[fd]
            raise
        return key

    def unregister(self, fileobj):
        """Same contract as `selectors.BaseSelector.unregister`."""
        try:
            key = self._fd_to_key.pop(self._lookup(fileobj))
        except KeyError:
            raise KeyError("{!r} is not registered".format(fileobj)) from None
        fd = <object>PyTuple_GET_ITEM(key, 1)
        self._forget_result(fd)
        try:
            self._warn_bool_fd(fd)
            if self._poller is not None:
                self._poller._del_obj(fd)
            else:
                self._sel.unregister(fd)
        except OSError:
            # The fd was closed since it was registered.
            pass
        return key

    def modify(self, fileobj, events, data=None, *, flags=None):
        """Same contract as `selectors.BaseSelector.modify`.

        :param flags: extra poller bits; None keeps the registered ones. When
            given, the fd is re-armed in the kernel even if nothing changed.
        """
        cdef uint32_t mask, flag_bits
        cdef Poller poller = self._poller
        try:
            key = self._fd_to_key[self._lookup(fileobj)]
        except KeyError:
            raise KeyError("{!r} is not registered".format(fileobj)) from None
        fd = <object>PyTuple_GET_ITEM(key, 1)
        if flags is not None or events != <object>PyTuple_GET_ITEM(key, 2):
            if self._reregisters:
                # SelectSelector.modify() is unregister() + register(), and
                # a register() that fails leaves the fd unregistered.
                self._flags_for(flags)
                self.unregister(fileobj)
                return self.register(fileobj, events, data)
            mask = poller_bits(events)
            if flags is not None:
                flag_bits = self._flags_for(flags)
            elif poller is not None:
                flag_bits = poller._mask_of(fd_as_c(fd)) & poller.flag_mask
            else:
                flag_bits = 0
            try:
                self._warn_bool_fd(fd)
                if poller is not None:
                    poller._mod(fd_as_c(fd), mask | flag_bits)
                else:
                    self._sel.modify(fd, mask | flag_bits)
            except BaseException:
                # Leave no half-registered fd behind: drop it from the map and,
                # unlike the stdlib, from the poller too.
                del self._fd_to_key[fd]
                if poller is not None:
                    try:
                        poller._del(fd_as_c(fd))
                    except OSError:
                        pass
                raise
            key = fastio_key_new(SelectorKey, <object>PyTuple_GET_ITEM(key, 0), fd, events, data)
            self._fd_to_key[fd] = key
            self._forget_result(fd)
        elif data != <object>PyTuple_GET_ITEM(key, 3):
            # Events compare equal but may differ in type (1.0 == 1): the
            # poll-like stdlib classes store the new ones, SelectSelector not.
            key = fastio_key_new(SelectorKey, <object>PyTuple_GET_ITEM(key, 0), fd,
                                 <object>PyTuple_GET_ITEM(key, 2) if self._reregisters else events,
                                 data)
            self._fd_to_key[fd] = key
            self._forget_result(fd)
        return key

    cdef inline int _warn_bool_fd(self, object fd) except -1:
        # Where the stdlib's select.epoll/poll calls warn (register, modify,
        # unregister); select.select() warns in select() instead.
        if (type(fd) is bool and BOOL_FD_WARNS and self._poller is not None
                and not self._is_select):
            warn_bool_fd()
        return 0

    cdef inline object _select_call(self, object timeout):
        # On select(2), what select.select() checks on each call: the
        # timeout's type, and (3.12+) a bool registered as an fd.
        if self._is_select:
            if not (timeout is None or type(timeout) is float or type(timeout) is int):
                timeout = select_timeout(timeout)
            if BOOL_FD_WARNS and self._fd_to_key:
                self._warn_selecting_bools()
        return timeout

    cdef int _warn_selecting_bools(self) except -1:
        cdef PyObject *key
        for fd in (0, 1):
            key = PyDict_GetItem(self._fd_to_key, fd)
            if key != NULL and type(<object>PyTuple_GET_ITEM(<object>key, 1)) is bool:
                warn_bool_fd()
        return 0

    # ------------------------------------------------------------ select

    def select(self, timeout=None):
        """Same contract as `selectors.BaseSelector.select`.

        The wait runs without the GIL; a timeout rounds up to whole ms
        (epoll, poll) or µs (select), so it never ends early.
        """
        cdef int64_t ns = timeout_to_ns(self._select_call(timeout), self._unit)
        cdef Poller poller = self._poller
        cdef Py_ssize_t n, i, k = 0
        cdef fastio_event *buf
        cdef PyObject *key
        cdef PyObject *hit
        cdef int fd, sev
        cdef dict fd_to_key = self._fd_to_key
        cdef list results = self._results
        cdef Py_ssize_t nresults = len(results)
        cdef list ready
        if poller is None:
            return self._select_python(ns)
        n = poller._wait(ns, -1, &buf)
        try:
            # Filled in place and cut to size: no append, no over-allocation.
            ready = PyList_New(n)
            try:
                for i in range(n):
                    fd = buf[i].fd
                    sev = selector_events(buf[i].events)
                    if fd < nresults:
                        hit = PyList_GET_ITEM(results, fd)
                        if hit != <PyObject *>None:
                            # The dict stays the source of truth: the cached
                            # key must still be the one registered for fd.
                            # Looking it up by its own fd object saves a
                            # PyLong allocation per event.
                            t = <object>hit
                            ckey = <object>PyTuple_GET_ITEM(t, 0)
                            key = PyDict_GetItem(fd_to_key, <object>PyTuple_GET_ITEM(ckey, 1))
                            if key == <PyObject *>ckey and self._sev[fd] == sev:
                                fastio_list_fill(ready, k, t)
                                k += 1
                                continue
                    key = PyDict_GetItem(fd_to_key, PyLong_FromLong(fd))
                    if key == NULL or not is_key(<object>key):
                        continue
                    t = (<object>key, masked(sev, <object>key))
                    fastio_list_fill(ready, k, t)
                    k += 1
                    self._remember_result(fd, sev, t)
            finally:
                fastio_list_truncate(ready, k)
        finally:
            poller._release(buf)
        return ready

    cdef int _remember_result(self, int fd, int sev, tuple t) except -1:
        """Cache `t` as fd's result if reusing it is indistinguishable from
        building it again: a SelectorKey whose fd is this int and whose
        events are an int (so `events & key.events` has no side effects)."""
        cdef object key = <object>PyTuple_GET_ITEM(t, 0)
        cdef object kfd
        cdef Py_ssize_t size, cap
        if type(key) is not SelectorKey:
            return 0
        kfd = <object>PyTuple_GET_ITEM(key, 1)
        if type(kfd) is not int or type(<object>PyTuple_GET_ITEM(key, 2)) is not int or kfd != fd:
            return 0
        size = len(self._results)
        if fd >= size:
            if fd >= FASTIO_FDTABLE_DIRECT_MAX:
                return 0
            cap = size
            fastio_fdtable_reserve(<void **>&self._sev, &cap, 1, fd, NULL)
            self._results.extend([None] * (cap - size))
        self._results[fd] = t
        self._sev[fd] = <unsigned char>sev
        return 0

    cdef inline int _forget_result(self, object fd) except -1:
        """Release the cached result of `fd` (so its key can be freed)."""
        cdef long long i = fastio_fdtable_index(fd, len(self._results))
        if i >= 0:
            self._results[i] = None
        return 0

    cdef list _select_python(self, int64_t ns):
        """select() over a poller that is not ours, through its poll()."""
        ready = []
        for fd, revents in self._sel.poll(None if ns < 0 else ns / 1e9):
            key = self._fd_to_key.get(fd)
            if key:
                ready.append((key, masked(selector_events(revents), key)))
        return ready

    def select_fds(self, timeout=None):
        """Wait like select(), but return ``(fd, events)`` pairs: no keys built.

        `events` are EVENT_READ / EVENT_WRITE bits masked by the fd's
        registered events; fds not registered are dropped.
        """
        cdef int64_t ns = timeout_to_ns(self._select_call(timeout), self._unit)
        cdef Poller poller = self._poller
        cdef Py_ssize_t n, i
        cdef fastio_event *buf
        cdef uint32_t mask
        cdef int slot, events
        if poller is None:
            return [(key.fd, events) for key, events in self._select_python(ns)]
        n = poller._wait(ns, -1, &buf)
        # After close(), poll/select registrations linger (as the stdlib's
        # do); only fds registered since then have keys to report.
        closed = self._map is None
        try:
            ready = []
            for i in range(n):
                if not poller._lookup(buf[i].fd, &mask, &slot):
                    continue
                if closed:
                    key = self._fd_to_key.get(buf[i].fd)
                    if key is None:
                        continue
                    ready.append((buf[i].fd, masked(selector_events(buf[i].events), key)))
                    continue
                events = selector_events(buf[i].events) & selector_events_registered(mask)
                ready.append((buf[i].fd, events))
        finally:
            poller._release(buf)
        return ready

    # ------------------------------------------------------------ the map

    def get_key(self, fileobj):
        """Same contract as `selectors.BaseSelector.get_key`."""
        if self._map is None:
            raise RuntimeError("Selector is closed")
        try:
            return self._fd_to_key[self._lookup(fileobj)]
        except KeyError:
            raise KeyError("{!r} is not registered".format(fileobj)) from None

    def get_map(self):
        """Same contract as `selectors.BaseSelector.get_map`."""
        return self._map

    def close(self):
        """Same contract as `selectors.BaseSelector.close`."""
        # Like the stdlib, the poll/select registrations outlive close(): a
        # select() after it still waits on them (and fails as the stdlib's
        # does if one was closed); register() after it replaces them.
        self._fd_to_key.clear()
        self._map = None
        self._results = []


cdef inline int selector_events_registered(uint32_t mask) noexcept:
    return (EVENT_READ if mask & POLLIN else 0) | (EVENT_WRITE if mask & POLLOUT else 0)


cdef inline long long fd_as_c(object fd) except? -1:
    """Return a key's fd as a C integer."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(fd, &overflow)
    if overflow:
        raise OverflowError("Python int too large to convert to C int")
    return v

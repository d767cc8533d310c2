# cython: language_level=3
"""Routing table: public name -> (upstream index, upstream-side name), per kind.

Compiled twin of ``routing_table_py.py``; both must behave identically, errors included
(tests/test_routing.py compares them on random operation sequences). So the arguments
are plain objects checked by hand rather than typed (``int kind`` would raise Cython's
own TypeError or OverflowError, and ``str name`` would let None through). The three
kind maps are typed C fields so a lookup is a type check, one small-int comparison and
one dict probe, with no attribute or list indexing through Python.
"""

KIND_TOOL = 0
KIND_PROMPT = 1
KIND_RESOURCE = 2


cdef inline int _check_int(str what, object value) except -1:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return 0


cdef inline int _check_str(str what, object value) except -1:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return 0


cdef class RoutingTable:
    cdef dict _tools
    cdef dict _prompts
    cdef dict _resources

    def __init__(self):
        self._tools = {}
        self._prompts = {}
        self._resources = {}

    cdef inline dict _map(self, object kind):
        _check_int("route kind", kind)
        if kind == 0:
            return self._tools
        if kind == 1:
            return self._prompts
        if kind == 2:
            return self._resources
        return None

    cdef inline dict _known(self, object kind):
        cdef dict table = self._map(kind)
        if table is None:
            raise ValueError(f"unknown route kind {kind}")
        return table

    def add(self, kind, name, upstream, upstream_name):
        """Add a route; False (and no change) when ``name`` is already routed."""
        cdef dict table = self._known(kind)
        _check_str("route name", name)
        _check_int("upstream index", upstream)
        _check_str("upstream-side name", upstream_name)
        if name in table:
            return False
        table[name] = (upstream, upstream_name)
        return True

    def lookup(self, kind, name):
        cdef dict table = self._map(kind)
        _check_str("route name", name)
        if table is None:
            return None
        return table.get(name)

    def names(self, kind):
        return list(self._known(kind))

    def count(self, kind):
        return len(self._known(kind))

    def __len__(self):
        return len(self._tools) + len(self._prompts) + len(self._resources)

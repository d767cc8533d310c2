# cython: language_level=3
"""Routing table: public name -> (upstream index, upstream-side name), per kind.

Compiled twin of ``routing_table_py.py``; both must behave identically. The three kind
maps are typed C fields so a lookup is one bounds check and one dict probe, with no
attribute or list indexing through Python.
"""

KIND_TOOL = 0
KIND_PROMPT = 1
KIND_RESOURCE = 2


cdef class RoutingTable:
    cdef dict _tools
    cdef dict _prompts
    cdef dict _resources

    def __init__(self):
        self._tools = {}
        self._prompts = {}
        self._resources = {}

    cdef inline dict _map(self, int kind):
        if kind == 0:
            return self._tools
        if kind == 1:
            return self._prompts
        if kind == 2:
            return self._resources
        return None

    def add(self, int kind, str name, int upstream, str upstream_name):
        """Add a route; False (and no change) when ``name`` is already routed."""
        cdef dict table = self._map(kind)
        if table is None:
            raise ValueError(f"unknown route kind {kind}")
        if name in table:
            return False
        table[name] = (upstream, upstream_name)
        return True

    def lookup(self, int kind, str name):
        cdef dict table = self._map(kind)
        if table is None:
            return None
        return table.get(name)

    def names(self, int kind):
        return list(self._map(kind))

    def count(self, int kind):
        return len(self._map(kind))

    def __len__(self):
        return len(self._tools) + len(self._prompts) + len(self._resources)

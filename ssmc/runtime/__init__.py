"""Engines that execute a compiled net, and the measurements that run them.

Every engine verifies the graph it runs; on a placed graph the verifier needs the
capacity check that ssmc.mapping.capacity registers, so importing any engine registers it.
"""

from ssmc.mapping import capacity as _capacity  # noqa: F401

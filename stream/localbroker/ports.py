"""Local TCP port checks, under the broker's old name.

They live in :mod:`stream.localjvm.ports` (the broker and the schema registry share them);
this name stays because the benchmark harness and test helpers import it.
"""

from stream.localjvm.ports import (
    HOST,
    free_port_block,
    free_port_pair,
    port_accepts,
    port_is_free,
)

__all__ = ["HOST", "free_port_block", "free_port_pair", "port_accepts", "port_is_free"]

"""The inter-process lock of local services, under the broker's old name.

It lives in :mod:`stream.localjvm.locking` (the broker and the schema registry share it);
this name stays because tools outside ``stream/`` (the benchmark peers) import it.
"""

from stream.localjvm.locking import exclusive_lock

__all__ = ["exclusive_lock"]

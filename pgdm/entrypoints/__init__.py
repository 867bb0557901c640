"""The entry points: everything a user starts, above the algorithm and the engine.

``cli`` (the ``pgdm`` command), ``config`` (the typed job settings every entry point builds), ``restore_job``
(one restore job over files), ``distributed`` (torchrun), ``ray`` (Ray Data), ``serve`` (the HTTP server),
``bench`` and ``train``. Nothing below this package imports it (docs/architecture.md).
"""

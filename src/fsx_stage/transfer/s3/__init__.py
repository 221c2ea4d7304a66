"""Object storage behind one interface: :class:`~fsx_stage.transfer.s3.store.ObjectStore`,
its typed results, and the stores that implement it (chosen once per process by
:func:`~fsx_stage.transfer.s3.choose.open_store`), with their clients, checksums and
encryption parameters.

A bottom layer: it imports only the shared ``models``/``errors``, never ``local``,
``objects`` or ``run``.
"""

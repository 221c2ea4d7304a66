"""Object storage behind one interface: :class:`~fsx_stage.transfer.s3.store.ObjectStore`,
its typed results, and the stores that implement it (chosen once per process by
:func:`~fsx_stage.transfer.s3.choose.open_store`)."""

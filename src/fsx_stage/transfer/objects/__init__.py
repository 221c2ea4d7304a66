"""The objects to move and moving one of them: what SRC and DST mean (:mod:`.routes`),
where the objects come from (:mod:`.sources`), one download or upload, a dry run's plan
and ``sync --delete``, all within one process's :class:`~.context.Context`.

It may import :mod:`fsx_stage.transfer.local`, :mod:`fsx_stage.transfer.s3` and the shared
``models``/``errors``, never :mod:`fsx_stage.transfer.run`.
"""

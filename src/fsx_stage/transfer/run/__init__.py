"""Running a transfer: resolve SRC/DST (:mod:`.engine`), move the objects in this
process (:mod:`.mover`) or in worker processes (:mod:`.workers`), and fold the events
into the summary.

The top layer: it may import :mod:`fsx_stage.transfer.objects`, ``.local``, ``.s3`` and
the shared ``models``/``errors``; nothing below imports it.
"""

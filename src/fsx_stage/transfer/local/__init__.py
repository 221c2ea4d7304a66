"""The local filesystem: writing below a destination root without leaving it
(:mod:`.safefs`, temporary name then rename), POSIX metadata in object metadata
(:mod:`.posixmeta`) and Lustre striping (:mod:`.lustre`).

A bottom layer: it imports only the shared ``models``/``errors``, never ``s3``,
``objects`` or ``run``.
"""

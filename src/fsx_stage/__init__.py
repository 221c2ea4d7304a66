"""fsx-stage: stage data between Amazon S3 and FSx for Lustre scratch for Slurm jobs.

Architecture, in the order data flows:
``directives`` (what a job asks for) -> ``plan`` (checked against site ``policy``)
-> ``transfer`` (the async S3 <-> filesystem engine) -> ``hooks`` (Slurm Prolog/Epilog).
"""

__version__ = "0.1.0"

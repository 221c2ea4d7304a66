"""The Slurm Prolog/Epilog hooks: stage in before a job, flush out after it.

Modules: `prolog` and `epilog` (the hook commands), `flush` (retrying pending flushes),
`jobinfo` (the job from slurmd's environment and scontrol), `privileges` (running as the
job's user), `staging` (one plan entry through the transfer core), `state` and `pending`
(durable per-job state and the pending-flush queue), `outcome` (whose fault a failure is),
`slurmctl` (failing or holding a job), `runtime` (config, log, credentials), `logging`.
"""

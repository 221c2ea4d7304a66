"""The burst_buffer/lua mode: stage in while the job is pending, flush after its nodes
are released, on the host that runs slurmctld's burst buffer hooks (docs/modes.md).

``slurm-conf-examples/burst_buffer.lua`` runs ``sudo -n fsx-stage bb PHASE JOBID`` for
each asynchronous hook; `fsx_stage.burstbuffer.phases` does the work with the Prolog's
and Epilog's own steps (`fsx_stage.hooks`), from what Slurm says about the job.
"""

#: The lua's asynchronous hooks that call ``fsx-stage bb PHASE JOBID``.
PHASES = ("data_in", "test_data_in", "data_out", "test_data_out", "teardown")

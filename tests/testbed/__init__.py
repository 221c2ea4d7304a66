"""The local test bed: real servers on loopback (SeaweedFS S3, Slurm), a fault-injecting proxy."""

"""Building blocks shared by every bundled workload: CLI, checkpoints, metrics, seeding,
device selection and preemption handling. Each module does one job."""

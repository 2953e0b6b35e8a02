//! Starting workers: the local process pool and the Slurm backend both start
//! `orchestrate worker` for a run directory and read run directories back.

pub mod slurm;

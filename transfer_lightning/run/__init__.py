"""A run's life: its config checked and turned into objects, its folder claimed, resumed, checkpointed and
summed up (``run_summary.json``) however it ends."""

"""Worker-pool entry points: one per pool, each with its queues and concurrency."""

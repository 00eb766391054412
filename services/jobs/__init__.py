"""Jobs: row operations and status transitions (compare-and-set), the run of one
job (claim, lease, epochs, checkpoints, finish), and recovery of lost jobs.

    rows      create, read, list, cancel
    lease     claim, lease renewal and takeover, exhausted attempts
    records   epochs, checkpoints and the final status a run writes
    run       execute_job: one job in a worker, start to finish
    recovery  the periodic pass that re-sends lost work
"""

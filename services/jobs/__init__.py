"""Jobs: row operations and status transitions (compare-and-set), the run of one
job (claim, lease, epochs, checkpoints, finish), and recovery of lost jobs.

    rows      create, read, list, cancel
    lease     claim, lease renewal and takeover, exhausted attempts
    records   epochs, checkpoints and the final status a run writes
    ending    a final job's checkpoint goes (its weights stay)
    limits    how a run paces itself and when it stops; the shutdown flag
    run       JobRun: one attempt at one job (epochs, checkpoints, writes, stops)
    execute   execute_job: what a worker runs for one run_job message
    recovery  the periodic pass that re-sends lost work
"""

"""Sweeps: search spaces, samplers (grid, random, Optuna TPE), pruning, and the
scheduler that advances a sweep.

    space      a sweep's parameters, grid points, random points
    samplers   the next trial's parameters (grid, random, TPE)
    pruning    median stopping and ASHA at epoch boundaries
    scheduler  create, advance (max_concurrency), cancel, list
"""

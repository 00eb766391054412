"""What a person looks at: a job's figures, a sweep's learning-rate map and its report page.

    trials     the few columns of a sweep's trials these read, a job's history
    lr_map     the objective against the learning rate: its data (the JSON answer)
    lr_figure  ... and its drawing (PNG)
    importance Optuna's parameter importance over the finished trials
    page       one self-contained HTML page per sweep

The API's routes (``api.plots``) and the MLflow mirror's artifacts draw with
the same functions, from the same rows.
"""

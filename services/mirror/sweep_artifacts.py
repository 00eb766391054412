"""The files a sweep's parent run gets at the final pass: the LR map (PNG and JSON) and
the report page, drawn by the same functions as the API's routes (``services.reports``)."""

from __future__ import annotations

import logging
import time

from services.db import Sweep
from services.db.session import begin_read
from services.mirror.plumbing import session_scope
from services.reports.lr_figure import lr_map_png
from services.reports.lr_map import NoLearningRateError, build_lr_map
from services.reports.page import sweep_report
from services.reports.trials import sweep_trials

log = logging.getLogger(__name__)


def sweep_files(settings: object, sweep_id: str) -> dict[str, bytes]:
    """``lr_map.png`` and ``lr_map.json`` (a sweep that sweeps a learning rate) and
    ``report.html``, read in one read transaction (a deferred one on SQLite, that
    never blocks a worker recording its epochs).

    A drawing that fails is logged and left out: it must not keep the parent
    run open for ever (the API draws the same on request).
    """
    files: dict[str, bytes] = {}
    with session_scope(settings) as session:
        begin_read(session)  # deferred on SQLite: drawing never holds the write lock
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return files
        try:
            data = build_lr_map(sweep, sweep_trials(session, sweep_id))
            png = lr_map_png(data)
            files.update(
                {"lr_map.png": png, "lr_map.json": data.model_dump_json(indent=2).encode()}
            )
        except NoLearningRateError:
            pass
        except Exception:
            log.exception("cannot draw the LR map of sweep %s", sweep_id)
        try:
            started = time.perf_counter()
            files["report.html"] = sweep_report(session, sweep).encode()
            log.info(
                "report of sweep %s: %.0f ms", sweep_id, (time.perf_counter() - started) * 1000
            )
        except Exception:
            log.exception("cannot build the report of sweep %s", sweep_id)
    return files

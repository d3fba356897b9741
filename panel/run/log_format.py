"""How every Helios process's log lines look: text, or one JSON object a line.

Standard library only, so that the small process `helios up` becomes once everything runs
(panel.run.keeper) logs exactly like the others without loading what they load.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["TEXT_FORMAT", "JsonFormatter", "set_process_name"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(process)d] %(message)s"

_process_name = "helios"


def set_process_name(name: str) -> None:
    """The ``process`` field of this process's JSON documents (panel, worker, up, ...)."""
    global _process_name
    _process_name = name


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "process": _process_name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)  # set while the panel serves one
        if request_id:
            document["request_id"] = request_id
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)

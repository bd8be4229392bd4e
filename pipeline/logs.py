"""How log records read on the console: the message alone, with "warning:" or "error:" in front when it is one."""

from __future__ import annotations

import logging


class ConsoleFormatter(logging.Formatter):
    """One line per message; run.log (Hydra's file handler) keeps the timestamps and logger names."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text

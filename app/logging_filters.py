"""Keep patient data out of the logs.

- `GET /v1/patients?identifier=system|value` puts identifiers in the query string, so uvicorn's
  access log records only the path.
- An exception that reaches uvicorn is logged by it with its traceback, and a database error's
  message quotes the values it refused (PostgreSQL's `DETAIL: Key (system, value)=(...)`, SQL
  parameters): uvicorn's error log keeps only the exception's class.
"""

from __future__ import annotations

import logging


class StripQueryString(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access records: (client_addr, method, full_path, http_version, status_code)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


class OnlyExceptionClass(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__}; details withheld)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _add(logger_name: str, kind: type[logging.Filter]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def install() -> None:
    _add("uvicorn.access", StripQueryString)
    _add("uvicorn.error", OnlyExceptionClass)

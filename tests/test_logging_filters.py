import logging
import sys

from app.logging_filters import OnlyExceptionClass, StripQueryString


def test_access_log_keeps_the_path_but_not_identifier_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/patients?identifier=urn:mrn|12345", "1.1", 200),
        None,
    )
    assert StripQueryString().filter(record)
    assert "12345" not in record.getMessage()
    assert "/v1/patients" in record.getMessage()


def test_uvicorn_error_log_keeps_the_exception_class_but_not_database_details() -> None:
    try:
        raise RuntimeError("duplicate key: DETAIL: Key (system, value)=(urn:mrn, 12345) exists")
    except RuntimeError:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Exception in ASGI application\n",
            None,
            sys.exc_info(),
        )
    assert OnlyExceptionClass().filter(record)
    formatted = logging.Formatter().format(record)
    assert "12345" not in formatted
    assert "RuntimeError" in formatted
    assert "Exception in ASGI application" in formatted

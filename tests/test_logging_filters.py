import logging

from app.logging_filters import StripQueryString


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

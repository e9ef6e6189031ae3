"""Write the app's OpenAPI document as YAML (`make openapi`); a test fails when it drifts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from app.main import create_app


def openapi_document() -> dict[str, Any]:
    return create_app().openapi()


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else "openapi.yaml")
    target.write_text(yaml.safe_dump(openapi_document(), sort_keys=False, allow_unicode=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

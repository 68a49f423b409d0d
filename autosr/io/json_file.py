"""Reading a JSON file a user may have written or edited (dataset.json, plans.json, splits.json, a package
manifest, a segmenter config) into one message naming the file and the fix, never a traceback.

Three ways such a file goes wrong beyond a syntax error: it is not UTF-8 text (saved by an editor in
Latin-1 or UTF-16 with a BOM), it nests deeper than Python's JSON reader can follow (a RecursionError from
a crafted or runaway-generated file), or it cannot be read at all. `read_json_file` turns each into an
`AutosrError` of the form "<file>: <what is wrong>; <fix>".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError


def parse_json_bytes(data: bytes, source: str, fix: str) -> Any:
    """The JSON value of `data` (UTF-8 text); an `AutosrError` naming `source` and `fix` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AutosrError(
            f"{source}: is not UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start} is not valid UTF-8); "
            "save it as UTF-8 (JSON files are UTF-8 text)"
        ) from e
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark some editors put first: harmless
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AutosrError(f"{source}: is not valid JSON ({e}); {fix}") from e
    except RecursionError as e:
        raise AutosrError(
            f"{source}: nests lists or objects too deeply to be read (thousands of levels; a real file has a few); "
            f"the file is damaged or not what it claims to be: {fix}"
        ) from e


def read_json_file(path: str | os.PathLike, fix: str) -> Any:
    """The JSON value in the file at `path`; any problem is one `AutosrError` naming the file and `fix`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AutosrError(f"{path}: cannot be read ({e.strerror or e}); {fix}") from e
    return parse_json_bytes(data, str(path), fix)

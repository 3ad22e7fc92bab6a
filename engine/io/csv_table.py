"""CSV tables: one header row, comma-separated, UTF-8 (a BOM is fine); empty cell = missing."""
from __future__ import annotations

import csv
from pathlib import Path

from .values import FileFormatError, is_missing

CSV_SUFFIXES = (".csv",)


def read_csv_rows(path: str | Path, error: type[FileFormatError] = FileFormatError
                  ) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Column names (stripped) and rows as ``("line n", {column: cell})`` (header = line 1);
    blank lines are skipped; a row with more cells than the header is an ``error``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = []
            for row in reader:
                if None in row:
                    raise error(path, "more cells than header columns", f"line {reader.line_num}")
                if all(is_missing(v) for v in row.values()):
                    continue  # blank line
                rows.append((f"line {reader.line_num}", row))
    except UnicodeDecodeError as exc:
        raise error(path, f"not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise error(path, f"not a readable CSV file: {exc}") from None
    return columns, rows

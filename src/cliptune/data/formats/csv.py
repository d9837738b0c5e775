"""CSV/TSV: one row per (image, caption) pair, columns `image_path` and `text` (or `caption`), optional `label`,
`split`, `id`.

Written for files people export from spreadsheets: the separator is detected (`,` tab `;` `|`), a UTF-8 BOM is
ignored, quoted separators and newlines inside captions work, and a mistake points at the row that has it.
Row numbers count data rows after the header (row 1 is the first line under the header), so they match the
spreadsheet's row number minus one.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path
from typing import Iterator

from cliptune.data.formats import Format, register, resolve_image
from cliptune.data.records import BadSample, Row
from cliptune.errors import DataError

# field -> header names that mean it, in order of preference (`filepath`/`title` are open_clip's defaults)
COLUMNS: dict[str, tuple[str, ...]] = {
    "image_path": ("image_path", "filepath", "image"),
    "text": ("text", "caption", "title"),
    "label": ("label",),
    "split": ("split",),
    "id": ("id",),
}
REQUIRED = ("image_path", "text")
SEPARATORS = ",\t;|"
EXTENSION_SEPARATOR = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSION_SEPARATOR


def read(path: Path, image_root: Path | None = None) -> Iterator[Row | BadSample]:
    file = str(path)
    text = _decode(path)
    if not text.strip():
        raise DataError("file is empty; expected a header (image_path, text) and one row per image-caption pair",
                        file=file)
    sep = _separator(path, text)
    records = _records(text, sep, file)
    header_fields = next(records)[1]
    header = [_normalise(name) for name in header_fields]
    columns = _columns(header, header_fields, file, sep)
    root = Path(image_root) if image_root is not None else path.parent
    for number, fields in records:
        if not any(f.strip() for f in fields):
            continue  # a blank line is layout, not a sample
        yield _row(fields, header, columns, root, file, number, sep)


def _decode(path: Path) -> str:
    """UTF-8 (BOM or not); stray bytes are kept as surrogates so the row holding them can be reported."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", file=str(path)) from None
    if data.startswith(UTF16_BOMS):  # Excel's "Unicode text" export
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="surrogateescape")


def _separator(path: Path, text: str) -> str:
    """The separator whose split of the first line yields the required columns; sniffed, extension as tie-break."""
    first_line = text.lstrip("\r\n").splitlines()[0]
    candidates = [EXTENSION_SEPARATOR.get(path.suffix.lower(), ",")]
    try:
        candidates.insert(0, csv.Sniffer().sniff(text[:65536], delimiters=SEPARATORS).delimiter)
    except csv.Error:
        pass
    candidates += [s for s in SEPARATORS if s not in candidates]
    for sep in candidates:
        header = {_normalise(name) for name in next(csv.reader([first_line], delimiter=sep), [])}
        if all(header & set(COLUMNS[field]) for field in REQUIRED):
            return sep
    return candidates[0]


def _records(text: str, sep: str, file: str) -> Iterator[tuple[int, list[str]]]:
    """(data row number, fields), header first as row 0; a broken quote is an error, never a merged row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    number = -1
    start_line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row = number + 1 if number >= 0 else None
            hint = "unterminated quote" if "end of data" in str(e) else str(e)
            raise DataError(f"malformed {SEPARATOR_NAMES[sep]}-separated data starting at line {start_line}: "
                            f"{hint} (a quote inside a quoted field must be doubled: \"\")", file=file,
                            row=row) from None
        start_line = reader.line_num + 1
        if number < 0 and not fields:
            continue  # blank lines before the header
        number += 1
        yield number, fields


def _normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _columns(header: list[str], raw: list[str], file: str, sep: str) -> dict[str, int]:
    """field -> column index; a missing header or column is an error that shows what was found."""
    columns = {}
    for field, names in COLUMNS.items():
        found = [name for name in names if name in header]
        if found:
            columns[field] = header.index(found[0])
    missing = [field for field in REQUIRED if field not in columns]
    if not missing:
        return columns
    found = ", ".join(repr(name) for name in raw) or "(nothing)"
    wanted = " and ".join(" or ".join(repr(n) for n in COLUMNS[f][:2]) for f in REQUIRED)
    if not columns:
        raise DataError(f"no header row: expected columns {wanted}; the first line has {found} "
                        f"({SEPARATOR_NAMES[sep]}-separated)", file=file, row=None)
    need = ", ".join(" or ".join(repr(n) for n in COLUMNS[f][:2]) for f in missing)
    raise DataError(f"missing required column {need}; columns found: {found}", file=file, row=None)


def _row(fields: list[str], header: list[str], columns: dict[str, int], root: Path, file: str, number: int,
         sep: str) -> Row | BadSample:
    extra = fields[len(header):]
    if any(f.strip() for f in extra):
        return BadSample(file, number, f"has {len(fields)} fields but the header has {len(header)}; "
                                       f"quote captions that contain a {SEPARATOR_NAMES[sep]}")
    bad = next((f for f in fields if any("\udc80" <= c <= "\udcff" for c in f)), None)
    if bad is not None:
        byte = next(ord(c) - 0xDC00 for c in bad if "\udc80" <= c <= "\udcff")
        return BadSample(file, number, f"not valid UTF-8 (byte 0x{byte:02x}); save the file as UTF-8")
    fields = fields + [""] * (len(header) - len(fields))

    def get(field: str) -> str | None:
        value = fields[columns[field]].strip() if field in columns else ""
        return value or None

    image = get("image_path")
    if image is None:
        return BadSample(file, number, "empty image_path")
    caption = fields[columns["text"]]
    return Row(image=resolve_image(image, root), captions=[caption], file=file, row=number, label=get("label"),
               split=get("split"), id=get("id"))


register(Format(name="csv", detect=detect, read=read))

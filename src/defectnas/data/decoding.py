"""Decode a text table's bytes without turning good rows into mojibake, and say what was guessed.

Why a module of its own: files reach us from spreadsheets, databases and scrapers, and a file
is not always in one encoding. The old rule (UTF-8, else the whole file as Latin-1) turned a
UTF-8 file with one stray Windows-1252 byte into mojibake everywhere (``café`` → ``cafÃ©``).
The rules, in order:

1. A byte-order mark decides: UTF-8, UTF-16 (what Excel's "Unicode text" export writes) or
   UTF-32. A file with a UTF-16/32 mark that does not decode is refused.
2. A file without a mark that decodes as UTF-8 is UTF-8.
3. A UTF-8 file with some invalid bytes (it has valid multi-byte UTF-8 characters too): each
   invalid byte is read as Windows-1252 (the usual culprit: ’ as 0x92 pasted from Word), the
   rest stays UTF-8, and the rows that held such bytes are named in one warning line.
4. A file with more invalid bytes than valid multi-byte UTF-8 characters (a pair of legacy
   bytes can look like UTF-8 by chance) is in a legacy encoding as a whole.
   charset-normalizer names it; its answer is taken for the encodings it tells apart reliably
   (Japanese, Chinese and Korean multi-byte encodings, Cyrillic, Greek, Hebrew, Arabic, and
   UTF-16/32 without a mark), otherwise the file is read as Windows-1252 (a superset of the
   printable Latin-1 that Home Depot's ``train.csv`` uses; bytes it leaves undefined are read
   as Latin-1) when it has no UTF-8 at all, else rule 3 applies. Either way one warning line
   names the encoding used.
"""

from __future__ import annotations

import bisect
import codecs
import re
import threading
from dataclasses import dataclass, field

FALLBACK = "cp1252"  # per-byte fallback inside UTF-8 files, and the default legacy encoding
# charset-normalizer's answers taken as they are (names as it spells them)
RELIABLE = frozenset({
    "cp932", "shift_jis", "euc_jp", "iso2022_jp", "gb2312", "gbk", "gb18030", "big5", "big5hkscs", "euc_kr", "cp949",
    "johab", "cp1251", "koi8_r", "koi8_u", "mac_cyrillic", "iso8859_5", "cp866", "cp1253", "iso8859_7", "cp1255",
    "iso8859_8", "cp1256", "iso8859_6", "utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be", "tis_620", "cp874",
})
_MULTIBYTE_UTF8 = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_bad_offsets = threading.local()


def _cp1252_byte(error: UnicodeDecodeError) -> tuple[str, int]:
    """codecs error handler: the invalid bytes as Windows-1252 (Latin-1 where it has none)."""
    if not hasattr(_bad_offsets, "found"):
        _bad_offsets.found = []
    _bad_offsets.found.append(error.start)
    return "".join(_legacy_char(b) for b in error.object[error.start : error.end]), error.end


def _legacy_char(byte: int) -> str:
    try:
        return bytes([byte]).decode(FALLBACK)
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in Windows-1252
        return chr(byte)


codecs.register_error("defectnas-cp1252", _cp1252_byte)


@dataclass
class Decoded:
    """The text and how it was read."""

    text: str
    encoding: str  # what decoded the file: "utf-8", "utf-8-sig", "utf-16", "cp932", "cp1252", ...
    fallback_lines: list[int] = field(default_factory=list)  # 1-based lines holding bytes read by the per-byte fallback
    # (the whole-file Windows-1252 fallback: the lines holding its non-ASCII bytes, which it decodes the same way)
    whole_file: bool = False  # True: not UTF-8 at all, read in a legacy encoding (rule 4)

    @property
    def fallback(self) -> bool:
        return bool(self.fallback_lines) or self.whole_file


def decode_bytes(raw: bytes, allow_legacy: bool = True) -> Decoded:
    """Decode ``raw`` by the rules of the module docstring; UnicodeDecodeError when refused.

    ``allow_legacy=False`` refuses rule 4 (a file with no UTF-8 at all) but keeps rule 3.
    """
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return Decoded(raw.decode(name), name)
    if b"\x00" in raw[:4096]:  # UTF-16/32 without a mark (or binary): only charset-normalizer can say
        guess = _detect(raw)
        if guess and guess.startswith("utf_"):
            return Decoded(raw.decode(guess), guess, whole_file=True)
    try:
        return Decoded(raw.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as error:
        first_error = error
    _bad_offsets.found = []
    try:
        text = raw.decode("utf-8", errors="defectnas-cp1252")
        offsets = _bad_offsets.found
    finally:
        _bad_offsets.found = []
    valid = len(_MULTIBYTE_UTF8.findall(raw))
    if valid < len(offsets):  # more invalid than valid UTF-8 (a legacy byte pair can look like UTF-8 by chance)
        if valid == 0 and not allow_legacy:
            raise first_error
        guess = _detect(raw) if allow_legacy else None
        if guess in RELIABLE:
            try:
                return Decoded(raw.decode(guess), guess, whole_file=True)
            except UnicodeDecodeError:
                pass
        if valid == 0:  # nothing UTF-8 about it: a Western legacy file, whose non-ASCII bytes are the ones per line
            return Decoded(_legacy(raw), FALLBACK, fallback_lines=_lines(raw, offsets), whole_file=True)
    return Decoded(text, "utf-8", fallback_lines=_lines(raw, offsets))


def _lines(raw: bytes, offsets: list[int]) -> list[int]:
    """The 1-based lines of ``raw`` holding the byte ``offsets``."""
    newlines = [m.start() for m in re.finditer(b"\n", raw)]
    return sorted({bisect.bisect_left(newlines, o) + 1 for o in offsets})


def _legacy(raw: bytes) -> str:
    """The whole file as Windows-1252, with Latin-1 for the five bytes it leaves undefined."""
    return raw.decode(FALLBACK, errors="latin1-undefined")


def _latin1_undefined(error: UnicodeDecodeError) -> tuple[str, int]:
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("latin1-undefined", _latin1_undefined)


def _detect(raw: bytes) -> str | None:
    """charset-normalizer's best guess for ``raw`` (None when it has none)."""
    from charset_normalizer import from_bytes

    best = from_bytes(raw[: 1 << 20]).best()  # the first MiB is plenty to tell encodings apart
    return best.encoding if best is not None else None


def describe_fallback(decoded: Decoded, rows: list[int], noun: str = "row") -> str:
    """The one warning line for a file read with a fallback (``rows``: 1-based data rows)."""
    shown = ", ".join(map(str, rows[:10])) + (f" … ({len(rows) - 10} more)" if len(rows) > 10 else "")
    plural = "s" if len(rows) != 1 else ""
    if decoded.whole_file:
        how = "detected by charset-normalizer" if decoded.encoding != FALLBACK else "the fallback for a file that is not UTF-8"
        where = f"; its non-ASCII bytes are in {len(rows)} {noun}{plural}: {shown}" if rows else ""
        return f"not UTF-8: the whole file was decoded as {decoded.encoding} ({how}){where}; save it as UTF-8 to be sure"
    return (f"{len(rows)} {noun}{plural} not valid UTF-8: their invalid bytes were decoded as Windows-1252 "
            f"(the rest of the file as UTF-8): {noun}{plural} {shown}")

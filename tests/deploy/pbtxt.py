"""A minimal protobuf text-format reader for Triton's config.pbtxt, independent of the writer under test.

Fields become dict keys; a field seen twice (or written ``name [ {...}, {...} ]``) becomes a list.
Scalars: quoted strings, integers, floats, ``true``/``false``, bare enum identifiers (kept as str).
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"cannot tokenize at {text[pos : pos + 20]!r}")
            break
        pos = m.end()
        if m.group(1) is None and m.group(0).strip():
            out.append(m.group(0).strip())
    return out


def _scalar(tok: str) -> Any:
    if tok.startswith('"'):
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    if tok in ("true", "false"):
        return tok == "true"
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", tok):
        return float(tok)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
        return tok
    raise ValueError(f"not a scalar: {tok!r}")


def _add(msg: dict[str, Any], key: str, value: Any, repeated: bool) -> None:
    if repeated:
        msg.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    elif key in msg:
        prev = msg[key]
        msg[key] = (prev if isinstance(prev, list) else [prev]) + [value]
    else:
        msg[key] = value


def _message(toks: list[str], i: int, end: str | None) -> tuple[dict[str, Any], int]:
    msg: dict[str, Any] = {}
    while i < len(toks) and toks[i] != end:
        key = toks[i]
        i += 1
        if toks[i] == ":":
            i += 1
        if toks[i] == "{":
            value, i = _message(toks, i + 1, "}")
            _add(msg, key, value, False)
            i += 1
        elif toks[i] == "[":
            i += 1
            items: list[Any] = []
            while toks[i] != "]":
                if toks[i] == "{":
                    value, i = _message(toks, i + 1, "}")
                    items.append(value)
                    i += 1
                elif toks[i] != ",":
                    items.append(_scalar(toks[i]))
                    i += 1
                else:
                    i += 1
            _add(msg, key, items, True)
            i += 1
        else:
            _add(msg, key, _scalar(toks[i]), False)
            i += 1
    return msg, i


def parse_pbtxt(text: str) -> dict[str, Any]:
    """Parse protobuf text format into nested dicts/lists."""
    msg, i = _message(_tokens(text), 0, None)
    return msg

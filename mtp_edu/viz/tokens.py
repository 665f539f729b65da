"""Token strings for people: every token shown as a short, readable, unambiguous string.

The shipped models are byte-level (token id = byte value, V = 256), so one token may be half of a
UTF-8 character or a control byte. `show_token` prints:

- printable ASCII as itself (a space as '␣' so it can be seen),
- '\\n' as '⏎', '\\t' as '⇥', '\\r' as '\\r',
- any other byte as its escape, e.g. b'\\xe2' -> '\\xe2',
- with a tokenizer whose vocabulary is not bytes (`vocab_size` > 256, e.g. BPE), every id through
  `tokenizer.decode([id])`, made visible with `show_text`; an id no tokenizer can decode as '<id>'.
"""
from __future__ import annotations

from typing import Any

SPECIAL = {ord("\n"): "⏎", ord("\t"): "⇥", ord("\r"): "\\r", ord(" "): "␣"}


def show_byte(b: int) -> str:
    """One byte value (0..255) as a readable string."""
    if b in SPECIAL:
        return SPECIAL[b]
    if 0x21 <= b <= 0x7E:
        return chr(b)
    return f"\\x{b:02x}"


def show_token(token: Any, tokenizer: Any = None) -> str:
    """A token (an int id, a bytes object or a str) as a readable string; see the module docstring."""
    if isinstance(token, bool):
        return str(token)
    if isinstance(token, int):
        byte_level = tokenizer is None or getattr(tokenizer, "vocab_size", 256) <= 256
        if byte_level and 0 <= token < 256:
            return show_byte(token)
        if tokenizer is not None and hasattr(tokenizer, "decode"):
            try:
                return show_text(tokenizer.decode([token]))
            except Exception:   # a tokenizer that cannot decode this id: fall back to the id
                pass
        return f"<{token}>"
    if isinstance(token, (bytes, bytearray)):
        return "".join(show_byte(b) for b in token)
    return show_text(str(token))


def show_text(text: str) -> str:
    """A string with its invisible characters made visible (spaces kept as spaces)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == " ":
            out.append(" ")
        elif o in SPECIAL:
            out.append(SPECIAL[o])
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)

"""Token strings for people: every token shown as a short, readable, unambiguous string.

A token stands for some bytes: one byte for the byte-level tokenizer, a few for the subword (BPE)
tokenizer of the shipped models (`tokenizer.token_bytes(id)`), and a subword token can be part of a
UTF-8 character. `show_token` prints its bytes as text with the invisible made visible:

- a space as '␣', '\\n' as '⏎', '\\t' as '⇥', '\\r' as '\\r' (so ' return' shows as '␣return'
  and an indent of four spaces as '␣␣␣␣');
- other control characters, and bytes that are not whole UTF-8 characters, as escapes ('\\xe2');
- an id the tokenizer does not know as '<id>'.
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
        if tokenizer is None and 0 <= token < 256:
            return show_byte(token)
        try:
            token = tokenizer.token_bytes(token)
        except (AttributeError, TypeError, ValueError):   # no tokenizer, or an id it does not know
            return f"<{token}>"
    if isinstance(token, (bytes, bytearray)):
        try:
            return show_text(bytes(token).decode("utf-8"), spaces="␣")
        except UnicodeDecodeError:                         # part of a character: show each byte
            return "".join(show_byte(b) for b in token)
    return show_text(str(token))


def show_text(text: str, spaces: str = " ") -> str:
    """A string with its invisible characters made visible (spaces shown as `spaces`)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == " ":
            out.append(spaces)
        elif o in SPECIAL:
            out.append(SPECIAL[o])
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)

"""Quality gates for a language model of Python code, all measured on held-out text.

- `compressor_bits_per_byte(text)`: what `gzip -9` and `xz -9e` need per byte of the same text. A
  language model is a compressor too (arithmetic coding turns -log2 p into bits), so its bits per
  byte, summed loss / bytes scored / ln 2, is directly comparable, whatever its tokenizer.
- `code_prompts(corpus_val)`: fixed prompts of code, from the first top-level `def` or `class` of
  each held-out file.
- `distinct_ngram_ratio(tokens, n)`: distinct n-grams / all n-grams of a text; a model stuck in a
  loop ("a string a string a string") scores near 0, varied text near 1.
- `parses(prompt, continuation, lines)`: whether prompt + the first `lines` complete lines of the
  continuation are valid Python (`ast.parse`), after trimming an unfinished last line.
"""
from __future__ import annotations

import ast
import gzip
import lzma
import math
import re

from .data import FILE_HEADER

FILE_HEADER_RE = re.compile(re.escape(FILE_HEADER).replace(r"\{name\}", r"(.+?)"))


def compressor_bits_per_byte(text: str) -> dict[str, float]:
    """Bits per byte of `text` (UTF-8) after `gzip -9` and `xz -9e` (container headers included)."""
    data = text.encode("utf-8")
    if not data:
        raise ValueError("text is empty: there is nothing to compress")
    sizes = {"gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
             "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    return {name: 8 * size / len(data) for name, size in sizes.items()}


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """A summed loss in nats over text of `n_bytes` bytes, as bits per byte."""
    return nats / n_bytes / math.log(2)


def held_out_files(val_text: str) -> list[tuple[str, str]]:
    """(name, text) of each file in a corpus split, split at the file headers."""
    marks = list(FILE_HEADER_RE.finditer(val_text))
    return [(m.group(1), val_text[m.start():marks[j + 1].start() if j + 1 < len(marks) else len(val_text)])
            for j, m in enumerate(marks)]


CODE_START = re.compile(r"^(?:async def|def|class) ", re.MULTILINE)   # a top-level definition starts code


def code_prompts(val_text: str, n: int, n_bytes: int = 200, whole_lines: bool = False) -> list[str]:
    """`n` prompts of code: from each held-out file in order that has a top-level `def` or `class`, the
    `n_bytes` bytes from the first such line on (the docstrings and licences that open most files are
    prose, not code), or the complete lines within them when `whole_lines`. A cut never splits a UTF-8
    character."""
    prompts = []
    for _, text in held_out_files(val_text):
        start = CODE_START.search(text)
        if start is None:
            continue
        cut = text[start.start():].encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")
        prompts.append(cut[:cut.rfind("\n") + 1] if whole_lines else cut)
        if len(prompts) == n:
            return prompts
    raise ValueError(f"the validation text holds {len(prompts)} files with a top-level def or class; "
                     f"{n} prompts were asked for")


def distinct_ngram_ratio(tokens: list, n: int = 4) -> float:
    """Distinct n-grams / n-grams in `tokens` (1.0 = no n-gram repeats)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        raise ValueError(f"{len(tokens)} tokens hold no {n}-gram")
    return len(set(grams)) / len(grams)


def first_lines(text: str, lines: int) -> str:
    """The first `lines` complete lines of text (an unfinished last line is dropped)."""
    complete = text[:text.rfind("\n") + 1]
    return "".join(complete.splitlines(keepends=True)[:lines])


def parses(prompt: str, continuation: str, lines: int = 40) -> bool:
    """Whether prompt + the first `lines` complete lines of the continuation are valid Python."""
    try:
        ast.parse(prompt + first_lines(continuation, lines))
    except (SyntaxError, ValueError):      # ValueError: a NUL byte in the source
        return False
    return True

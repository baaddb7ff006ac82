"""Names are data: batch, group, sample and gene names travel through tables and file names unchanged.

Three encodings, each one-to-one, so that no two names can meet (for :func:`encode_name`, up to a
clash of 8 hex digits of SHA-256, about one in four billion per pair of awkward names, which
``desweep plan`` refuses with an error rather than merging two names):

:func:`encode_name`
    A name as a piece of a file name or identifier (``comparison_id``,
    ``combination_id``, layer names). A name made only of letters and digits
    separated by single ``.``, ``_`` or ``-`` (at most :data:`MAX_PLAIN` characters,
    without ``_vs_``) is kept as it is; any other name becomes a readable slug,
    ``+`` and the first 8 hex digits of its SHA-256 (``CD4+`` -> ``CD4+9d1a0e2c``).
    ``+`` never occurs in a kept name, so the two kinds cannot collide, and an
    encoded name is at most :data:`MAX_PLAIN` characters long. The real name is
    always kept beside it in the tables (``group1``, ``batchid1``, ...).
:func:`join_names` / :func:`split_names`
    Several names in one table cell, ``;``-separated; a ``;`` or ``\\`` inside a
    name is escaped with ``\\`` (``b;1`` and ``b2`` -> ``b\\;1;b2``).
:func:`split_list`
    A comma-separated list on the command line (``--batches``, ``--genes``,
    ``--extra-genes``); a name holding ``,`` is written in double quotes
    (``"b,1",b2``), as in a CSV line.
:func:`parse_pairs`
    ``group1:group2`` pairs separated by ``;`` (``--comparisons``); a name holding
    ``:``, ``;`` or ``"`` is written in double quotes, with ``""`` for a quote.

:data:`NA_LIKE` lists the words pandas reads as a missing value; desweep never
reads a name column with NA inference (:func:`desweep.io.read_csv`), and
``desweep validate`` refuses them as batch, sample or label values.
"""

from __future__ import annotations

from typing import Any

import hashlib
import re
from collections.abc import Iterable

#: pandas' default missing-value words (``pandas.read_csv(na_values=...)``), and the empty string
NA_LIKE = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})
#: longest encoded name; a combination id holds three (two groups and a batch) and must stay a valid file name
MAX_PLAIN = 32
HASH_DIGITS = 8
_PLAIN = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_SLUG_DROP = re.compile(r"[^A-Za-z0-9.-]+")
#: separates the ``group1:group2`` pairs of ``--comparisons``, and the two names of a pair
PAIR_SEPARATOR, NAME_SEPARATOR, QUOTE = ";", ":", '"'


def comparison_name(group1: object, group2: object) -> str:
    """A comparison as people read it, the names as written: ``CD14 Mono vs CD16 Mono``.

    The one mapping from a comparison to its display name (report headings,
    navigation, table rows, plot titles, log lines); ``comparison_id`` stays
    for file names and the id columns of tables.
    """
    return f"{group1} vs {group2}"


def comparison_names(table: Any) -> dict[str, str]:
    """``comparison_id`` -> :func:`comparison_name` for every row of a table with ``comparison_id, group1, group2``."""
    columns = getattr(table, "columns", ())
    if table is None or not {"comparison_id", "group1", "group2"} <= set(columns):
        return {}
    rows = table[["comparison_id", "group1", "group2"]].astype(str).drop_duplicates("comparison_id").itertuples(index=False)
    return {cid: comparison_name(g1, g2) for cid, g1, g2 in rows}


def is_na_like(value: str) -> bool:
    """Whether ``value`` (stripped) is empty or a word that CSV readers take for a missing value."""
    return str(value).strip() in NA_LIKE


def encode_name(name: str) -> str:
    """A file-name-safe, length-bounded, one-to-one encoding of ``name`` (module docstring).

    Examples
    --------
    >>> encode_name("only_batch0")
    'only_batch0'
    >>> encode_name("CD4+")
    'CD4+...'  # doctest: +SKIP
    """
    name = str(name)
    if len(name) <= MAX_PLAIN and _PLAIN.fullmatch(name) and "_vs_" not in f"_{name}_":
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    slug = _SLUG_DROP.sub("-", name).strip("-.")[: MAX_PLAIN - HASH_DIGITS - 1].rstrip("-.")
    return f"{slug}+{digest}"


def join_names(names: Iterable[str]) -> str:
    """Join names with ``;``, escaping ``\\`` and ``;`` inside a name (inverse: :func:`split_names`)."""
    return ";".join(str(n).replace("\\", "\\\\").replace(";", "\\;") for n in names)


def split_names(text: object) -> list[str]:
    """The names of a :func:`join_names` cell (``""`` and missing values give ``[]``)."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    text = str(text)
    names, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ";":
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    if text:
        names.append("".join(current))
    return [n for n in names if n]


def split_list(text: str | None) -> list[str]:
    """``'a, "b,1" ,c'`` -> ``["a", "b,1", "c"]``: comma-separated, ``"``-quoted names kept exactly, empty items dropped.

    Raises
    ------
    ValueError
        An unterminated quote, or text after a closing quote.
    """
    return [name for name, _ in _tokens(str(text or ""), ",") if name]


def quote_name(name: str, *, specials: str = PAIR_SEPARATOR + NAME_SEPARATOR + QUOTE) -> str:
    """``name`` as written in ``--comparisons`` (or, with ``specials=',"'``, in a comma list):
    in double quotes when it holds one of ``specials``, outer spaces, or nothing."""
    name = str(name)
    if any(c in name for c in specials) or name != name.strip() or not name:
        return QUOTE + name.replace(QUOTE, QUOTE * 2) + QUOTE
    return name


def parse_pairs(text: str) -> list[list[str]]:
    """Split ``'A:B;"x:y":C'`` into ``[["A", "B"], ["x:y", "C"]]``.

    Unquoted names are stripped of outer spaces; quoted ones are kept exactly.
    Items are returned as written (a malformed item has one or three names):
    the caller reports it. Empty items (``A:B;;``) are dropped.

    Raises
    ------
    ValueError
        An unterminated quote, or text after a closing quote.
    """
    items: list[list[str]] = []
    names: list[str] = []
    for name, separator in _tokens(text, PAIR_SEPARATOR + NAME_SEPARATOR):
        names.append(name)
        if separator != NAME_SEPARATOR:
            if len(names) > 1 or names[0]:
                items.append(names)
            names = []
    return items


def _tokens(text: str, separators: str) -> list[tuple[str, str]]:
    """``(name, the separator after it or "")`` for each name of ``text``; ``"``-quoted names may hold separators."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == QUOTE:
            start, value = i, []
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quote in {text[start:start + 40]!r}")
                if text[i] == QUOTE and text[i + 1:i + 2] == QUOTE:
                    value.append(QUOTE)
                    i += 2
                elif text[i] == QUOTE:
                    i += 1
                    break
                else:
                    value.append(text[i])
                    i += 1
            while i < n and text[i] == " ":
                i += 1
            if i < n and text[i] not in separators:
                raise ValueError(f"text after a closing quote in {text[start:i + 1]!r}")
            name = "".join(value)
        else:
            start = i
            while i < n and text[i] not in separators:
                i += 1
            name = text[start:i].strip()
        tokens.append((name, text[i] if i < n else ""))
        if i >= n:
            return tokens
        i += 1


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``b2`` before ``b10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))

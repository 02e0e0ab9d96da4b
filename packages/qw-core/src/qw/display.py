"""Text meant for people: store URLs without their secrets, store-held text made inert.

Every URL qw prints (errors, logs, ``qw status``, reprs) goes through
:func:`redact_url`; every piece of text a terminal shows that came from a
store or a command line goes through :func:`escape_text` (or, for JSON
output, :func:`escape_json`), so that no job id, task name or event can move
the cursor, retitle the window or forge a line of output.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from qw.model import Progress

__all__ = [
    "REDACTED",
    "SECRET_OPTION_WORDS",
    "escape_json",
    "escape_text",
    "progress_text",
    "redact_url",
]

#: What a secret is replaced by.
REDACTED = "***"
#: A query option whose name (lower-cased, ``-`` and ``_`` dropped) contains
#: one of these carries a secret. Broad on purpose: hiding a harmless option
#: costs a less useful message, showing a password costs the password.
SECRET_OPTION_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "authmechanismprop")

# Used only when the URL cannot be split: userinfo is everything between the
# start (or "//") and the last "@", so a password holding "/" or "@" is
# still hidden; over-hiding here is the safe side.
_USERINFO_RE = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?([^:/@?#]*):.*@", re.DOTALL)
_QUERY_OPTION_RE = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")

# C0 controls, DEL, C1 controls, bidi embeddings/overrides/isolates and marks,
# the Unicode line and paragraph separators, and lone surrogates (which a
# terminal cannot even be sent). TAB and LF are escaped too: one cell, one line.
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_TEXT_RE = re.compile(f"[\\\\{_UNSAFE}]")
# JSON text already escapes C0 controls, quotes and backslashes itself.
_JSON_RE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _is_secret(name: str) -> bool:
    folded = unquote(name).lower().replace("_", "").replace("-", "")
    return any(word in folded for word in SECRET_OPTION_WORDS)


def _redact_query(query: str) -> str:
    def hide(match: re.Match[str]) -> str:
        sep, name, _ = match.groups()
        return f"{sep}{name}={REDACTED}" if _is_secret(name) else match.group(0)

    # The leading "?" lets the first option match like the others.
    return _QUERY_OPTION_RE.sub(hide, "?" + query)[1:]


def _redact_loosely(url: str) -> str:
    url, hash_, _ = url.partition("#")
    url = _USERINFO_RE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}:{REDACTED}@", url)
    head, sep, query = url.partition("?")
    return head + sep + _redact_query(query) + (hash_ and f"#{REDACTED}")


def redact_url(url: str) -> str:
    """``url`` with its password, secret-bearing query options and fragment as ``***``.

    Never raises: a URL that cannot be parsed is redacted by pattern instead.
    """
    try:
        parts = urlsplit(url)
        start = url.index("//") + 2 if parts.netloc else 0
        end = start + len(parts.netloc)
        if url[start:end] != parts.netloc or "@" in url[end:].partition("?")[0]:
            # "user:pw@host" without "//", or a password holding "/": the
            # split put part of the userinfo in the path.
            return _redact_loosely(url)
        userinfo, _, host = parts.netloc.rpartition("@")
        netloc = parts.netloc
        if ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
        tail, hash_, _ = url[end:].partition("#")
        path, sep, query = tail.partition("?")
        # No store reads a fragment, so whatever was pasted there is hidden too.
        return url[:start] + netloc + path + sep + _redact_query(query) + (hash_ and f"#{REDACTED}")
    except Exception:
        try:
            return _redact_loosely(str(url))
        except Exception:
            return REDACTED


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """``text`` safe for a terminal line: control, bidi and separator characters as escapes.

    They become ``\\x1b``, ``\\r``, ``\\n``, ``\\t``, ``\\u202e`` and so on,
    and a backslash becomes ``\\\\``, so the output reads back unambiguously.
    """
    return _TEXT_RE.sub(_escape, text) if _TEXT_RE.search(text) else text


def _escape_json_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def escape_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) safe for a terminal.

    The characters JSON leaves raw but a terminal acts on become ``\\uXXXX``
    escapes, so the text is still valid JSON for the same value.
    """
    return _JSON_RE.sub(_escape_json_char, text)


def progress_text(progress: Progress | None, *, message_chars: int | None = None) -> str:
    """A job's progress in words: ``40% resizing``, ``40%``, ``resizing`` or ``-``. NOT escaped.

    The fraction as a whole percentage, rounded down (so ``100%`` only when
    the task said 1.0); the message cut to ``message_chars`` (ending in
    ``…``) when given. The message is the task's text: print it through
    :func:`escape_text` (or a CLI table, which escapes every cell), after
    cutting, so that no escape sequence is cut in half.
    """
    if progress is None:
        return "-"
    parts = []
    if progress.fraction is not None:
        parts.append(f"{int(progress.fraction * 100)}%")
    message = progress.message
    if message is not None:
        if message_chars is not None and len(message) > message_chars:
            message = message[: message_chars - 1] + "…"
        parts.append(message)
    return " ".join(parts) or "-"

"""Plain text (and a title) from what operators upload: text, Markdown, HTML, PDF.

The text is what a voice agent may read back, so markup noise goes (link targets,
emphasis markers, scripts, navigation) while structure that helps chunking stays:
headings become ``# Heading`` lines and block elements become line breaks.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

SUPPORTED_TYPES = ("text/plain", "text/markdown", "text/html", "application/pdf")
_ALIASES = {
    "text/x-markdown": "text/markdown",
    "text/md": "text/markdown",
    "application/xhtml+xml": "text/html",
}


def media_type(content_type: str) -> str:
    """``Text/HTML; charset=utf-8`` -> ``text/html``."""
    bare = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset=\"?([\w.-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else None


def _decode(content: bytes | str, content_type: str) -> str:
    if isinstance(content, str):
        return content
    declared = _charset(content_type)
    for encoding in filter(None, (declared, "utf-8-sig")):
        try:
            return content.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return content.decode("utf-8", errors="replace")


def _tidy(text: str) -> str:
    """Unix line ends, no indentation, at most one blank line, no NUL characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = "\n".join(line.strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# Markdown.

_MD_RULES: list[tuple[re.Pattern[str], str]] = [
    # Link reference definitions, horizontal rules and table rulers: whole lines go.
    (re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]*\S+.*$", re.M), ""),
    (re.compile(r"^[ \t]{0,3}(?:[-*_][ \t]*){3,}$", re.M), ""),
    (re.compile(r"^[ \t]*\|?(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*:?-*:?[ \t]*$", re.M), ""),
    (re.compile(r"^([ \t]*)[*+][ \t]+", re.M), r"\1- "),  # bullets
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.M), ""),  # block quotes
    (re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M), r"\1 \2"),  # closing hashes
    (re.compile(r"^[ \t]*\|(.*)\|[ \t]*$", re.M), r"\1"),  # table rows: outer pipes
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> their text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference links
    (re.compile(r"<(https?://[^>]+)>"), r"\1"),  # autolinks
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),  # inline HTML tags
    (re.compile(r"`([^`]+)`"), r"\1"),  # inline code
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),  # strikethrough
]
_SETEXT = re.compile(r"^(?P<title>[^\n#>|].*)\n(?P<rule>=+|-+)[ \t]*$", re.M)
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~).*$", re.M)  # the code itself stays


def _markdown(text: str) -> tuple[str, str | None]:
    text = _FENCE.sub("", text.replace("\r\n", "\n"))
    text = _SETEXT.sub(
        lambda m: ("# " if m.group("rule")[0] == "=" else "## ") + m.group("title"), text
    )
    for pattern, replacement in _MD_RULES:
        text = pattern.sub(replacement, text)
    heading = re.search(r"^#\s+(.+)$", text, re.M)
    return _tidy(text), heading.group(1).strip() if heading else None


# HTML.

_SKIPPED = frozenset({"script", "style", "nav", "noscript", "template", "svg", "iframe"})
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "caption",
    ]
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.first_h1: list[str] = []
        self.skip_depth = 0
        self.in_title = False
        self.in_h1 = False
        self.pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _SKIPPED:
            self.skip_depth += 1
        elif tag in _HEADINGS:
            self.parts.append("\n" + "#" * _HEADINGS[tag] + " ")
            self.in_h1 = tag == "h1" and not self.first_h1
        elif tag in _BLOCKS:
            self.parts.append("\n- " if tag == "li" else "\n")
            self.pre_depth += tag == "pre"
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _HEADINGS:
            self.parts.append("\n")
            self.in_h1 = False
        elif tag in _BLOCKS:
            self.parts.append("\n")
            self.pre_depth = max(0, self.pre_depth - (tag == "pre"))

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.skip_depth:
            self.parts.append(data if self.pre_depth else re.sub(r"\s+", " ", data))
            if self.in_h1:
                self.first_h1.append(data)


def _html(text: str) -> tuple[str, str | None]:
    parser = _TextParser()
    parser.feed(text)
    parser.close()
    lines = (line.strip() for line in "".join(parser.parts).split("\n"))
    body = _tidy("\n".join(line for line in lines if line))
    title = " ".join("".join(parser.title_parts or parser.first_h1).split())
    return body, title or None


# PDF.


def _pdf(content: bytes) -> tuple[str, str | None]:
    from pypdf import PdfReader  # deferred: only PDF uploads pay for the import

    try:
        reader = PdfReader(io.BytesIO(content))
        encrypted = reader.is_encrypted and not reader.decrypt("")
        pages = [] if encrypted else [page.extract_text() or "" for page in reader.pages]
        title = None if encrypted or reader.metadata is None else reader.metadata.title
    except Exception as exc:  # a damaged file can fail anywhere in the parser
        raise ValueError(f"not a readable PDF: {exc}") from exc
    if encrypted:
        raise ValueError("the PDF is encrypted: upload an unprotected copy")
    return _tidy("\n\n".join(pages)), (str(title).strip() or None) if title else None


def extract_text(content: bytes | str, content_type: str) -> tuple[str, str | None]:
    """``(text, title)``; ``ValueError`` for a type it cannot read."""
    kind = media_type(content_type)
    if kind == "application/pdf":
        if isinstance(content, str):
            raise ValueError("a PDF must be sent as bytes (base64 in JSON)")
        return _pdf(content)
    if kind not in SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported content type {content_type!r}: use one of {', '.join(SUPPORTED_TYPES)}"
        )
    text = _decode(content, content_type)
    if kind == "text/markdown":
        return _markdown(text)
    if kind == "text/html":
        return _html(text)
    return _tidy(text), None

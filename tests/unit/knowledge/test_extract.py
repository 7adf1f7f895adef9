"""Text extraction: Markdown and HTML lose their markup noise but keep their structure."""

from __future__ import annotations

import pytest

from proxy.knowledge.extract import extract_text, media_type

MARKDOWN = """Store Guide
===========

Visit our [website](https://example.com/shop) or **call** us, *any* day; see `hours`.
Our snake_case_names stay intact.

## Returns ##

* Keep the receipt
+ Pack the item
> Refunds take five days.

| Item | Days |
|------|------|
| Shoes | 30 |

![Our logo](logo.png)
[docs]: https://example.com/docs

```
code stays
```
"""


def test_markdown_keeps_text_and_headings_without_markup_noise():
    text, title = extract_text(MARKDOWN, "text/markdown")
    assert title == "Store Guide"
    assert text.startswith("# Store Guide\n")
    assert "Visit our website or call us, any day; see hours." in text
    assert "snake_case_names" in text
    assert "\n## Returns\n" in text
    assert "- Keep the receipt\n- Pack the item\nRefunds take five days." in text
    assert "Shoes | 30" in text and "Our logo" in text and "code stays" in text
    for noise in ("https://", "**", "](", "![", "|---", "```", "> "):
        assert noise not in text


HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Acme &amp; Co FAQ</title>
<style>body { color: red }</style><script>var tracking = 1;</script></head>
<body><nav><a href="/">Home</a> | <a href="/faq">FAQ</a></nav>
<h1>Frequently asked</h1><p>We open at <b>9 am</b>,
   every   day.</p><ul><li>Returns: 30 days</li><li>退货需要发票</li></ul>
<div>Contact<br>support@example.com</div><noscript>Enable JS</noscript></body></html>"""


def test_html_drops_scripts_styles_and_navigation_and_keeps_blocks_as_lines():
    text, title = extract_text(HTML.encode(), "text/html; charset=utf-8")
    assert title == "Acme & Co FAQ"
    assert text.split("\n") == [
        "# Frequently asked",
        "We open at 9 am, every day.",
        "- Returns: 30 days",
        "- 退货需要发票",
        "Contact",
        "support@example.com",
    ]


def test_html_without_a_title_uses_its_first_heading():
    assert extract_text("<h1>Hours</h1><p>Nine to five.</p>", "text/html")[1] == "Hours"


def test_plain_text_is_decoded_and_tidied():
    raw = "第一行\r\n\r\n\r\n\r\n  second line  \x00\n".encode("gb18030")
    text, title = extract_text(raw, "text/plain; charset=gb18030")
    assert (text, title) == ("第一行\n\nsecond line", None)
    assert extract_text("caf\u00e9".encode(), "text/plain")[0] == "caf\u00e9"


def test_unknown_types_are_refused_clearly():
    with pytest.raises(ValueError, match="unsupported content type 'image/png'"):
        extract_text(b"\x89PNG", "image/png")
    assert media_type("Text/X-Markdown; charset=utf-8") == "text/markdown"


def tiny_pdf(text: str, title: str) -> bytes:
    """A one-page PDF with ``text`` in Helvetica and a document title."""
    stream = f"BT /F1 18 Tf 72 700 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    pdf += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(pdf)


def test_pdf_text_and_title_are_extracted():
    text, title = extract_text(
        tiny_pdf("Returns are accepted within 30 days.", "Policy"), "application/pdf"
    )
    assert "Returns are accepted within 30 days." in text
    assert title == "Policy"


def test_a_broken_pdf_is_a_value_error():
    with pytest.raises(ValueError, match="PDF"):
        extract_text(b"%PDF-1.4 nonsense", "application/pdf")
    with pytest.raises(ValueError, match="bytes"):
        extract_text("text", "application/pdf")

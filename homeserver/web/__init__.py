"""The pages we serve (the invite page and its sign-up; later login, consent, account): rendered
on the server from Jinja2 templates with autoescaping, no JavaScript needed, strings from
`catalogue`. Routes live in homeserver/api/pages.py; this package knows no HTTP."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from homeserver.web.catalogue import Strings

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"


class Pages:
    def __init__(self, server_name: str) -> None:
        self.server_name = server_name

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        # Jinja2 (some 9 MiB) is loaded when the first page is asked for, not at start
        import jinja2

        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,  # a typo in a template fails its test, not silently
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, lang: str, **context: Any) -> str:
        strings = Strings(lang)
        return self.env.get_template(name).render(t=strings, lang=strings.lang, server=self.server_name, **context)


def qr_svg(text: str, title: str) -> Markup:
    """`text` as an inline SVG QR code (dark on light, a quiet zone, scaled by CSS), with a title."""
    import segno  # loaded with the first QR code, not at start

    code = segno.make(text, error="m")
    svg = code.svg_inline(scale=4, dark="#111", light="#fff", title=title, svgclass="qr", lineclass=None)
    return Markup(svg)  # segno escapes the title; the rest is its own markup


def qr_terminal(text: str) -> str:
    """`text` as a QR code for a terminal (two rows per line of half blocks)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()

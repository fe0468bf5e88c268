"""One self-contained HTML page from a Jinja2 template: styles and scripts inline, data as escaped JSON.

A Content-Security-Policy in the page allows only its own inline style and scripts (by their sha256) and
images from data URIs: nothing is fetched, no injected markup can run a script, and the page has no way
to send or store anything.
"""
from __future__ import annotations

import base64
import hashlib
import platform
from datetime import datetime, timezone
from pathlib import Path

from s3f_edge.outputs import atomic_write_text

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(style: str, script: str) -> str:
    """The page's policy: its own inline ``style`` and ``script`` only (by hash), images from data URIs only."""
    return (f"default-src 'none'; img-src data:; style-src {_source_hash(style)}; script-src {_source_hash(script)}; "
            "base-uri 'none'; form-action 'none'")


def environment():
    """The Jinja2 environment of the report templates: HTML autoescaping on, undefined names an error."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, scripts: list[str], data: dict, **context) -> str:
    """Render ``template`` with the shared style, the given scripts and ``data`` for them.

    Args:
        template: a template file in ``templates/`` (it extends ``base.html.j2``).
        scripts: JavaScript files in ``templates/``, joined in order into the page's one script.
        data: what the script reads, embedded as JSON in a non-executable script element (``tojson`` escapes
            ``<``, ``>``, ``&`` and ``'``, so no string in it can close the element).
        **context: the template's other variables (autoescaped).

    Returns:
        The page's HTML.
    """
    from markupsafe import Markup

    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    script = "\n".join((TEMPLATES / name).read_text(encoding="utf-8") for name in scripts)
    return environment().get_template(template).render(
        csp=content_security_policy(style, script), style=Markup(style), script=Markup(script), data=data,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), host=platform.node(), **context)


def write_page(path: str | Path, html: str) -> Path:
    """Write ``html`` to ``path`` atomically (a reader never sees half a page); returns the path. Text from a file
    name that is not valid UTF-8 shows its undecodable bytes as U+FFFD: a page is always valid UTF-8."""
    atomic_write_text(path, html.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return Path(path)

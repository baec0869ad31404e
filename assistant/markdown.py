"""Markdown to the HTML subset Qt's rich text understands, with highlighted code blocks.

Plain Python so it can be tested without a window. Each fenced code block gets a
"copy:N" link the chat view turns into a Copy action; `code_blocks` returns their text.
"""

from __future__ import annotations

import html
from functools import lru_cache


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    # "html": False so text from a model can never inject markup into the window.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable("table")
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_fence)
    return md


def render(text: str, dark: bool = False) -> str:
    env = {"blocks": 0, "dark": dark}
    return _parser().render(text, env)


def code_blocks(text: str) -> list[str]:
    return [t.content for t in _parser().parse(text) if t.type in ("fence", "code_block")]


def _render_fence(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    n = env["blocks"]
    env["blocks"] = n + 1
    language = (token.info or "").strip().split(" ")[0]
    body = _highlight(token.content, language, env["dark"])
    label = html.escape(language or "code")
    background = "#1e1f22" if env["dark"] else "#f3f4f6"
    return (
        f'<table width="100%" cellspacing="0" cellpadding="6" style="background:{background}; margin:4px 0;">'
        f'<tr><td><span style="color:#888;">{label}</span> &nbsp; <a href="copy:{n}">Copy</a></td></tr>'
        f'<tr><td><pre style="white-space:pre-wrap; font-family:monospace;">{body}</pre></td></tr></table>'
    )


def _highlight(code: str, language: str, dark: bool) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:
        return html.escape(code)
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    # Inline styles: Qt's rich text ignores <style> blocks and CSS classes from Pygments.
    formatter = HtmlFormatter(noclasses=True, nowrap=True, style="monokai" if dark else "friendly")
    return highlight(code, lexer, formatter)

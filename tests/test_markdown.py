"""Markdown rendering for chat bubbles: highlighted code, copyable blocks, no injected markup."""

from __future__ import annotations

from assistant import markdown

SAMPLE = "Here:\n\n```python\ndef f(x):\n    return x + 1\n```\n\nand `inline` **bold**\n\n```\nplain block\n```\n"


def test_code_blocks_are_highlighted_and_copyable() -> None:
    html = markdown.render(SAMPLE)
    assert 'href="copy:0"' in html and 'href="copy:1"' in html
    assert "<span style=" in html  # Pygments inline colours, which Qt rich text understands
    assert "<strong>bold</strong>" in html and "<code>inline</code>" in html
    assert markdown.code_blocks(SAMPLE) == ["def f(x):\n    return x + 1\n", "plain block\n"]


def test_model_output_cannot_inject_markup() -> None:
    html = markdown.render("<img src=x onerror=alert(1)> <a href='file:///etc/passwd'>x</a>")
    assert "<img" not in html and "<a href='file" not in html and "&lt;img" in html


def test_dark_theme_changes_code_background() -> None:
    assert markdown.render(SAMPLE, dark=True) != markdown.render(SAMPLE, dark=False)


def test_unknown_language_is_escaped_not_lost() -> None:
    html = markdown.render("```nosuchlang\na < b && c\n```")
    assert "a &lt; b &amp;&amp; c" in html

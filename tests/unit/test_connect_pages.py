"""The connect pages escape every value and load nothing from elsewhere."""

from __future__ import annotations

import pytest

from shared.pages import PAGE_HEADERS, connected_page, error_page, start_page

NASTY = '<script>alert("x")</script>&\'"'


def test_the_error_page_escapes_everything_it_shows() -> None:
    page = error_page(400, NASTY, NASTY, error=NASTY, description=NASTY)
    assert page.status == 400
    assert "<script>" not in page.html
    # the title twice (<title> and the heading), the message, the error and its description
    assert page.html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;") == 5


def test_the_success_page_escapes_the_users_names() -> None:
    page = connected_page(user=NASTY, display_name=NASTY, reconnected=False)
    assert page.status == 200 and "<script>" not in page.html
    assert "Account connected" in page.html
    assert "Account reconnected" in connected_page(user="a", display_name="", reconnected=True).html


def test_the_start_page_escapes_its_form_action() -> None:
    page = start_page('https://x.test/api/connect"><script>')
    assert '"><script>' not in page.html
    assert 'action="https://x.test/api/connect&quot;&gt;&lt;script&gt;"' in page.html


@pytest.mark.parametrize("html", [start_page("/c").html, error_page(400, "t", "m").html])
def test_pages_load_nothing_from_elsewhere(html: str) -> None:
    assert "<script" not in html and "src=" not in html and "http://" not in html
    assert "default-src 'none'" in PAGE_HEADERS["Content-Security-Policy"]
    assert PAGE_HEADERS["Cache-Control"] == "no-store"

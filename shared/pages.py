"""The few HTML pages a user sees while connecting an account.

Every value that reaches a page goes through ``html.escape`` here, including the ones
Microsoft sends back on the callback (``error``, ``error_description``): they come from the
query string or a form post and are attacker-controlled. The pages load nothing from
elsewhere (inline style only), so ``PAGE_HEADERS`` can forbid everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f5f6f8;color:#1f2328;margin:0}
main{max-width:32rem;margin:12vh auto;padding:2rem 2.25rem;background:#fff;border-radius:12px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.35rem;margin:0 0 1rem}
p{line-height:1.5}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:1rem 0}
dt{color:#59636e}dd{margin:0;word-break:break-all}
label{display:block;margin:1rem 0 .35rem;color:#59636e;font-size:.9rem}
input{width:100%;box-sizing:border-box;padding:.55rem .7rem;border:1px solid #d0d7de;border-radius:6px;font-size:1rem}
button{margin-top:1.25rem;padding:.65rem 1.2rem;border:0;border-radius:6px;background:#0f6cbd;color:#fff;
font-size:1rem;cursor:pointer}
button:hover{background:#115ea3}
.error h1{color:#b42318}
code{background:#f0f1f3;padding:.1rem .3rem;border-radius:4px}
""".strip()


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def _page(title: str, body: str, *, css_class: str = "") -> str:
    klass = f' class="{escape(css_class)}"' if css_class else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main{klass}>{body}</main></body></html>\n"
    )


def start_page(connect_url: str) -> Page:
    """A button that starts the sign-in, with an optional e-mail address as login hint."""
    body = (
        "<h1>Connect your Microsoft account</h1>"
        "<p>Sign in with Microsoft to let the mail connector receive your new and changed "
        "inbox messages as they arrive.</p>"
        f'<form method="get" action="{escape(connect_url)}">'
        '<label for="login_hint">E-mail address (optional)</label>'
        '<input id="login_hint" name="login_hint" type="email" autocomplete="email" maxlength="256">'
        '<button id="connect" type="submit">Connect Microsoft account</button>'
        "</form>"
    )
    return Page(200, _page("Connect your Microsoft account", body))


def connected_page(*, user: str, display_name: str, reconnected: bool) -> Page:
    heading = "Account reconnected" if reconnected else "Account connected"
    who = escape(display_name or user)
    body = (
        f'<h1 id="result">{escape(heading)}</h1>'
        f"<p>Thank you, {who}. New mail in your inbox now reaches the connector as it arrives.</p>"
        f"<dl><dt>Account</dt><dd>{escape(user)}</dd></dl>"
        "<p>You can close this window.</p>"
    )
    return Page(200, _page(heading, body))


def error_page(status: int, title: str, message: str, *, error: str = "", description: str = "") -> Page:
    details = ""
    if error or description:
        rows = ""
        if error:
            rows += f"<dt>Error</dt><dd><code>{escape(error)}</code></dd>"
        if description:
            rows += f"<dt>Details</dt><dd>{escape(description)}</dd>"
        details = f"<dl>{rows}</dl>"
    body = (
        f'<h1 id="result">{escape(title)}</h1><p>{escape(message)}</p>{details}'
        "<p>You can close this window, or start again from the connect page.</p>"
    )
    return Page(status, _page(title, body, css_class="error"))

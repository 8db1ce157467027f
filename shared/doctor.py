"""``python -m shared.cli doctor``: why can't anyone connect? Each check in plain words.

For the operator whose users cannot connect a mailbox: it reads the settings as the app
does, then asks each dependency the question that fails when it is misconfigured:
- every setting: present when required and well-formed (the message names the setting);
- the redirect URI: the one the app really sends in its authorize URL (built by MSAL, as
  at connect) must be ``PUBLIC_BASE_URL/api/auth/callback``, and the app registration must
  list exactly that (AADSTS50011 otherwise);
- the identity platform's OpenID discovery document for ``MICROSOFT_AUTHORITY_HOST`` and
  ``MICROSOFT_TENANT_ID`` is reachable;
- Table and Queue Storage answer (``AzureWebJobsStorage``), Key Vault answers
  (``KEY_VAULT_URL``: reachable and the identity may list secrets).
Nothing printed carries a secret: values of secret settings are never shown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from shared.config import SETTING_DEFAULTS, Settings, is_loopback_host
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.bootstrap import Services

_SECRET_SETTINGS = {"MICROSOFT_CLIENT_SECRET", "CLIENT_STATE_KEY", "AzureWebJobsStorage"}
HTTP_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""
    warning: bool = False


def _settings_findings(env: Mapping[str, str]) -> tuple[list[Finding], Settings | None]:
    findings = []
    for name, default in SETTING_DEFAULTS.items():
        present = bool((env.get(name) or "").strip())
        if name == "AzureWebJobsStorage" and (env.get("AzureWebJobsStorage__accountName") or "").strip():
            present = True
        if default is None and not present:
            findings.append(Finding(False, f"setting {name} is not set", f"set {name} (it is required)"))
    try:
        settings = Settings.from_env(env)
    except ConfigurationError as exc:
        findings.append(Finding(False, str(exc), "correct that setting and run doctor again"))
        return findings, None
    findings.append(Finding(True, f"all {len(SETTING_DEFAULTS)} settings read and valid"))
    bundle = (env.get("REQUESTS_CA_BUNDLE") or "").strip()
    if bundle and not os.path.isfile(bundle):
        findings.append(Finding(False, f"REQUESTS_CA_BUNDLE names a file that does not exist ({bundle})",
                                "point it at the CA file (locally .devstack/certs/ca.pem, made by `make run`) "
                                "or remove it"))
    base = urlparse(settings.public_base_url)
    if base.path not in ("", "/"):
        findings.append(Finding(False, f"PUBLIC_BASE_URL has a path ({base.path})",
                                "set PUBLIC_BASE_URL to the app's origin only, e.g. https://myapp.azurewebsites.net"))
    if base.scheme != "https" and not is_loopback_host(settings.public_base_url):
        findings.append(Finding(False, "PUBLIC_BASE_URL is not https",
                                "Graph delivers notifications and Microsoft redirects only to https URLs: use https"))
    if settings.allow_anonymous_connect and not is_loopback_host(settings.public_base_url):
        findings.append(Finding(True, "ALLOW_ANONYMOUS_CONNECT is true on a public address",
                                "anyone can attach a mailbox; set it to false and use connect sessions",
                                warning=True))
    return findings, settings


def _http_get(url: str, *, allow_redirects: bool = True) -> Any:
    import requests

    return requests.get(url, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=allow_redirects)


def _redirect_uri_finding(services: Services, http_get: Callable[..., Any]) -> Finding:
    settings = services.settings
    expected = f"{settings.public_base_url}/api/auth/callback"
    flow = services.identity.start_auth_code_flow(settings.scopes, settings.redirect_uri)
    sent = parse_qs(urlparse(str(flow["auth_uri"])).query).get("redirect_uri", [""])[0]
    if sent != expected:
        return Finding(False, f"the app sends redirect_uri {sent!r}, not {expected!r}",
                       "set PUBLIC_BASE_URL to the address browsers reach the app at")
    # The identity platform's own answer to that authorize request: AADSTS50011 when the
    # app registration does not list the redirect URI, AADSTS700016 for an unknown app
    # (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
    try:
        answer = http_get(str(flow["auth_uri"]), allow_redirects=False)
    except OSError as exc:
        return Finding(False, f"the authorize endpoint is unreachable ({type(exc).__name__})",
                       "check MICROSOFT_AUTHORITY_HOST and the network")
    if "AADSTS50011" in answer.text:
        return Finding(False, f"the app registration does not list the redirect URI {expected}",
                       f"add {expected} under Authentication > Web > Redirect URIs of the app registration")
    if "AADSTS700016" in answer.text:
        return Finding(False, f"the identity platform does not know MICROSOFT_CLIENT_ID {settings.client_id}",
                       "copy the Application (client) ID of the app registration into MICROSOFT_CLIENT_ID, "
                       "and check MICROSOFT_TENANT_ID")
    return Finding(True, f"redirect URI {expected} is the one sent and the identity platform accepts it")


def _discovery_finding(settings: Settings, http_get: Callable[..., Any]) -> Finding:
    url = f"{settings.authority}/v2.0/.well-known/openid-configuration"
    try:
        response = http_get(url)
    except OSError as exc:  # requests' errors, and a CA bundle that cannot be read
        return Finding(False, f"the identity platform's discovery document {url} is unreachable ({type(exc).__name__})",
                       "check MICROSOFT_AUTHORITY_HOST, DNS, the proxy and the CA bundle (REQUESTS_CA_BUNDLE)")
    try:
        document = response.json() if response.ok else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict) or "authorization_endpoint" not in document:
        return Finding(False, f"{url} answered {response.status_code} without a discovery document",
                       "check MICROSOFT_TENANT_ID (common, organizations or your tenant's id) and MICROSOFT_AUTHORITY_HOST")
    return Finding(True, f"discovery document of {settings.authority} reachable")


def _probe(what: str, check: Callable[[], object], fix: str) -> Finding:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return Finding(False, f"{what} does not answer ({type(exc).__name__}: {str(exc)[:160]})", fix)
    return Finding(True, f"{what} answers")


def diagnose(
    env: Mapping[str, str] | None = None,
    *,
    services: Services | None = None,
    http_get: Callable[..., Any] = _http_get,
) -> list[Finding]:
    from shared.bootstrap import Services

    findings, settings = _settings_findings(os.environ if env is None else env)
    if settings is None:
        return findings
    current = services or Services(settings)
    findings.append(_discovery_finding(settings, http_get))
    try:
        findings.append(_redirect_uri_finding(current, http_get))
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        findings.append(Finding(False, f"the app could not build a sign-in request ({type(exc).__name__})",
                                "check MICROSOFT_CLIENT_ID, MICROSOFT_AUTHORITY_HOST and MICROSOFT_TENANT_ID"))
    storage_fix = ("check AzureWebJobsStorage (or AzureWebJobsStorage__accountName and the identity's "
                   "Storage Table/Queue Data Contributor roles)")
    # The adapters' own probes (the ports do not name them: fakes need not have one).
    probes: dict[str, Any] = {"tables": current.accounts, "queues": current.queues, "vault": current.secrets}
    findings.append(_probe("Table Storage", lambda: probes["tables"].check(), storage_fix))
    findings.append(_probe("Queue Storage", lambda: probes["queues"].check(), storage_fix))
    findings.append(_probe("Key Vault", lambda: probes["vault"].check(),
                           "check KEY_VAULT_URL and that the app's identity is a Key Vault Secrets Officer"))
    return findings


def report(findings: list[Finding], out: IO[str]) -> int:
    for finding in findings:
        mark = "ok  " if finding.ok and not finding.warning else ("warn" if finding.ok else "FAIL")
        out.write(f"{mark}  {finding.what}\n")
        if finding.fix and (not finding.ok or finding.warning):
            out.write(f"      fix: {finding.fix}\n")
    failed = sum(1 for f in findings if not f.ok)
    out.write("everything checked is in order\n" if not failed else f"{failed} problem(s) to fix\n")
    return 0 if not failed else 1

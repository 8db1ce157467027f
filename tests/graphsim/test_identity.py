"""The simulated Microsoft identity platform, driven by MSAL and requests as the product does."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msal
import pytest
import requests

from devstack.graphsim import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    DEFAULT_TENANT_ID,
)

from .conftest import ControlSession, SignIn, follow_authorize, parse_form_post


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _token(graphsim, **form: str) -> requests.Response:
    return requests.post(f"{graphsim.base_url}/common/oauth2/v2.0/token", data=form, verify=graphsim.ca_file,
                         timeout=10)


def test_discovery_document_points_at_the_simulator_and_publishes_an_rs256_key(graphsim):
    config = requests.get(f"{graphsim.base_url}/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration",
                          verify=graphsim.ca_file, timeout=10).json()
    assert config["issuer"] == f"{graphsim.base_url}/{DEFAULT_TENANT_ID}/v2.0"
    assert config["token_endpoint"] == f"{graphsim.base_url}/{DEFAULT_TENANT_ID}/oauth2/v2.0/token"
    keys = requests.get(config["jwks_uri"], verify=graphsim.ca_file, timeout=10).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["kid"]


def test_auth_code_flow_with_pkce_signs_in_the_hinted_user(confidential_app, sign_in: SignIn, sim_user):
    result = sign_in(confidential_app, sim_user["userPrincipalName"], ["User.Read", "Mail.Read"])
    assert result["token_type"] == "Bearer"
    claims = result["id_token_claims"]
    assert claims["oid"] == sim_user["id"] and claims["tid"] == DEFAULT_TENANT_ID
    assert claims["preferred_username"] == sim_user["userPrincipalName"]
    assert claims["aud"] == DEFAULT_CLIENT_ID
    account = confidential_app.get_accounts(username=sim_user["userPrincipalName"])[0]
    assert account["home_account_id"] == f"{sim_user['id']}.{DEFAULT_TENANT_ID}"
    access = _claims(result["access_token"])
    assert access["aud"] == "https://graph.microsoft.com"
    assert {"User.Read", "Mail.Read"} <= set(access["scp"].split())
    assert access["appid"] == DEFAULT_CLIENT_ID and access["oid"] == sim_user["id"]


def test_form_post_answers_with_a_self_submitting_form_to_the_redirect_uri(graphsim, confidential_app, sim_user):
    flow = confidential_app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=DEFAULT_REDIRECT_URI,
                                                    login_hint=sim_user["userPrincipalName"],
                                                    response_mode="form_post")
    page = requests.get(flow["auth_uri"], verify=graphsim.ca_file, allow_redirects=False, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f'action="{DEFAULT_REDIRECT_URI}"' in page.text and "document.forms[0].submit()" in page.text
    fields = parse_form_post(page.text)
    assert fields["state"] == flow["state"]
    result = confidential_app.acquire_token_by_auth_code_flow(flow, fields)
    assert result["id_token_claims"]["oid"] == sim_user["id"]


def test_a_code_is_single_use(graphsim, confidential_app, sim_user):
    flow = confidential_app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=DEFAULT_REDIRECT_URI,
                                                    login_hint=sim_user["userPrincipalName"])
    auth_response = follow_authorize(flow["auth_uri"], graphsim.ca_file)
    first = confidential_app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    assert "access_token" in first
    second = confidential_app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    assert second["error"] == "invalid_grant"
    assert second["error_description"].startswith("AADSTS54005:")
    assert second["error_codes"] == [54005]


def _manual_code(graphsim, upn: str, challenge: str) -> str:
    query = urlencode({"client_id": DEFAULT_CLIENT_ID, "response_type": "code", "redirect_uri": DEFAULT_REDIRECT_URI,
                       "scope": "openid offline_access Mail.Read", "state": "s1", "login_hint": upn,
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    response = requests.get(f"{graphsim.base_url}/common/oauth2/v2.0/authorize?{query}", verify=graphsim.ca_file,
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def test_the_code_is_bound_to_the_verifier_and_the_redirect_uri(graphsim, sim_user):
    verifier = secrets.token_urlsafe(43)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code = _manual_code(graphsim, sim_user["userPrincipalName"], challenge)
    common = {"grant_type": "authorization_code", "client_id": DEFAULT_CLIENT_ID,
              "client_secret": DEFAULT_CLIENT_SECRET, "code": code}
    wrong_verifier = _token(graphsim, **common, redirect_uri=DEFAULT_REDIRECT_URI, code_verifier="x" * 43)
    assert wrong_verifier.status_code == 400 and wrong_verifier.json()["error"] == "invalid_grant"
    assert wrong_verifier.json()["error_codes"] == [501481]
    wrong_redirect = _token(graphsim, **common, redirect_uri="http://127.0.0.1:9/cb", code_verifier=verifier)
    assert wrong_redirect.status_code == 400 and wrong_redirect.json()["error"] == "invalid_grant"
    ok = _token(graphsim, **common, redirect_uri=DEFAULT_REDIRECT_URI, code_verifier=verifier)
    assert ok.status_code == 200 and ok.json()["refresh_token"]


def test_authorize_without_pkce_is_refused_back_to_the_redirect_uri(graphsim, sim_user):
    query = urlencode({"client_id": DEFAULT_CLIENT_ID, "response_type": "code", "redirect_uri": DEFAULT_REDIRECT_URI,
                       "scope": "Mail.Read", "state": "abc", "login_hint": sim_user["userPrincipalName"]})
    response = requests.get(f"{graphsim.base_url}/common/oauth2/v2.0/authorize?{query}", verify=graphsim.ca_file,
                            allow_redirects=False, timeout=10)
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert params["error"] == ["invalid_request"] and params["state"] == ["abc"]


def test_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(graphsim, confidential_app, sim_user):
    flow = confidential_app.initiate_auth_code_flow(["Mail.Read"], redirect_uri="https://evil.example/cb",
                                                    login_hint=sim_user["userPrincipalName"])
    response = requests.get(flow["auth_uri"], verify=graphsim.ca_file, allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Location" not in response.headers
    assert "AADSTS50011" in response.text


def test_consent_page_accept_signs_in_the_chosen_account(graphsim, sim: ControlSession, confidential_app, sim_user):
    sim.put("/settings", json={"autoConsent": False}).raise_for_status()
    flow = confidential_app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=DEFAULT_REDIRECT_URI,
                                                    login_hint=sim_user["userPrincipalName"])
    page = requests.get(flow["auth_uri"], verify=graphsim.ca_file, allow_redirects=False, timeout=10)
    assert page.status_code == 200 and 'value="accept"' in page.text and 'value="cancel"' in page.text
    fields = parse_form_post(page.text)
    fields.update({"login": sim_user["userPrincipalName"], "action": "accept"})
    submitted = requests.post(flow["auth_uri"].split("?")[0], data=fields, verify=graphsim.ca_file,
                              allow_redirects=False, timeout=10)
    assert submitted.status_code == 302
    auth_response = {k: v[0] for k, v in parse_qs(urlsplit(submitted.headers["Location"]).query).items()}
    result = confidential_app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert result["id_token_claims"]["oid"] == sim_user["id"]


def test_consent_page_cancel_returns_access_denied_with_state(graphsim, sim: ControlSession, confidential_app, sim_user):
    sim.put("/settings", json={"autoConsent": False}).raise_for_status()
    flow = confidential_app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=DEFAULT_REDIRECT_URI)
    page = requests.get(flow["auth_uri"], verify=graphsim.ca_file, allow_redirects=False, timeout=10)
    fields = parse_form_post(page.text)
    fields["action"] = "cancel"
    submitted = requests.post(flow["auth_uri"].split("?")[0], data=fields, verify=graphsim.ca_file,
                              allow_redirects=False, timeout=10)
    params = {k: v[0] for k, v in parse_qs(urlsplit(submitted.headers["Location"]).query).items()}
    assert params["error"] == "access_denied" and params["state"] == flow["state"]
    assert params["error_description"].startswith("AADSTS65004:")
    result = confidential_app.acquire_token_by_auth_code_flow(flow, params)
    assert result["error"] == "access_denied"


def test_refresh_rotates_the_refresh_token_and_the_old_one_keeps_working(graphsim, sim_user, sign_in: SignIn,
                                                                          confidential_app):
    first = sign_in(confidential_app, sim_user["userPrincipalName"])
    form = {"grant_type": "refresh_token", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
            "scope": "Mail.ReadWrite offline_access"}
    second = _token(graphsim, **form, refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    again = _token(graphsim, **form, refresh_token=first["refresh_token"])
    assert again.status_code == 200


def test_msal_silent_refresh_then_revocation_gives_invalid_grant(sim: ControlSession, sim_user, sign_in: SignIn,
                                                                 confidential_app):
    sign_in(confidential_app, sim_user["userPrincipalName"])
    account = confidential_app.get_accounts(username=sim_user["userPrincipalName"])[0]
    refreshed = confidential_app.acquire_token_silent_with_error(["Mail.ReadWrite"], account, force_refresh=True)
    assert refreshed and "access_token" in refreshed
    sim.post(f"/users/{sim_user['id']}/revoke").raise_for_status()
    revoked = confidential_app.acquire_token_silent_with_error(["Mail.ReadWrite"], account, force_refresh=True)
    assert revoked is not None and revoked["error"] == "invalid_grant"
    assert revoked["error_description"].startswith("AADSTS50173:")


def test_client_credentials_gives_an_app_only_graph_token(graphsim, confidential_app):
    result = confidential_app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    claims = _claims(result["access_token"])
    assert claims["idtyp"] == "app" and "Mail.Read" in claims["roles"] and "scp" not in claims


def test_a_wrong_client_secret_is_invalid_client(graphsim):
    response = _token(graphsim, grant_type="client_credentials", client_id=DEFAULT_CLIENT_ID,
                      client_secret="nope", scope="https://graph.microsoft.com/.default")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert re.match(r"AADSTS7000215: ", body["error_description"])


def test_an_unknown_client_is_refused(graphsim):
    response = _token(graphsim, grant_type="client_credentials", client_id="11111111-2222-3333-4444-555555555555",
                      client_secret="x", scope="https://graph.microsoft.com/.default")
    assert response.status_code == 400 and response.json()["error_codes"] == [700016]


def test_device_code_is_pending_until_the_user_enters_the_code(graphsim, sim: ControlSession, sim_user):
    sim.put("/settings", json={"deviceCodeIntervalSeconds": 1}).raise_for_status()
    app = msal.PublicClientApplication(DEFAULT_CLIENT_ID, authority=graphsim.authority("organizations"),
                                       instance_discovery=False, verify=graphsim.ca_file)
    flow = app.initiate_device_flow(scopes=["Mail.Read"])
    assert flow["user_code"] in flow["message"]
    pending = _token(graphsim, grant_type="urn:ietf:params:oauth:grant-type:device_code",
                     client_id=DEFAULT_CLIENT_ID, device_code=flow["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    page = requests.get(flow["verification_uri"], verify=graphsim.ca_file, timeout=10)
    assert page.status_code == 200 and 'name="code"' in page.text
    approved = requests.post(flow["verification_uri"], verify=graphsim.ca_file, timeout=10, data={
        "code": flow["user_code"], "login": sim_user["userPrincipalName"], "action": "accept"})
    assert approved.status_code == 200 and "signed in" in approved.text
    result = app.acquire_token_by_device_flow(flow)
    assert result["id_token_claims"]["oid"] == sim_user["id"]
    # a refresh token from a public client flow is refused when a client secret comes with it
    with_secret = _token(graphsim, grant_type="refresh_token", client_id=DEFAULT_CLIENT_ID,
                         client_secret=DEFAULT_CLIENT_SECRET, refresh_token=result["refresh_token"],
                         scope="Mail.Read offline_access")
    assert with_secret.status_code == 401 and with_secret.json()["error"] == "invalid_client"
    assert with_secret.json()["error_codes"] == [700025]
    public = _token(graphsim, grant_type="refresh_token", client_id=DEFAULT_CLIENT_ID,
                    refresh_token=result["refresh_token"], scope="Mail.Read offline_access")
    assert public.status_code == 200


@pytest.mark.parametrize("tenant", ["common", "organizations", DEFAULT_TENANT_ID])
def test_msal_accepts_every_authority_form(graphsim, tenant):
    app = msal.ConfidentialClientApplication(DEFAULT_CLIENT_ID, client_credential=DEFAULT_CLIENT_SECRET,
                                             authority=graphsim.authority(tenant), instance_discovery=False,
                                             verify=graphsim.ca_file)
    assert "access_token" in app.acquire_token_for_client(["https://graph.microsoft.com/.default"])


def test_a_registered_app_can_sign_users_in(graphsim, sim: ControlSession, sim_user, sign_in: SignIn):
    created = sim.post("/apps", json={"displayName": "other", "redirectUris": [DEFAULT_REDIRECT_URI]})
    assert created.status_code == 201
    app_info = created.json()
    assert app_info["clientId"] in [a["clientId"] for a in sim.get("/apps").json()["value"]]
    app = msal.ConfidentialClientApplication(app_info["clientId"], client_credential=app_info["clientSecret"],
                                             authority=graphsim.authority(), instance_discovery=False,
                                             verify=graphsim.ca_file)
    result = sign_in(app, sim_user["userPrincipalName"])
    assert _claims(result["access_token"])["appid"] == app_info["clientId"]


def test_a_desktop_app_redeems_its_code_without_a_secret_and_its_refresh_token_stays_public(graphsim, sim, sim_user):
    created = sim.post("/apps", json={"displayName": "desktop", "redirectUris": ["http://localhost"]}).json()
    app = msal.PublicClientApplication(created["clientId"], authority=graphsim.authority(), instance_discovery=False,
                                       verify=graphsim.ca_file)
    flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri="http://localhost:53117",
                                       login_hint=sim_user["userPrincipalName"])
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(flow["auth_uri"], graphsim.ca_file))
    assert result["id_token_claims"]["oid"] == sim_user["id"]
    with_secret = _token(graphsim, grant_type="refresh_token", client_id=created["clientId"],
                         client_secret=created["clientSecret"], refresh_token=result["refresh_token"],
                         scope="Mail.Read offline_access")
    assert with_secret.status_code == 401 and with_secret.json()["error_codes"] == [700025]


def test_a_web_app_must_present_its_secret_to_redeem_a_code(graphsim, sim_user):
    verifier = secrets.token_urlsafe(43)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code = _manual_code(graphsim, sim_user["userPrincipalName"], challenge)
    response = _token(graphsim, grant_type="authorization_code", client_id=DEFAULT_CLIENT_ID, code=code,
                      redirect_uri=DEFAULT_REDIRECT_URI, code_verifier=verifier)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert response.json()["error_codes"] == [7000218]

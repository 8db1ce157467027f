"""The Functions app: creates it and registers one blueprint per trigger family."""

import azure.functions as func
import azurefunctions.extensions.http.fastapi  # noqa: F401 - HTTP streams for every HTTP function (functions/http.py)

from functions import (
    accounts,
    auth,
    connect_sessions,
    files,
    health,
    mail_commands,
    messages,
    notifications,
    processing,
    renewal,
)

app = func.FunctionApp()
for blueprint in (
    health.bp, notifications.bp, processing.bp, auth.bp, accounts.bp, renewal.bp, connect_sessions.bp,
    messages.bp, mail_commands.bp, files.bp,
):
    app.register_functions(blueprint)

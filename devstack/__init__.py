"""Local stand-ins for the Azure and Microsoft services the connector talks to.

Each emulator speaks the real wire protocol, so the product's real SDK clients
(MSAL, azure-keyvault-secrets, azure-data-tables, requests) run against them unchanged.
"""

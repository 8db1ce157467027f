// Key Vault of the connector: one secret per connected account (its MSAL token cache, written
// by the app), plus the app registration's client secret and the clientState signing key,
// which the Function App reads through Key Vault references. Access is by Azure RBAC only.
param name string
param location string
param tags object = {}
param logAnalyticsWorkspaceId string

@secure()
@description('Client secret of the app registration; empty: the operator sets secret "microsoft-client-secret" (docs/deploy.md).')
param microsoftClientSecret string = ''

@secure()
@description('Key under which clientState values are signed.')
param clientStateKey string

@secure()
@description('The clientState key before the last rotation; empty: none.')
param clientStateKeyPrevious string = ''

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

var clientSecretName = 'microsoft-client-secret'
var clientStateKeyName = 'client-state-key'
var clientStateKeyPreviousName = 'client-state-key-previous'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109:The Flex Consumption app has no virtual network here and reaches the vault over its public endpoint, authenticated by Entra ID and authorised by RBAC; developers run the app locally against it after azd up.
    // checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: public endpoint, Entra ID and RBAC only.
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Created only when a value is given, so a later `azd provision` without it keeps the value
// the operator set in the vault.
resource clientSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(microsoftClientSecret)) {
  parent: vault
  name: clientSecretName
  properties: {
    // checkov:skip=CKV_AZURE_114:contentType is set below; checkov does not look inside a conditional (if) resource.
    // checkov:skip=CKV_AZURE_41:The client secret's lifetime is set on the app registration in Entra ID; rotating it means writing a new version here (docs/deploy.md).
    value: microsoftClientSecret
    contentType: 'text/plain'
  }
}

resource clientStateKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: clientStateKeyName
  properties: {
    // checkov:skip=CKV_AZURE_41:The clientState key signs the clientState of live Graph subscriptions; an expiry would silently break every notification, so it is rotated deliberately (docs/deploy.md).
    value: clientStateKey
    contentType: 'text/plain'
  }
}

// Only during a rotation (README "Rotating secrets").
resource clientStateKeyPreviousSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(clientStateKeyPrevious)) {
  parent: vault
  name: clientStateKeyPreviousName
  properties: {
    // checkov:skip=CKV_AZURE_114:contentType is set below; checkov does not look inside a conditional (if) resource.
    // checkov:skip=CKV_AZURE_41:Kept only while subscriptions signed with it live; removed by the operator when the rotation is done.
    value: clientStateKeyPrevious
    contentType: 'text/plain'
  }
}

// Audit trail of every secret read and write (token caches included).
resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
// Versionless: the Function App picks up a new version of the secret by itself.
output clientSecretUri string = '${vault.properties.vaultUri}secrets/${clientSecretName}'
output clientStateKeyUri string = '${vault.properties.vaultUri}secrets/${clientStateKeyName}'
output clientStateKeyPreviousUri string = '${vault.properties.vaultUri}secrets/${clientStateKeyPreviousName}'

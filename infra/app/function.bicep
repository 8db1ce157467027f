// The Function App on the Flex Consumption plan, with its app settings.
//
// One HTTP instance is always ready: Graph validates a new subscription by calling the
// notification URL and gives up after 10 s, and it expects a change notification answered
// within 3 s (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks), so
// the HTTP functions never wait for a cold start.
param name string
param planName string
param location string
param tags object = {}
param serviceName string = 'api'
param identityId string
param identityClientId string
param storageAccountName string
param storageBlobEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string

@minValue(1)
param httpAlwaysReadyInstances int = 1
param maximumInstanceCount int = 100
param instanceMemoryMB int = 2048

@description('Spread instances over availability zones (only in regions where Flex Consumption offers them).')
param zoneRedundant bool = false

@description('The product settings (names of shared/config.py), merged with the platform settings below.')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Availability zones on Flex Consumption exist in some regions only; set zoneRedundant (with a ZRS storage account) where the region offers them.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222:Microsoft Graph and the users' browsers must reach the webhook and the OAuth callback over the internet.
    // checkov:skip=CKV_AZURE_17:Graph does not present client certificates when it delivers notifications.
    // checkov:skip=CKV_AZURE_212:Instance count is not a site setting on Flex Consumption; functionAppConfig.scaleAndConcurrency.alwaysReady keeps the HTTP instances warm.
    // checkov:skip=CKV_AZURE_213:Flex Consumption replaces unhealthy instances itself; GET /api/health is there for an external availability test.
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    // The Key Vault references of the app settings resolve with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: [
          {
            name: 'http'
            instanceCount: httpAlwaysReadyInstances
          }
        ]
      }
      // Flex Consumption takes the worker runtime from here; it rejects the
      // FUNCTIONS_WORKER_RUNTIME app setting.
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Platform settings: storage and telemetry by identity, and the app's public URL.
// checkov reads every sites/config resource as web configuration; this one holds app settings.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  // checkov:skip=CKV_AZURE_13:Not web configuration: app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  // checkov:skip=CKV_AZURE_63:Not web configuration: app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  // checkov:skip=CKV_AZURE_65:Not web configuration: app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  // checkov:skip=CKV_AZURE_66:Not web configuration: app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_80:Not web configuration (and no .NET here): app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  // checkov:skip=CKV_AZURE_88:Not web configuration (Flex Consumption has no Azure Files content share): app settings only (config 'appsettings'); the check reads it as the site's web configuration, which the site resource above carries.
  // checkov:skip=CKV_AZURE_222:Not web configuration; the site must be public anyway for Graph (see the site resource).
  properties: union(appSettings, {
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // DefaultAzureCredential of the Key Vault, Table and Queue adapters picks this identity.
    AZURE_CLIENT_ID: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // HTTP streams (functions/http.py): the Python worker starts its web server only with init
    // indexing (https://learn.microsoft.com/azure/azure-functions/functions-reference-python#http-streams).
    PYTHON_ENABLE_INIT_INDEXING: '1'
    PUBLIC_BASE_URL: 'https://${site.properties.defaultHostName}'
  })
}

output id string = site.id
output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'

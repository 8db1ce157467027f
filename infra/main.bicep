// Azure infrastructure of the push-based Microsoft 365 mail connector, provisioned by `azd up`.
//
// One resource group holding: a Function App on the Flex Consumption plan (always-ready HTTP
// instance, so a cold start never misses Graph's 10 s validation handshake), the storage
// account of its queues and tables (reached by managed identity only), a Key Vault with RBAC
// authorisation for the token caches and the two app secrets, and Application Insights.
//
// Every setting the code reads (shared/config.py SETTING_DEFAULTS) is set here under the same
// name; tests/infra keeps the two in step.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or service principal: granted the data roles needed to run the app locally against the cloud resources. Empty: no grant.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal behind principalId.')
param principalType string = 'User'

@minLength(1)
@description('Application (client) id of the Entra ID app registration (MICROSOFT_CLIENT_ID): `azd env set MICROSOFT_CLIENT_ID <id>`.')
param microsoftClientId string

@secure()
@description('Client secret of the app registration. Written to Key Vault as secret "microsoft-client-secret" when given; when empty the operator sets that secret (docs/deploy.md).')
param microsoftClientSecret string = ''

@secure()
@minLength(32)
@description('Key under which clientState values are signed; generated once by azd and kept in the azd environment, so a re-provision does not invalidate live subscriptions.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param clientStateKey string

@secure()
@description('The clientState key before the last rotation (CLIENT_STATE_KEY_PREVIOUS): notifications of subscriptions signed with it are still accepted. Empty: none.')
param clientStateKeyPrevious string = ''

@description('Entra tenant that may sign in (MICROSOFT_TENANT_ID): common, organizations, consumers or a tenant id.')
param microsoftTenantId string = 'common'

@description('MICROSOFT_AUTHORITY_HOST')
param microsoftAuthorityHost string = 'https://login.microsoftonline.com'

@description('GRAPH_API_ENDPOINT')
param graphApiEndpoint string = 'https://graph.microsoft.com/v1.0'

@description('NCRONTAB schedule of the subscription renewal timer (RENEWAL_SCHEDULE).')
param renewalSchedule string = '0 */15 * * * *'

@description('Subscriptions expiring within this many minutes are renewed (RENEWAL_WINDOW_MINUTES).')
param renewalWindowMinutes string = '1440'

@description('Mailboxes without a notification for this many minutes, and every drive this often, get a catch-up delta sync (CATCHUP_AFTER_MINUTES).')
param catchupAfterMinutes string = '360'

@description('Subscriptions renewed in parallel by one renewal run (RENEWAL_CONCURRENCY).')
param renewalConcurrency string = '32'

@description('Seconds a renewal run may work before it leaves the rest to the next run (RENEWAL_TIME_BUDGET_SECONDS).')
param renewalTimeBudgetSeconds string = '420'

@description('Accounts swept per renewal run for subscriptions Graph dropped (RENEWAL_SWEEP_ACCOUNTS).')
param renewalSweepAccounts string = '5000'

@description('Seconds one invocation walks a mailbox before the rest of its delta round goes to the next one (SYNC_TIME_BUDGET_SECONDS).')
param syncTimeBudgetSeconds string = '120'

@description('Delegated Graph scopes requested at connect time (GRAPH_SCOPES).')
param graphScopes string = 'User.Read Mail.Read'

@allowed([
  'true'
  'false'
])
@description('MAIL_ACTIONS_ENABLED: lets the app move and delete messages (needs Mail.ReadWrite).')
param mailActionsEnabled string = 'false'

@description('Where the browser goes after a successful connect (POST_CONNECT_REDIRECT_URL); empty: a success page.')
param postConnectRedirectUrl string = ''

@allowed([
  'true'
  'false'
])
@description('EMIT_HISTORY_ON_CONNECT: publish events for the mail already in the inbox when an account connects.')
param emitHistoryOnConnect string = 'false'

@description('ALLOWED_RETURN_ORIGINS: comma-separated origins (https://app.example.com) a connect session may send the browser back to; empty: none.')
param allowedReturnOrigins string = ''

@description('CONNECT_SESSION_MINUTES: how long a connect session can be opened after the product created it.')
param connectSessionMinutes string = '30'

@description('ALLOW_ANONYMOUS_CONNECT: serve /api/connect without a connect session (anyone could attach a mailbox).')
@allowed([
  'true'
  'false'
])
param allowAnonymousConnect string = 'false'

@description('ALLOWED_TENANT_IDS: comma-separated Entra tenant ids whose users may connect; empty: any.')
param allowedTenantIds string = ''
@description('MAX_ATTACHMENT_BYTES: the largest attachment the mail actions hand out (bytes); larger ones get 413.')
param maxAttachmentBytes string = '26214400'
@description('MAIL_FOLDERS: the well-known folders whose mail becomes events, comma-separated, or * for every folder.')
param mailFolders string = 'inbox'
@description('EVENT_BODY: put the body in mail events: none, text or html.')
@allowed([
  'none'
  'text'
  'html'
])
param eventBody string = 'none'
@description('EVENT_BODY_MAX_BYTES: the most UTF-8 bytes of body an event carries; longer bodies are cut (bodyTruncated).')
param eventBodyMaxBytes string = '65536'

@description('Always-ready instances of the HTTP functions. At least 1: Graph gives the validation handshake 10 s.')
@minValue(1)
param httpAlwaysReadyInstances int = 1

@description('Upper bound of Flex Consumption scale-out.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@allowed([
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@description('Object id of an identity that consumes the mail-events queue (optional): granted Storage Queue Data Message Processor on that queue only.')
param eventConsumerPrincipalId string = ''

var tags = {
  'azd-env-name': environmentName
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    microsoftClientSecret: microsoftClientSecret
    clientStateKey: clientStateKey
    clientStateKeyPrevious: clientStateKeyPrevious
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    eventConsumerPrincipalId: eventConsumerPrincipalId
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    httpAlwaysReadyInstances: httpAlwaysReadyInstances
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    // The product's settings, named as in shared/config.py. AzureWebJobsStorage,
    // PUBLIC_BASE_URL and FUNCTIONS_WORKER_RUNTIME are set inside function.bicep, where the
    // identity, the app's host name and the Flex runtime are known.
    appSettings: {
      MICROSOFT_CLIENT_ID: microsoftClientId
      MICROSOFT_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clientSecretUri})'
      MICROSOFT_TENANT_ID: microsoftTenantId
      MICROSOFT_AUTHORITY_HOST: microsoftAuthorityHost
      GRAPH_API_ENDPOINT: graphApiEndpoint
      KEY_VAULT_URL: keyVault.outputs.uri
      CLIENT_STATE_KEY: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clientStateKeyUri})'
      CLIENT_STATE_KEY_PREVIOUS: empty(clientStateKeyPrevious) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clientStateKeyPreviousUri})'
      RENEWAL_SCHEDULE: renewalSchedule
      RENEWAL_WINDOW_MINUTES: renewalWindowMinutes
      CATCHUP_AFTER_MINUTES: catchupAfterMinutes
      RENEWAL_CONCURRENCY: renewalConcurrency
      RENEWAL_TIME_BUDGET_SECONDS: renewalTimeBudgetSeconds
      RENEWAL_SWEEP_ACCOUNTS: renewalSweepAccounts
      GRAPH_SCOPES: graphScopes
      MAIL_ACTIONS_ENABLED: mailActionsEnabled
      POST_CONNECT_REDIRECT_URL: postConnectRedirectUrl
      EMIT_HISTORY_ON_CONNECT: emitHistoryOnConnect
      ALLOWED_RETURN_ORIGINS: allowedReturnOrigins
      CONNECT_SESSION_MINUTES: connectSessionMinutes
      ALLOW_ANONYMOUS_CONNECT: allowAnonymousConnect
      ALLOWED_TENANT_IDS: allowedTenantIds
      SYNC_TIME_BUDGET_SECONDS: syncTimeBudgetSeconds
      MAX_ATTACHMENT_BYTES: maxAttachmentBytes
      MAIL_FOLDERS: mailFolders
      EVENT_BODY: eventBody
      EVENT_BODY_MAX_BYTES: eventBodyMaxBytes
    }
  }
  // The app must not start before its identity may read the secrets and the storage.
  dependsOn: [
    rbac
  ]
}

// Read by azd into .azure/<env>/.env (azd env get-values).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output PUBLIC_BASE_URL string = functionApp.outputs.url
output REDIRECT_URI string = '${functionApp.outputs.url}/api/auth/callback'
output KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output MAIL_EVENT_QUEUE string = storage.outputs.mailEventQueueName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName

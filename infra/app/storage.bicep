// Storage account of the connector: the Functions host (blobs for leases and the deployment
// package), the notification and event queues, and the state tables. Shared keys are off:
// every caller, the app included, authenticates with Entra ID (rbac.bicep).
param name string
param location string
param tags object = {}
param deploymentContainerName string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_ZRS'

// The queues and tables the code names (shared/config.py, shared/ledger.py,
// shared/adapters/tables.py, shared/adapters/sessions.py); the code would create them on first use, but a deployment that
// shows them up front is easier to operate and to grant roles on.
var queueNames = [
  'graph-notifications'
  'graph-notifications-poison'
  'mail-events'
  'drive-events'
  'account-events'
  'mail-sync'
  'mail-sync-poison'
  'mail-commands'
  'mail-command-results'
]
var tableNames = [
  'accounts'
  'subscriptions'
  'authflows'
  'subscriptionexpiry'
  'mailledger'
  'checkpoints'
  'connectsessions'
  'accountowners'
  'mailcommands'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_206:Zone-redundant (ZRS) by default. The app runs in one region; a geo-secondary of its queues and tables would only serve after a failover of the whole deployment, so geo-replication is a parameter (skuName), not the default.
    // checkov:skip=CKV_AZURE_35:The Flex Consumption app has no virtual network here and reaches storage over its public endpoint, authenticated by Entra ID only (shared keys disabled); developers run the app locally against it after azd up.
    // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: public endpoint, Entra ID authentication only.
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption reads the app package from this container with the app's identity.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output mailEventQueueName string = 'mail-events'

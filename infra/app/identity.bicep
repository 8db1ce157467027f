// User-assigned managed identity of the Function App. Its roles are granted before the app
// exists (rbac.bicep), so the first start already reaches storage and Key Vault.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId

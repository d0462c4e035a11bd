// Gets a Microsoft Graph token with the real @azure/identity package, exactly
// as an unmodified Node.js application would.
//
// Usage: node get_token.mjs CASE [VALUE]
//
//   managed-identity      new ManagedIdentityCredential()
//   client-id VALUE       new ManagedIdentityCredential({ clientId: VALUE })
//   resource-id VALUE     new ManagedIdentityCredential({ resourceId: VALUE })
//   object-id VALUE       new ManagedIdentityCredential({ objectId: VALUE })
//   default               new DefaultAzureCredential()
//
// then getToken("https://graph.microsoft.com/.default"). The App Service
// source is selected by IDENTITY_ENDPOINT and IDENTITY_HEADER in the
// environment (the test sets them to the broker; for `default` it may also
// set AZURE_TOKEN_CREDENTIALS or AZURE_CLIENT_ID). The test copies this file
// next to its node_modules (target/azure-sdk-js), so the import below
// resolves as in any application.
//
// Prints one JSON line: {"case", "token", "expires_on", "refresh_after"}
// (seconds since the epoch) on success (exit 0), or {"case", "error": <error
// name>, "message": <error message>} on failure (exit 3).

import { DefaultAzureCredential, ManagedIdentityCredential } from "@azure/identity";

const SCOPE = "https://graph.microsoft.com/.default";

function credential(name, value) {
  switch (name) {
    case "managed-identity":
      return new ManagedIdentityCredential();
    case "client-id":
      return new ManagedIdentityCredential({ clientId: value });
    case "resource-id":
      return new ManagedIdentityCredential({ resourceId: value });
    case "object-id":
      return new ManagedIdentityCredential({ objectId: value });
    case "default":
      return new DefaultAzureCredential();
    default:
      throw new Error(`unknown case ${JSON.stringify(name)}`);
  }
}

const seconds = (ms) => (ms === undefined ? null : Math.floor(ms / 1000));

const [name, value] = process.argv.slice(2);
try {
  const token = await credential(name, value).getToken(SCOPE);
  console.log(
    JSON.stringify({
      case: name,
      token: token.token,
      expires_on: seconds(token.expiresOnTimestamp),
      refresh_after: seconds(token.refreshAfterTimestamp),
    }),
  );
  process.exitCode = 0;
} catch (e) {
  console.log(JSON.stringify({ case: name, error: e?.name, message: String(e?.message ?? e) }));
  process.exitCode = 3;
}

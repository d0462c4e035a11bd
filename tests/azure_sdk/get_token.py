"""Gets a Microsoft Graph token with the real azure-identity package, exactly
as an unmodified application would.

Usage: get_token.py CASE

  mi                        ManagedIdentityCredential()
  client_id=X               ManagedIdentityCredential(client_id=X)
  object_id=X               ManagedIdentityCredential(identity_config={"object_id": X})
  mi_res_id=X               ManagedIdentityCredential(identity_config={"resource_id": X})
                            (the documented key; on App Service msal sends it
                            as the mi_res_id parameter)
  identity_config:KEY=X     ManagedIdentityCredential(identity_config={KEY: X}),
                            any key, e.g. the App Service parameter name mi_res_id
  default                   DefaultAzureCredential()
  async_<any of the above>  the same with azure.identity.aio (aiohttp transport)

then get_token("https://graph.microsoft.com/.default"). The App Service
source is selected by IDENTITY_ENDPOINT and IDENTITY_HEADER in the
environment (the test sets them to the broker; for `default` it may also set
AZURE_CLIENT_ID or AZURE_TOKEN_CREDENTIALS).

Prints one JSON line: {"case", "token", "expires_on"} on success (exit 0), or
{"case", "error": <exception type>, "message": <str(exception)>} on failure
(exit 3).
"""

import asyncio
import json
import sys

SCOPE = "https://graph.microsoft.com/.default"


def credential(module, case: str):
    """The credential `case` names, from `module` (azure.identity or its aio)."""
    name, _, value = case.partition("=")
    if name == "mi":
        return module.ManagedIdentityCredential()
    if name == "client_id":
        return module.ManagedIdentityCredential(client_id=value)
    if name == "object_id":
        return module.ManagedIdentityCredential(identity_config={"object_id": value})
    if name == "mi_res_id":
        return module.ManagedIdentityCredential(identity_config={"resource_id": value})
    if name.startswith("identity_config:"):
        key = name.removeprefix("identity_config:")
        return module.ManagedIdentityCredential(identity_config={key: value})
    if name == "default":
        return module.DefaultAzureCredential()
    raise ValueError(f"unknown case {case!r}")


def get_token(case: str):
    import azure.identity

    with credential(azure.identity, case) as cred:
        return cred.get_token(SCOPE)


async def get_token_async(case: str):
    import azure.identity.aio

    async with credential(azure.identity.aio, case) as cred:
        return await cred.get_token(SCOPE)


def main() -> int:
    case = sys.argv[1] if len(sys.argv) > 1 else "mi"
    try:
        if case.startswith("async_"):
            token = asyncio.run(get_token_async(case.removeprefix("async_")))
        else:
            token = get_token(case)
    except Exception as e:  # noqa: BLE001 - report whatever the SDK raised
        print(json.dumps({"case": case, "error": type(e).__name__, "message": str(e)}))
        return 3
    print(json.dumps({"case": case, "token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gets a Microsoft Graph token with the real azure-identity
ManagedIdentityCredential, exactly as an unmodified application would.

Usage: get_token.py [CLIENT_ID]

The App Service source is selected by IDENTITY_ENDPOINT and IDENTITY_HEADER
in the environment (the test sets them to the broker). Prints one JSON line:
{"token": ..., "expires_on": ...} on success (exit 0), or
{"error": <exception type>, "message": <str(exception)>} on failure (exit 3).
"""

import json
import sys

SCOPE = "https://graph.microsoft.com/.default"


def main() -> int:
    from azure.identity import ManagedIdentityCredential

    client_id = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
    try:
        if client_id is None:
            credential = ManagedIdentityCredential()
        else:
            credential = ManagedIdentityCredential(client_id=client_id)
        token = credential.get_token(SCOPE)
    except Exception as e:  # noqa: BLE001 - report whatever the SDK raised
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 3
    print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

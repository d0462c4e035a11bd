"""The real msgraph-sdk (Microsoft Graph SDK for Python), unmodified, through
tokenbroker's Graph gateway. Run by tests/suite/graph_sdk.rs.

What an application needs (the README quotes this): an authentication
provider that sends the account's secret, and the gateway as base URL.

    import os

    from kiota_abstractions.authentication import AuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient

    class TokenbrokerSecret(AuthenticationProvider):
        # The gateway puts the tenant's Graph token in; the caller only
        # proves which account it is. (The SDK's own token providers
        # refuse http:// and hosts other than Graph's.)
        def __init__(self, secret):
            self.secret = secret

        async def authenticate_request(self, request, additional_authentication_context=None):
            request.headers.try_add("Authorization", f"Bearer {self.secret}")

    # GraphRequestAdapter keeps the SDK's default middleware (retry,
    # redirect, telemetry, ...); only the base URL changes.
    adapter = GraphRequestAdapter(TokenbrokerSecret(os.environ["TOKENBROKER_SECRET"]))
    adapter.base_url = "http://localhost:8080/graph/contoso/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

Usage: mail.py list|send|denied, with TOKENBROKER_SECRET and
TOKENBROKER_GRAPH_URL (the base URL) set. Prints one JSON line.
"""

import asyncio
import json
import os
import sys

from kiota_abstractions.authentication import AuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)
from msgraph_core.tasks.page_iterator import PageIterator


class TokenbrokerSecret(AuthenticationProvider):
    def __init__(self, secret):
        self.secret = secret

    async def authenticate_request(self, request, additional_authentication_context=None):
        request.headers.try_add("Authorization", f"Bearer {self.secret}")


def client():
    # GraphRequestAdapter builds its httpx client with the SDK's own
    # GraphClientFactory: retry, redirect, telemetry etc. stay in.
    adapter = GraphRequestAdapter(TokenbrokerSecret(os.environ["TOKENBROKER_SECRET"]))
    adapter.base_url = os.environ["TOKENBROKER_GRAPH_URL"]
    return GraphServiceClient(request_adapter=adapter)


def top(n):
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=n)
    return RequestConfiguration(query_parameters=query)


async def list_messages(graph, mailbox):
    first = await graph.users.by_user_id(mailbox).messages.get(request_configuration=top(10))
    iterator = PageIterator(first, graph.request_adapter)
    count = 0
    pages = []

    def each(_message):
        nonlocal count
        count += 1
        # Each page the iterator fetches (from the nextLink) is a new object.
        if not pages or pages[-1] is not iterator.current_page:
            pages.append(iterator.current_page)
        return True

    await iterator.iterate(each)
    return {"count": count, "pages": len(pages)}


async def main(action):
    graph = client()
    if action == "list":
        result = await list_messages(graph, "alice@contoso.com")
    elif action == "send":
        body = SendMailPostRequestBody(
            message=Message(
                subject="through the gateway",
                body=ItemBody(content_type=BodyType.Text, content="sent by msgraph-sdk"),
                to_recipients=[Recipient(email_address=EmailAddress(address="x@example.com"))],
            ),
            save_to_sent_items=False,
        )
        await graph.users.by_user_id("noreply@contoso.com").send_mail.post(body)
        result = {"ok": True}
    elif action == "denied":
        try:
            await graph.users.by_user_id("bob@contoso.com").messages.get()
            result = {"status": None, "error": "no ODataError"}
        except ODataError as e:
            result = {
                "status": e.response_status_code,
                "code": e.error.code if e.error else None,
                "message": e.error.message if e.error else None,
            }
    else:
        sys.exit(f"unknown action {action!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

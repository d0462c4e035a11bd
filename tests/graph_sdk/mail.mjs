// The real @microsoft/microsoft-graph-client (3.x), unmodified, through
// tokenbroker's Graph gateway. Run by tests/suite/graph_sdk_js.rs.
//
// What an application needs (the README quotes this): the SDK's own
// middleware chain with its AuthenticationHandler replaced by one that
// sends the account's secret, and the gateway as base URL.
//
//   import { Client, MiddlewareFactory } from "@microsoft/microsoft-graph-client";
//
//   const baseUrl = "http://localhost:8080/graph/contoso";
//
//   class TokenbrokerSecret {
//     constructor(secret) { this.secret = secret; }
//     async execute(context) {
//       // 3.x parses only https:// URLs as absolute: an http:// nextLink
//       // (PageIterator, client.api(nextLink)) arrives appended to the base.
//       const prefix = `${baseUrl}/v1.0/`;
//       if (context.request.startsWith(`${prefix}http://`)) {
//         context.request = context.request.slice(prefix.length);
//       }
//       // The SDK's AuthenticationHandler sends tokens to https:// Graph
//       // hosts only; the gateway wants the account's secret instead.
//       context.options.headers = { ...context.options.headers, Authorization: `Bearer ${this.secret}` };
//       return this.next.execute(context);
//     }
//     setNext(next) { this.next = next; }
//   }
//
//   // The SDK's chain: AuthenticationHandler, RetryHandler, RedirectHandler,
//   // TelemetryHandler, HTTPMessageHandler (global fetch: Node 18+).
//   const [, ...sdkMiddleware] = MiddlewareFactory.getDefaultMiddlewareChain();
//   const client = Client.initWithMiddleware({
//     baseUrl,
//     middleware: [new TokenbrokerSecret(process.env.TOKENBROKER_SECRET), ...sdkMiddleware],
//   });
//
// Usage: node mail.mjs list|send|denied, with TOKENBROKER_SECRET and
// TOKENBROKER_GRAPH_URL (the gateway's base URL, /v1.0 included) set.
// Prints one JSON line.

import { Client, GraphError, MiddlewareFactory, PageIterator } from "@microsoft/microsoft-graph-client";

const url = process.env.TOKENBROKER_GRAPH_URL;
const baseUrl = url.slice(0, url.lastIndexOf("/"));
let requests = 0;

class TokenbrokerSecret {
  constructor(secret) {
    this.secret = secret;
  }
  async execute(context) {
    requests += 1;
    const prefix = `${baseUrl}/v1.0/`;
    if (context.request.startsWith(`${prefix}http://`)) {
      context.request = context.request.slice(prefix.length);
    }
    context.options.headers = { ...context.options.headers, Authorization: `Bearer ${this.secret}` };
    return this.next.execute(context);
  }
  setNext(next) {
    this.next = next;
  }
}

const [, ...sdkMiddleware] = MiddlewareFactory.getDefaultMiddlewareChain();
const client = Client.initWithMiddleware({
  baseUrl,
  middleware: [new TokenbrokerSecret(process.env.TOKENBROKER_SECRET), ...sdkMiddleware],
});

const action = process.argv[2];
let result;
if (action === "list") {
  const first = await client.api("/users/alice@contoso.com/messages").top(10).get();
  let count = 0;
  const iterator = new PageIterator(client, first, () => {
    count += 1;
    return true;
  });
  await iterator.iterate();
  // Retries happen after this program's middleware: one request a page.
  result = { count, pages: requests };
} else if (action === "send") {
  await client.api("/users/noreply@contoso.com/sendMail").post({
    message: {
      subject: "through the gateway",
      body: { contentType: "Text", content: "sent by @microsoft/microsoft-graph-client" },
      toRecipients: [{ emailAddress: { address: "x@example.com" } }],
    },
    saveToSentItems: false,
  });
  result = { ok: true };
} else if (action === "denied") {
  try {
    await client.api("/users/bob@contoso.com/messages").get();
    result = { status: null, error: "no GraphError" };
  } catch (e) {
    if (!(e instanceof GraphError)) throw e;
    result = { status: e.statusCode, code: e.code, message: e.message };
  }
} else {
  throw new Error(`unknown action ${action}`);
}
console.log(JSON.stringify(result));

//! `/graph/{tenant}/{version}/{path}`: the Graph gateway's HTTP side. In
//! order: Host and caller as on `/v1/token`; the path normalised and the
//! account's rules asked (every `$batch` sub-request too), looking a mailbox
//! up in the directory when a rule lists its other form; then the tenant's
//! token from the broker's one door, the request forwarded with bodies
//! streaming both ways, and the answer's links to Graph rewritten. Nothing
//! goes upstream before the rules allowed it.

use super::access::{authenticate, hosts_allowed, Access};
use super::budget::Conn;
use super::respond::{graph_error, whole, Answer, BoxError, Failure};
use super::{App, Peer};
use crate::broker::{Caller, GatewayTarget, TokenError};
use crate::config::AppKey;
use crate::gateway::batch;
use crate::gateway::forward::{self, VERSIONS};
use crate::gateway::links::Links;
use crate::gateway::path::GraphPath;
use crate::gateway::rules::{self, DirectoryEntry, Verdict};
use crate::gateway::upstream::{self, UpstreamError};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

/// Request bodies up to this size are held, so a request Graph refused for
/// an invalid token can be sent again with a fresh one.
pub const RETRY_BODY_BYTES: u64 = 1024 * 1024;

/// Longest query string forwarded (Graph's `$filter`s can be long).
const MAX_QUERY_BYTES: usize = 8192;

/// Directory lookups one request may need (one per `{mailbox}`).
const MAX_LOOKUPS: usize = 4;

/// A refusal, and its `graph_denied_total` reason when it was one.
struct Refused {
    failure: Failure,
    denied: Option<&'static str>,
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Refused {
        Refused {
            failure,
            denied: None,
        }
    }
}

fn bad_request(message: impl Into<String>) -> Refused {
    Refused {
        failure: Failure::new(400, "bad_request", message),
        denied: Some("bad_request"),
    }
}

/// The request header that picks the app (the account's first without it).
const APP_HEADER: &str = "x-tokenbroker-app";

/// What the route names: `{tenant}` as written, `{version}`, the path.
struct Named<'a> {
    tenant: &'a str,
    version: &'static str,
    path: GraphPath,
    query: Option<&'a str>,
}

/// Splits `/graph/{tenant}/{version}/{path}` (the path normalised).
fn named<'a>(path: &'a str, query: Option<&'a str>) -> Result<Named<'a>, Refused> {
    let rest = path.strip_prefix("/graph/").unwrap_or_default();
    let mut parts = rest.splitn(3, '/');
    let tenant = parts.next().filter(|t| !t.is_empty());
    let version = parts.next();
    let (Some(tenant), Some(version), Some(graph_path)) = (tenant, version, parts.next()) else {
        return Err(bad_request(
            "the route is /graph/{tenant}/{v1.0|beta}/{path}, e.g. /graph/contoso/v1.0/users/alice@contoso.com/messages",
        ));
    };
    let Some(version) = VERSIONS.into_iter().find(|v| *v == version) else {
        return Err(bad_request(format!(
            "the Graph version must be {}",
            VERSIONS.join(" or ")
        )));
    };
    // `/{graph_path}`: the route's own bytes from the `/` before it.
    let slash = path.len().saturating_sub(graph_path.len() + 1);
    let path = GraphPath::parse(path.get(slash..).unwrap_or_default())
        .map_err(|e| bad_request(e.to_string()))?;
    if query.is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return Err(bad_request(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    Ok(Named {
        tenant,
        version,
        path,
        query,
    })
}

/// Answers a gateway request.
pub(super) async fn answer<B>(
    app: &App,
    peer: Peer,
    conn: &Conn,
    req: Request<B>,
    access: &mut Access,
) -> Answer
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let mut account = None;
    let answer = match forward(app, peer, conn, req, access, &mut account).await {
        Ok(answer) => answer,
        Err(refused) => {
            if let (Some(reason), Some(account)) = (refused.denied, account.as_deref()) {
                app.metrics.graph_denied(account, reason);
            }
            let mut answer = graph_error(&refused.failure);
            if answer.status() == StatusCode::UNAUTHORIZED {
                answer.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tokenbroker\""),
                );
            }
            answer
        }
    };
    app.metrics.graph_request(
        account.as_deref().unwrap_or("unauthenticated"),
        &method,
        answer.status().as_u16(),
        started.elapsed(),
    );
    answer
}

async fn forward<B>(
    app: &App,
    peer: Peer,
    conn: &Conn,
    req: Request<B>,
    access: &mut Access,
    account: &mut Option<String>,
) -> Result<Answer, Refused>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    hosts_allowed(app, &req, peer).map_err(|failure| {
        if failure.status == 421 {
            access.refused(app, "bad_host");
        }
        Refused::from(failure)
    })?;
    let caller = authenticate(app, peer, conn, &req, false, access)?;
    *account = Some(caller.account_name().to_owned());
    if access.enabled {
        access.method = Some(req.method().as_str().to_owned());
    }

    // What is asked, normalised and judged before anything goes upstream.
    let uri = req.uri().clone();
    let named = named(uri.path(), uri.query())?;
    if access.enabled {
        access.path = Some(named.path.encoded().to_owned());
    }
    // The app: `X-Tokenbroker-App` (kept back from Graph), else the
    // account's first.
    let app_name = match req.headers().get(APP_HEADER) {
        Some(value) => Some(value.to_str().map_err(|_| {
            Refused::from(Failure::new(
                400,
                "bad_request",
                "X-Tokenbroker-App is not an app name",
            ))
        })?),
        None => None,
    };
    let target = app
        .broker
        .gateway_target(&caller, named.tenant, app_name)
        .map_err(|e| denied_by(app, &e))?;
    let tenant = &target.tenant;
    if access.enabled {
        access.tenant = Some(
            tenant
                .name
                .as_ref()
                .map_or(tenant.id.as_str(), |n| n.as_str())
                .to_owned(),
        );
    }
    // One snapshot of the configuration for the whole request.
    // The caller's snapshot: the one its app was chosen from.
    let settings = caller.with_config(|config| Settings::of(config, &target.app));
    let limits = &settings.limits;
    let max_request = usize::try_from(limits.max_request_bytes).unwrap_or(usize::MAX);
    let max_rewrite = usize::try_from(limits.max_rewrite_bytes).unwrap_or(usize::MAX);
    if let Some(length) = content_length(&req) {
        if length > limits.max_request_bytes {
            return Err(too_large(limits.max_request_bytes));
        }
    }
    let method = req.method().clone();
    let is_batch = batch::is_batch(&named.path) && method == hyper::Method::POST;

    // The body: held when small (a retry may need it) or a $batch (its
    // sub-requests are judged first); otherwise streamed, bounded.
    let (parts, body) = req.into_parts();
    let hold = is_batch
        || hyper::body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n <= RETRY_BODY_BYTES);
    let mut held = None;
    let mut streamed = None;
    let mut overflow = upstream::Overflow::default();
    if hold {
        let limit = if is_batch {
            batch::MAX_BODY_BYTES.min(max_request)
        } else {
            max_request
        };
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large(limit as u64)
                } else {
                    Refused::from(Failure::new(
                        400,
                        "bad_request",
                        "the request body broke off",
                    ))
                }
            })?
            .to_bytes();
        held = Some(bytes);
    } else {
        let (body, cut) = upstream::bounded(body, max_request);
        streamed = Some(body);
        overflow = cut;
    }

    // The rules, for the request or each of its sub-requests ($batch
    // itself is open to any account with rules; what it runs is not).
    let rules = caller.graph_rules();
    let (caller, target) = (&caller, &target);
    match (&held, is_batch) {
        (Some(bytes), true) => {
            let (subs, forwarded) =
                batch::canonical(bytes).map_err(|e| bad_request(e.to_string()))?;
            held = Some(Bytes::from(forwarded));
            for sub in &subs {
                let (id, method) = (Some(sub.id.as_str()), sub.method.as_str());
                judge(app, caller, target, rules, &settings, id, method, &sub.path).await?;
            }
        }
        // A $batch body is always held (above); were it not, its
        // sub-requests could not be judged, so it goes nowhere.
        (None, true) => {
            return Err(Refused::from(Failure::new(
                500,
                "internal",
                "a $batch body was not held for judging",
            )))
        }
        _ => {
            let method = method.as_str();
            judge(
                app,
                caller,
                target,
                rules,
                &settings,
                None,
                method,
                &named.path,
            )
            .await?;
        }
    }

    // Forwarded with the tenant's token: once, and once more with a fresh
    // token if Graph says it is invalid and the body can be sent again.
    let url = forward::upstream_url(settings.upstream(), named.version, &named.path, named.query);
    let mut rejected = None;
    let response = loop {
        let issued = app
            .broker
            .graph_token(caller, target.clone(), rejected.as_ref())
            .await
            .map_err(|e| Refused::from(Failure::from(&e)))?;
        let token = &issued.grant.token.access_token;
        let bearer = bearer(token)?;
        let mut headers = forward::request_headers(&parts.headers, bearer);
        let body = match (&held, streamed.take()) {
            (Some(bytes), _) => upstream::held(bytes.clone()),
            (None, Some(body)) => {
                if let Some(length) = parts.headers.get(CONTENT_LENGTH) {
                    headers.insert(CONTENT_LENGTH, length.clone());
                }
                body
            }
            (None, None) => upstream::held(Bytes::new()),
        };
        let response = app
            .graph
            .for_ca_file(settings.ca_file.as_deref())
            .send(parts.method.clone(), &url, headers, body, limits.timeout.0)
            .await
            .map_err(|e| {
                // Over HTTP/2 a body cut at its limit shows only as a reset.
                if overflow.happened() {
                    too_large(limits.max_request_bytes)
                } else {
                    upstream_failure(e)
                }
            })?;
        if response.status() == StatusCode::UNAUTHORIZED && held.is_some() && rejected.is_none() {
            let (head, body) = response.into_parts();
            let bytes = read_at_most(body, 64 * 1024)
                .await
                .map_err(|e| Refused::from(broke_off(&e)))?;
            if invalid_token(&bytes.0) {
                rejected = Some(token.sha256());
                tracing::info!(
                    account = caller.account_name(),
                    "Graph refused the token as invalid; refreshing it and sending the request again"
                );
                continue;
            }
            break Response::from_parts(head, Either::Left(Full::new(bytes.0)));
        }
        let (head, body) = response.into_parts();
        break Response::from_parts(head, Either::Right(body));
    };

    // The answer, with its links to Graph pointing back here.
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let links = Links {
        graph_bases: &settings.bases,
        gateway_base: ["http://", host, "/graph/", named.tenant].concat(),
    };
    Ok(rewrite(app, response, &links, max_rewrite).await)
}

/// Judges one request (or sub-request) against the rules, looking up a
/// mailbox named in the form a rule does not list.
#[allow(clippy::too_many_arguments)]
async fn judge(
    app: &App,
    caller: &Caller,
    target: &GatewayTarget,
    rules: &[rules::Rule],
    settings: &Settings,
    id: Option<&str>,
    method: &str,
    path: &GraphPath,
) -> Result<(), Refused> {
    let key = target.tenant.id.key();
    for _ in 0..=MAX_LOOKUPS {
        let verdict = rules::check(rules, method, path, &app.directory.of(&key, Instant::now()));
        match verdict {
            Verdict::Allowed => return Ok(()),
            Verdict::Denied => {
                let what = format!("{method} {}", path.encoded());
                let message = match id {
                    Some(id) => format!(
                        "account \"{}\" may not {what} (the $batch request with id \"{id}\"): no [[accounts.graph]] rule allows it; the whole batch was refused",
                        caller.account_name()
                    ),
                    None => format!(
                        "account \"{}\" may not {what}: no [[accounts.graph]] rule allows this method, path and mailbox",
                        caller.account_name()
                    ),
                };
                return Err(Refused {
                    failure: Failure::new(403, "forbidden", message),
                    denied: Some("no_rule"),
                });
            }
            Verdict::Lookup(name) => {
                let entry = look_up(app, caller, target, &name, settings).await?;
                app.directory.remember(
                    &key,
                    &name,
                    entry,
                    Instant::now(),
                    settings.limits.directory_ttl.0,
                );
            }
        }
    }
    Err(Refused {
        failure: Failure::new(
            403,
            "forbidden",
            "the path names more mailboxes than the gateway looks up",
        ),
        denied: Some("no_rule"),
    })
}

/// Asks Graph, with the broker's own token, who `name` is:
/// `GET /users/{name}?$select=id,userPrincipalName`.
async fn look_up(
    app: &App,
    caller: &Caller,
    target: &GatewayTarget,
    name: &str,
    settings: &Settings,
) -> Result<Option<DirectoryEntry>, Refused> {
    let tenant = &target.tenant;
    let issued = app
        .broker
        .graph_token(caller, target.clone(), None)
        .await
        .map_err(|e| Refused::from(Failure::from(&e)))?;
    let bearer = bearer(&issued.grant.token.access_token)?.clone();
    let path = GraphPath::parse(&format!(
        "/users/{}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    ))
    .map_err(|e| bad_request(e.to_string()))?;
    let url = forward::upstream_url(
        settings.upstream(),
        "v1.0",
        &path,
        Some("$select=id,userPrincipalName"),
    );
    let mut headers = hyper::HeaderMap::new();
    headers.insert(hyper::header::AUTHORIZATION, bearer);
    let response = app
        .graph
        .for_ca_file(settings.ca_file.as_deref())
        .send(
            hyper::Method::GET,
            &url,
            headers,
            upstream::held(Bytes::new()),
            settings.limits.timeout.0,
        )
        .await
        .map_err(upstream_failure)?;
    let status = response.status();
    let (body, _) = read_at_most(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| Refused::from(broke_off(&e)))?;
    let tenant_label = tenant
        .name
        .as_ref()
        .map_or(tenant.id.as_str(), |n| n.as_str());
    match status.as_u16() {
        200 => {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let field = |k: &str| value.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
            match (field("id"), field("userPrincipalName")) {
                (Some(id), Some(upn)) => Ok(Some(DirectoryEntry { id, upn })),
                _ => Err(Refused::from(Failure::new(502, "directory", "Graph's answer about a mailbox had no id and userPrincipalName"))),
            }
        }
        404 => Ok(None),
        401 => Err(Refused::from(Failure::new(
            502,
            "directory",
            format!("looking a mailbox up in tenant {tenant_label} failed: Graph refused the tenant's token (401)"),
        ))),
        403 => Err(Refused {
            failure: Failure::new(
                403,
                "forbidden",
                format!(
                    "the rule lists this mailbox in its other form (object id or user principal name), and looking it up in tenant {tenant_label} was refused: the app needs User.Read.All or User.ReadBasic.All there (admin consent), or list the mailbox in the form the request uses"
                ),
            ),
            denied: Some("directory"),
        }),
        _ => Err(Refused::from(Failure::new(
            502,
            "directory",
            format!("looking a mailbox up in tenant {tenant_label} failed: Graph answered {status}"),
        ))),
    }
}

/// What a gateway request reads of the configuration, from one snapshot.
struct Settings {
    limits: crate::config::GraphConfig,
    /// The app's `ca_file`: which of the gateway's clients sends.
    ca_file: Option<std::path::PathBuf>,
    /// Where links to Graph may point: the cloud's Graph, then
    /// `graph_host`; the last is where the gateway sends its requests.
    bases: Vec<String>,
}

impl Settings {
    /// For a request carrying `app`'s token: its cloud's Graph.
    fn of(config: &crate::config::Config, app: &AppKey) -> Settings {
        // The caller's own snapshot chose `app`, so it is there.
        let app = config.app_or_first(Some(app.name.as_str()));
        let mut bases = vec![app.graph().as_str().trim_end_matches('/').to_owned()];
        if let Some(host) = &app.graph_host {
            bases.push(host.as_str().trim_end_matches('/').to_owned());
        }
        Settings {
            limits: config.graph.clone(),
            ca_file: app.ca_file.clone(),
            bases,
        }
    }

    /// Where requests go.
    fn upstream(&self) -> &str {
        self.bases.last().map_or("", String::as_str)
    }
}

/// Rewrites `Location` and, for JSON bodies up to `max_rewrite_bytes`,
/// the paging links; everything else streams through as Graph sent it.
async fn rewrite(
    app: &App,
    response: Response<super::respond::Body>,
    links: &Links<'_>,
    max_rewrite_bytes: usize,
) -> Answer {
    let (mut head, body) = response.into_parts();
    if let Some(location) = head.headers.get(LOCATION).and_then(|l| l.to_str().ok()) {
        if let Some(value) = links
            .rewrite(location)
            .and_then(|l| HeaderValue::from_str(&l).ok())
        {
            head.headers.insert(LOCATION, value);
        }
    }
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let json = forward::is_json(head.headers.get(CONTENT_TYPE));
    let encoded = head.headers.contains_key(hyper::header::CONTENT_ENCODING);
    if !json || encoded || declared.is_some_and(|n| n > max_rewrite_bytes as u64) {
        if json && !encoded {
            app.metrics.graph_rewrite_skipped();
        }
        head.headers = forward::response_headers(std::mem::take(&mut head.headers), false);
        return Response::from_parts(head, body);
    }
    let (bytes, rest) = match read_at_most(body, max_rewrite_bytes).await {
        Ok(read) => read,
        Err(e) => return graph_error(&broke_off(&e)),
    };
    let Some(rest) = rest else {
        let rewritten = links.rewrite_json(&bytes);
        head.headers =
            forward::response_headers(std::mem::take(&mut head.headers), rewritten.is_some());
        let bytes = rewritten.map_or(bytes, Bytes::from);
        return Response::from_parts(head, whole(bytes));
    };
    // Larger than we rewrite: what was read, then the rest, unchanged.
    app.metrics.graph_rewrite_skipped();
    head.headers = forward::response_headers(std::mem::take(&mut head.headers), false);
    let first =
        futures_util::stream::once(
            async move { Ok::<_, BoxError>(hyper::body::Frame::data(bytes)) },
        );
    let rest = http_body_util::BodyStream::new(rest);
    let chained = futures_util::StreamExt::chain(first, rest);
    Response::from_parts(
        head,
        Either::Right(http_body_util::StreamBody::new(chained).boxed()),
    )
}

/// Reads up to `limit` bytes of `body`: all of it (`None` left), or what
/// was read and the body to go on with. A body that breaks off (a reset, a
/// stall past `graph.timeout`) is an error, never a shorter answer.
async fn read_at_most<B>(mut body: B, limit: usize) -> Result<(Bytes, Option<B>), BoxError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    // A page usually comes in one piece: that piece is kept as it is, and
    // only a second one starts a buffer.
    let mut read = Bytes::new();
    let mut buf: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Into::into)?.into_data() else {
            continue;
        };
        let len = if buf.is_none() && read.is_empty() {
            read = data;
            read.len()
        } else {
            let joined = buf.get_or_insert_with(|| {
                let mut joined = BytesMut::with_capacity(read.len() + data.len());
                joined.extend_from_slice(&read);
                joined
            });
            joined.extend_from_slice(&data);
            joined.len()
        };
        if len > limit {
            return Ok((buf.map_or(read, BytesMut::freeze), Some(body)));
        }
    }
    Ok((buf.map_or(read, BytesMut::freeze), None))
}

/// Graph's answer broke off before the gateway had read what it needed.
fn broke_off(e: &BoxError) -> Failure {
    Failure::new(
        502,
        "upstream_unavailable",
        format!("Microsoft Graph's answer broke off: {e}"),
    )
}

/// Whether a 401 from Graph says the token is invalid (expired, revoked).
fn invalid_token(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/code")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .is_some_and(|code| code == "InvalidAuthenticationToken")
}

/// `Authorization: Bearer <token>` for Graph, marked sensitive so no
/// `Debug` of the headers shows it.
fn bearer(token: &crate::token::AccessToken) -> Result<&HeaderValue, Refused> {
    token.bearer_header().ok_or_else(|| {
        Refused::from(Failure::new(
            502,
            "bad_token",
            "the token from Entra is not a valid header value",
        ))
    })
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(limit: u64) -> Refused {
    Refused {
        failure: Failure::new(
            413,
            "request_too_large",
            format!("the request body is larger than graph.max_request_bytes ({limit} bytes)"),
        ),
        denied: Some("too_large"),
    }
}

/// A refusal by the broker's policy (tenant not allowed, no rules) is a
/// denial; anything else (Entra down, …) is the broker's failure.
fn denied_by(app: &App, error: &TokenError) -> Refused {
    let failure = Failure::from(error);
    let denied = match error {
        TokenError::Forbidden(forbidden) => {
            app.metrics.auth_failure(forbidden.reason());
            Some(match forbidden.reason() {
                "no_graph_rules" => "no_graph_rules",
                "forbidden_app" => "forbidden_app",
                _ => "forbidden_tenant",
            })
        }
        TokenError::BadRequest(_) => Some("bad_request"),
        _ => None,
    };
    Refused { failure, denied }
}

fn upstream_failure(e: UpstreamError) -> Refused {
    let (status, code) = match &e {
        UpstreamError::Timeout(_) => (504, "upstream_timeout"),
        UpstreamError::Unreachable(_) => (502, "upstream_unavailable"),
    };
    Refused::from(Failure::new(status, code, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_names_tenant_version_and_a_normalised_path() {
        let n = named(
            "/graph/contoso/v1.0/users('alice%40contoso.com')/messages",
            Some("$top=5"),
        )
        .ok()
        .unwrap();
        assert_eq!(n.tenant, "contoso");
        assert_eq!(n.version, "v1.0");
        assert_eq!(
            n.path.segments(),
            ["users", "alice@contoso.com", "messages"]
        );
        assert_eq!(n.query, Some("$top=5"));
        for bad in [
            "/graph/",
            "/graph/contoso",
            "/graph/contoso/v1.0",
            "/graph/contoso/v2.0/users",
            "/graph//v1.0/users",
            "/graph/contoso/v1.0/users/../me",
            "/graph/contoso/v1.0/me/messages",
            "/graph/contoso/v1.0/users/a%2Fb",
        ] {
            let refused = named(bad, None).err().unwrap();
            assert_eq!(refused.failure.status, 400, "{bad}");
            assert_eq!(refused.denied, Some("bad_request"));
        }
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert!(named("/graph/contoso/v1.0/users", Some(&long)).is_err());
    }

    #[test]
    fn only_graphs_invalid_token_answer_is_retried() {
        assert!(invalid_token(
            br#"{"error":{"code":"InvalidAuthenticationToken","message":"expired"}}"#
        ));
        assert!(!invalid_token(
            br#"{"error":{"code":"Authorization_RequestDenied"}}"#
        ));
        assert!(!invalid_token(b"not json"));
    }

    #[tokio::test]
    async fn reading_stops_at_the_limit_and_hands_back_the_rest() {
        let body = Full::new(Bytes::from(vec![b'x'; 100]));
        let (read, rest) = read_at_most(body, 1000).await.unwrap();
        assert_eq!(read.len(), 100);
        assert!(rest.is_none());
        // Pieces of distinct bytes: what is read, and the rest, in order.
        let piece = |i: u8| Bytes::from(vec![b'a' + i; 100]);
        let chunks =
            futures_util::stream::iter((0..10).map(move |i| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(piece(i)))
            }));
        let (read, rest) = read_at_most(http_body_util::StreamBody::new(chunks), 250)
            .await
            .unwrap();
        let whole: Vec<u8> = (0..10).flat_map(|i| vec![b'a' + i; 100]).collect();
        assert_eq!(read, whole[..300]);
        let rest = rest.unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(rest, whole[300..]);
        // One piece is handed back as it came.
        let one = piece(0);
        let (read, rest) = read_at_most(Full::new(one.clone()), 1000).await.unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr());
        assert!(rest.is_none());
        // A page that breaks off is an error, not a shorter page.
        let broken = futures_util::stream::iter(vec![
            Ok(hyper::body::Frame::data(Bytes::from_static(
                b"{\"value\":[",
            ))),
            Err::<hyper::body::Frame<Bytes>, BoxError>("stream reset".into()),
        ]);
        let error = read_at_most(http_body_util::StreamBody::new(broken), 1000)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "stream reset");
    }
}

//! Handling one request: the route, method and Host checks, the caller,
//! the broker's one question, and the answer mapped to HTTP, with one
//! access-log line and one metric observation per request.

use super::access::{authenticate, hosts_allowed, Access, AccessLine};
use super::budget::Conn;
use super::respond::{api_error, json, msi_error, Answer, Failure, TokenBody};
use super::{admin, query, App, Peer};
use crate::broker::{Issued, TokenError};
use crate::route::Route;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response};
use serde_json::json;
use tokio::time::Instant;

/// The route `path` names for a client of `peer`. A separate metrics
/// listener serves `/metrics` and `/healthz` only; with one, the API
/// listeners do not serve `/metrics`.
pub(super) fn route_of(path: &str, peer: Peer, separate_metrics: bool) -> Route {
    match (path, peer) {
        (_, Peer::Admin(_)) => Route::Admin,
        ("/metrics", Peer::Metrics) => Route::Metrics,
        ("/healthz", _) => Route::Healthz,
        // Probes (kubelet) reach a pod on this listener, not on loopback.
        ("/readyz", Peer::Metrics) => Route::Readyz,
        (_, Peer::Metrics) => Route::Other,
        ("/metrics", _) if !separate_metrics => Route::Metrics,
        ("/v1/token", _) => Route::Token,
        ("/msi/token", _) => Route::Msi,
        ("/readyz", _) => Route::Readyz,
        (p, _) if p.starts_with("/graph/") => Route::Graph,
        _ => Route::Other,
    }
}

pub(super) async fn handle<B>(app: &App, peer: Peer, conn: &Conn, req: Request<B>) -> Answer
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<super::respond::BoxError>,
{
    let started = Instant::now();
    conn.request_started(started);
    let mut access = Access {
        enabled: tracing::enabled!(target: "tokenbroker::access", tracing::Level::INFO),
        uid: match peer {
            Peer::Unix(uid) | Peer::Admin(uid) => uid,
            Peer::Tcp | Peer::Metrics => None,
        },
        ..Access::default()
    };
    let route = route_of(req.uri().path(), peer, app.separate_metrics);
    let answer = if route == Route::Graph {
        super::graph::answer(app, peer, conn, req, &mut access).await
    } else {
        answer(app, route, peer, conn, &req, &mut access).await
    };
    let status = answer.status().as_u16();
    if access.enabled && route == Route::Graph {
        // Known for whole bodies and for streams Graph gave a length.
        access.bytes = hyper::body::Body::size_hint(answer.body()).exact();
    }
    let ended = Instant::now();
    conn.request_ended(ended);
    let elapsed = ended.saturating_duration_since(started);
    app.metrics.http_request(route, status, elapsed);
    if access.enabled {
        conn.answered(AccessLine {
            route,
            status,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            access,
        });
    }
    answer
}

/// Answers one request as the TCP listener would (benchmarks drive the
/// whole handler in-process with this). The body is never read.
pub async fn handle_request<B>(app: &App, req: Request<B>) -> Answer
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<super::respond::BoxError>,
{
    handle(app, Peer::Tcp, &Conn::default(), req).await
}

pub(super) async fn answer<B>(
    app: &App,
    route: Route,
    peer: Peer,
    conn: &Conn,
    req: &Request<B>,
    access: &mut Access,
) -> Answer {
    let is_msi = route == Route::Msi;
    let fail = |failure: Failure| {
        if is_msi {
            msi_error(&failure)
        } else {
            api_error(&failure)
        }
    };
    if route == Route::Admin {
        let uid = match peer {
            Peer::Admin(uid) => uid,
            _ => None,
        };
        return admin::answer(app, uid, conn, req).await;
    }
    if route == Route::Other {
        return fail(Failure::new(
            404,
            "not_found",
            "no such route; see /v1/token, /msi/token, /graph/{tenant}/{version}/{path}, /healthz, /readyz, /metrics",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut answer = fail(Failure::new(405, "method_not_allowed", "use GET"));
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    let max_query = match hosts_allowed(app, req, peer) {
        Ok(max_query) => max_query,
        Err(failure) => {
            if failure.status == 421 {
                access.refused(app, "bad_host");
            }
            return fail(failure);
        }
    };
    match route {
        Route::Healthz => json(200, &json!({"status": "ok"})),
        Route::Readyz if app.is_ready() => json(200, &json!({"status": "ready"})),
        Route::Readyz => fail(Failure::new(
            503,
            "not_ready",
            "credentials or listeners are not up yet",
        )),
        Route::Metrics => metrics(app),
        Route::Token | Route::Msi | Route::Graph | Route::Admin | Route::Other => {
            match token_request(app, peer, conn, req, is_msi, max_query, access).await {
                Ok(answer) => answer,
                Err(failure) => {
                    let mut answer = fail(failure);
                    if answer.status() == 401 {
                        let challenge = if is_msi {
                            "Identity"
                        } else {
                            "Bearer realm=\"tokenbroker\""
                        };
                        answer
                            .headers_mut()
                            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                    }
                    answer
                }
            }
        }
    }
}

pub(super) fn metrics(app: &App) -> Answer {
    // Gauges read at scrape time, so they follow a reloaded certificate.
    app.metrics
        .set_cached_tokens(app.broker.cached_token_count());
    app.metrics.set_certificates(&app.broker.certificates());
    let mut answer = Response::new(super::respond::whole(app.metrics.encode()));
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    answer.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    answer
}

pub(super) async fn token_request<B>(
    app: &App,
    peer: Peer,
    conn: &Conn,
    req: &Request<B>,
    is_msi: bool,
    max_query_bytes: usize,
    access: &mut Access,
) -> Result<Answer, Failure> {
    // 1. Who is calling.
    let caller = authenticate(app, peer, conn, req, is_msi, access)?;

    // 2. What is asked.
    let asked = query::token_query(
        req.uri().query().unwrap_or_default(),
        is_msi,
        max_query_bytes,
    )?;

    // On /msi/token the selector names a tenant, or an app by its client ID.
    let (tenant, app_name) = match asked.tenant.as_deref() {
        Some(selector) if is_msi => match caller.app_by_client_id(selector) {
            Some(name) => (None, Some(name)),
            None => (Some(selector), None),
        },
        tenant => (tenant, asked.app.as_deref()),
    };

    // 3. The broker's answer.
    let issued = app
        .broker
        .token(
            &caller,
            tenant,
            asked.resource.as_deref(),
            app_name,
            asked.rejected.as_ref(),
        )
        .await
        .map_err(|e| {
            if let TokenError::Forbidden(forbidden) = &e {
                access.refused(app, forbidden.reason());
            }
            Failure::from(&e)
        })?;
    if access.enabled {
        access.tenant = Some(issued.target.tenant_label().to_owned());
    }
    access.cache = Some(issued.grant.lookup);
    Ok(if is_msi {
        msi_success(&issued)
    } else {
        api_success(&issued)
    })
}

pub(super) fn expires_in(issued: &Issued) -> u64 {
    issued.grant.token.remaining(Instant::now()).as_secs()
}

pub(super) fn api_success(issued: &Issued) -> Answer {
    let token = &issued.grant.token;
    TokenBody::new(&token.access_token)
        .string("token_type", "Bearer")
        .number("expires_on", token.expires_on)
        .number("expires_in", expires_in(issued))
        .string("tenant_id", issued.target.tenant.id.as_str())
        .string("resource", issued.target.resource.as_str())
        .answer()
}

/// The App Service body: every value a string (the Rust SDK requires it).
pub(super) fn msi_success(issued: &Issued) -> Answer {
    let token = &issued.grant.token;
    TokenBody::new(&token.access_token)
        .string("expires_on", &token.expires_on.to_string())
        .string("expires_in", &expires_in(issued).to_string())
        .string("not_before", &token.obtained_on.to_string())
        .string("resource", issued.target.resource.as_str())
        .string("token_type", "Bearer")
        .string("client_id", issued.target.app.client_id.as_str())
        .answer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_serves_its_routes() {
        let api = [Peer::Tcp, Peer::Unix(Some(1000))];
        for peer in api {
            assert_eq!(route_of("/v1/token", peer, false), Route::Token);
            assert_eq!(route_of("/msi/token", peer, false), Route::Msi);
            assert_eq!(route_of("/healthz", peer, false), Route::Healthz);
            assert_eq!(route_of("/readyz", peer, false), Route::Readyz);
            assert_eq!(route_of("/metrics", peer, false), Route::Metrics);
            // With a metrics listener of its own, the API does not serve /metrics.
            assert_eq!(route_of("/metrics", peer, true), Route::Other);
            assert_eq!(route_of("/v1/token/", peer, false), Route::Other);
            assert_eq!(route_of("/admin/status", peer, false), Route::Other);
        }
        // The metrics listener: metrics and probes, never a token.
        assert_eq!(route_of("/metrics", Peer::Metrics, true), Route::Metrics);
        assert_eq!(route_of("/healthz", Peer::Metrics, true), Route::Healthz);
        assert_eq!(route_of("/readyz", Peer::Metrics, true), Route::Readyz);
        assert_eq!(route_of("/v1/token", Peer::Metrics, true), Route::Other);
        assert_eq!(route_of("/msi/token", Peer::Metrics, true), Route::Other);
        // The admin socket: every path is the admin API's.
        for path in ["/admin/status", "/v1/token", "/metrics"] {
            assert_eq!(route_of(path, Peer::Admin(Some(0)), false), Route::Admin);
        }
    }
}

//! The routes the HTTP server answers, and their metric labels. Below both
//! the server (which picks a route per request) and the metrics (which keep
//! one histogram per route).

/// The routes; `Other` for every unknown path, so arbitrary paths never
/// become metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Token,
    Msi,
    /// `/graph/{tenant}/{version}/{path}`: the Graph gateway.
    Graph,
    Healthz,
    Readyz,
    Metrics,
    /// Every path on the admin socket.
    Admin,
    Other,
}

impl Route {
    /// Every route, in the order of their discriminants.
    pub const ALL: [Route; 8] = [
        Route::Token,
        Route::Msi,
        Route::Graph,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Admin,
        Route::Other,
    ];

    /// What the route serves, for the manual (`None`: not a route of its own).
    pub fn summary(self) -> Option<&'static str> {
        Some(match self {
            Route::Token => concat!(
                "GET ?tenant=T[&resource=R][&token_sha256_to_refresh=H] with Authorization: Bearer ",
                "<account secret> (or a peer uid on server.unix_socket): {access_token, token_type, ",
                "expires_on, expires_in, tenant_id, resource}. Errors are {error, message}, with ",
                "Entra's aadsts, correlation_id and trace_id when it refused."
            ),
            Route::Msi => concat!(
                "The App Service managed-identity protocol: GET ?resource=R[&client_id=C] with ",
                "X-IDENTITY-HEADER: <account secret>; every value a string, as Azure SDKs expect."
            ),
            Route::Graph => concat!(
                "ANY /graph/{tenant}/{v1.0|beta}/{path}[?query] with Authorization: Bearer <account ",
                "secret> (or a peer uid): the Graph request, checked against the account's ",
                "[[accounts.graph]] rules and forwarded with the tenant's token. Refusals in Graph's ",
                "error shape: tokenbroker.bad_request (400), tokenbroker.forbidden (403)."
            ),
            Route::Healthz => "200 while the process serves.",
            Route::Readyz => "200 once the credentials are loaded and the listeners accept; 503 before.",
            Route::Metrics => "Prometheus metrics (see METRICS).",
            Route::Admin => concat!(
                "On server.admin_socket only (root, the daemon's uid, server.admin_uids): GET ",
                "/admin/status, GET /admin/tenants[/T], POST /admin/tenants/T/refresh, POST ",
                "/admin/tenants/T/evict, POST /admin/reload."
            ),
            Route::Other => return None,
        })
    }

    /// The `route` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Token => "/v1/token",
            Route::Msi => "/msi/token",
            Route::Graph => "/graph",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Admin => "/admin",
            Route::Other => "other",
        }
    }
}

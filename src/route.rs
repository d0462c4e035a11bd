//! The routes the HTTP server answers, and their metric labels. Below both
//! the server (which picks a route per request) and the metrics (which keep
//! one histogram per route).

/// The routes; `Other` for every unknown path, so arbitrary paths never
/// become metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Token,
    Msi,
    Healthz,
    Readyz,
    Metrics,
    /// Every path on the admin socket.
    Admin,
    Other,
}

impl Route {
    /// Every route, in the order of their discriminants.
    pub const ALL: [Route; 7] = [
        Route::Token,
        Route::Msi,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Admin,
        Route::Other,
    ];

    /// The `route` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Token => "/v1/token",
            Route::Msi => "/msi/token",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Admin => "/admin",
            Route::Other => "other",
        }
    }
}

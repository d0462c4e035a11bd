//! The admin API, on its own Unix socket only (docs/contract.md, "Admin
//! API"): status, per-tenant status, refresh, evict, reload. Callers are
//! known by their peer uid: root, the daemon's own uid and
//! `server.admin_uids` may act; every action is logged with the uid.

use super::respond::{api_error, json, Answer, Failure};
use super::App;
use crate::broker::TokenError;
use hyper::{Method, Request};
use serde_json::json;

/// Whether `uid` may use the admin API.
pub fn uid_allowed(uid: Option<u32>, own: Option<u32>, admin_uids: &[u32]) -> bool {
    match uid {
        Some(0) => true,
        Some(uid) => own == Some(uid) || admin_uids.contains(&uid),
        None => false,
    }
}

/// What an admin path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action<'p> {
    Status,
    Tenants(Option<&'p str>),
    Refresh(&'p str),
    Evict(&'p str),
    Reload,
}

/// Parses an admin path and method. Pure.
fn action<'p>(method: &Method, path: &'p str) -> Result<Action<'p>, Failure> {
    let rest = path.strip_prefix("/admin/").ok_or_else(not_found)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (want, action) = match segments.as_slice() {
        ["status"] => (Method::GET, Action::Status),
        ["tenants"] => (Method::GET, Action::Tenants(None)),
        ["tenants", t] if !t.is_empty() => (Method::GET, Action::Tenants(Some(t))),
        ["tenants", t, "refresh"] if !t.is_empty() => (Method::POST, Action::Refresh(t)),
        ["tenants", t, "evict"] if !t.is_empty() => (Method::POST, Action::Evict(t)),
        ["reload"] => (Method::POST, Action::Reload),
        _ => return Err(not_found()),
    };
    if *method != want && !(want == Method::GET && *method == Method::HEAD) {
        return Err(Failure::new(
            405,
            "method_not_allowed",
            format!("use {want} for this admin route"),
        ));
    }
    Ok(action)
}

fn not_found() -> Failure {
    Failure::new(
        404,
        "not_found",
        "no such admin route; see /admin/status, /admin/tenants[/{tenant}[/refresh|/evict]], /admin/reload",
    )
}

/// Answers an admin request from a peer with `uid`.
pub(super) async fn answer<B>(
    app: &App,
    uid: Option<u32>,
    conn: &super::budget::Conn,
    req: &Request<B>,
) -> Answer {
    let config = app.broker().config();
    if !uid_allowed(uid, app.own_uid, &config.server.admin_uids) {
        let kind = format!("admin refused: {uid:?}");
        if let Some(held_back) = crate::log_limit::admit(&kind) {
            tracing::warn!(
                uid,
                path = req.uri().path(),
                held_back,
                "admin request refused: uid not allowed"
            );
        }
        return api_error(&Failure::new(
            403,
            "forbidden",
            "this uid may not use the admin API; allowed are root, the daemon's own uid and server.admin_uids",
        ));
    }
    conn.authenticated
        .store(true, std::sync::atomic::Ordering::Release);
    let path = req.uri().path();
    let action = match action(req.method(), path) {
        Ok(action) => action,
        Err(failure) => return api_error(&failure),
    };
    let param = |name: &str| {
        req.uri()
            .query()
            .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(n, _)| n == name))
            .map(|(_, v)| v.into_owned())
    };
    let (resource, app_name) = (param("resource"), param("app"));
    let (resource, app_name) = (resource.as_deref(), app_name.as_deref());
    let broker = app.broker();
    match action {
        Action::Status => json(200, &broker.status()),
        Action::Tenants(tenant) => match broker.tenants(tenant) {
            Ok(rows) => json(200, &rows),
            Err(e) => api_error(&Failure::from(&TokenError::from(e))),
        },
        Action::Refresh(tenant) => {
            tracing::info!(uid, tenant, resource, app = app_name, "admin: refresh");
            match broker.refresh(tenant, resource, app_name).await {
                Ok(rows) => json(200, &rows),
                Err(e) => api_error(&Failure::from(&e)),
            }
        }
        Action::Evict(tenant) => {
            tracing::info!(uid, tenant, resource, app = app_name, "admin: evict");
            match broker.evict(tenant, resource, app_name).await {
                Ok(rows) => json(200, &rows),
                Err(e) => api_error(&Failure::from(&TokenError::from(e))),
            }
        }
        Action::Reload => {
            tracing::info!(uid, "admin: reload");
            match broker.reload().await {
                Ok(applied) => json(
                    200,
                    &json!({"result": "success", "restart_needed": applied.restart_needed}),
                ),
                Err(e) => json(
                    400,
                    &json!({"error": "reload_failed", "message": e.to_string()}),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths_and_methods() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(action(&get, "/admin/status"), Ok(Action::Status));
        assert_eq!(action(&get, "/admin/tenants"), Ok(Action::Tenants(None)));
        assert_eq!(
            action(&get, "/admin/tenants/contoso"),
            Ok(Action::Tenants(Some("contoso")))
        );
        assert_eq!(
            action(&post, "/admin/tenants/contoso/refresh"),
            Ok(Action::Refresh("contoso"))
        );
        assert_eq!(
            action(&post, "/admin/tenants/a.com/evict"),
            Ok(Action::Evict("a.com"))
        );
        assert_eq!(action(&post, "/admin/reload"), Ok(Action::Reload));
        assert_eq!(action(&get, "/admin/reload").unwrap_err().status, 405);
        assert_eq!(action(&post, "/admin/status").unwrap_err().status, 405);
        for bad in [
            "/admin/",
            "/admin/tenants//refresh",
            "/admin/x",
            "/admin/tenants/a/b/c",
            "/status",
        ] {
            assert_eq!(action(&get, bad).unwrap_err().status, 404, "{bad}");
        }
    }

    #[test]
    fn root_self_and_listed_uids_may_administer() {
        assert!(uid_allowed(Some(0), Some(1000), &[]));
        assert!(uid_allowed(Some(1000), Some(1000), &[]));
        assert!(uid_allowed(Some(42), Some(1000), &[42]));
        assert!(!uid_allowed(Some(43), Some(1000), &[42]));
        assert!(!uid_allowed(None, Some(1000), &[42]));
    }
}

//! The app registrations in force: each app's authority client (with its
//! credentials), the token source that sends each cache key's load to its
//! app's client, and the tokens configured tenants should have per app.

use super::control::Control;
use super::Observer;
use crate::access::Target;
use crate::authority::response::TokenResponse;
use crate::authority::{
    AcquireError, AuthorityClient, AuthoritySettings, BuildError, RetryPolicy, UpstreamObserver,
};
use crate::cache::{BoxFuture, CacheKey, Fetched, LoadContext, TokenSource};
use crate::clock::SharedClock;
use crate::config::{AppConfig, AppKey, Config, TenantId};
use crate::credentials::CredentialSet;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

/// The app registrations in force, in file order, each with its authority
/// client (which holds the app's credentials). A reload swaps it whole.
#[derive(Debug, Default)]
pub(super) struct Apps(pub(super) Vec<(AppKey, Arc<AuthorityClient>)>);

impl Apps {
    pub(super) fn client(&self, app: &AppKey) -> Option<&Arc<AuthorityClient>> {
        self.0.iter().find(|(key, _)| key == app).map(|(_, c)| c)
    }

    /// Each app's credentials.
    pub(super) fn credentials(&self) -> impl Iterator<Item = (&AppKey, &Arc<CredentialSet>)> {
        self.0.iter().map(|(key, c)| (key, c.credentials()))
    }
}

/// The authority clients as the cache's [`TokenSource`]: one logical
/// client-credentials request per fetch, with the client of the key's app
/// in force (a reload may swap it).
pub(super) struct AuthoritySource {
    pub(super) apps: Arc<ArcSwap<Apps>>,
}

impl TokenSource for AuthoritySource {
    type Error = AcquireError;
    fn fetch(
        &self,
        key: &CacheKey,
        _load: &LoadContext,
    ) -> BoxFuture<Result<Fetched, AcquireError>> {
        let client = self.apps.load().client(&key.app).cloned();
        let key = key.clone();
        Box::pin(async move {
            // Only a reload that removed the app while this load waited.
            let client = client.ok_or_else(|| AcquireError::Unavailable {
                tenant: key.tenant.to_string(),
                reason: format!("app \"{}\" is no longer configured", key.app.name),
                entra: None,
            })?;
            let TokenResponse {
                access_token,
                expires_in,
                refresh_in,
            } = client.acquire(&key.tenant, &key.resource).await?;
            Ok(Fetched {
                access_token,
                expires_in,
                refresh_in,
                age: Duration::ZERO,
            })
        })
    }
}

/// An authority client for one app, reporting to the broker's observer
/// and reloading credentials through its control door.
pub(super) fn app_client(
    settings: AuthoritySettings,
    credentials: Arc<CredentialSet>,
    clock: &SharedClock,
    observer: &Arc<dyn Observer>,
    control: &Arc<Control>,
) -> Result<AuthorityClient, BuildError> {
    Ok(
        AuthorityClient::new(settings, credentials, Arc::clone(clock))?
            .with_observer(observer.clone() as Arc<dyn UpstreamObserver>)
            .with_credential_reload(control.clone()),
    )
}

/// The settings of `app`'s authority client, with the broker's retry
/// policy (tests and tools tune it; every app and every reload keep it).
pub(super) fn settings_for(app: &AppConfig, retry: RetryPolicy) -> AuthoritySettings {
    AuthoritySettings {
        retry,
        ..AuthoritySettings::for_app(app)
    }
}

/// The cache slot of a resolved target.
pub(super) fn key_of(target: &Target) -> CacheKey {
    CacheKey::new(&target.app, &target.tenant.id, &target.resource)
}

/// The token every configured tenant should have: the Graph token of each
/// app it consented to (`tenants.apps`, default every app).
pub(super) fn configured_keys(config: &Config) -> Vec<CacheKey> {
    config
        .consents()
        .map(|(app, tenant)| CacheKey::new(&app.app_key(), &tenant.id, &app.graph()))
        .collect()
}

/// Each configured tenant with each app it consented to (the cache keeps
/// their slots apart, and heals them).
pub(super) fn configured_pairs(config: &Config) -> Vec<(AppKey, TenantId)> {
    config
        .consents()
        .map(|(app, tenant)| (app.app_key(), tenant.id.clone()))
        .collect()
}

//! The fleet cache as a layer of token sources.

use super::record::Shareable;
use super::SharedCache;
use crate::cache::{BoxFuture, CacheKey, Fetched, LoadContext, TokenSource};
use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// A token source shared with the fleet: with `[shared_cache]` configured,
/// every fetch goes through [`SharedCache::fetch`] (a refusal or token
/// another host shared, a lease), and only then to `inner`; without it,
/// straight to `inner`. The layer between a host's own cache and the
/// authority, generic over the source and its error.
pub struct SharedSource<S> {
    inner: Arc<S>,
    fleet: Arc<ArcSwapOption<SharedCache>>,
}

impl<S> SharedSource<S> {
    /// `inner`, shared through whatever `fleet` holds at each fetch (a
    /// reload may set it or clear it).
    pub fn new(inner: S, fleet: Arc<ArcSwapOption<SharedCache>>) -> SharedSource<S> {
        SharedSource {
            inner: Arc::new(inner),
            fleet,
        }
    }
}

impl<S> std::fmt::Debug for SharedSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSource")
            .field("shared", &self.fleet.load().is_some())
            .finish_non_exhaustive()
    }
}

impl<S> TokenSource for SharedSource<S>
where
    S: TokenSource,
    S::Error: Shareable,
{
    type Error = S::Error;

    fn fetch(&self, key: &CacheKey, load: &LoadContext) -> BoxFuture<Result<Fetched, S::Error>> {
        let Some(fleet) = self.fleet.load_full() else {
            return self.inner.fetch(key, load);
        };
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        let load = load.clone();
        Box::pin(async move { fleet.fetch(&key, &load, || inner.fetch(&key, &load)).await })
    }
}

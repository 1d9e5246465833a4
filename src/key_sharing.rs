//! Signing keys in a cluster: each node signs JWTs with keys only it holds (its
//! `[oauth] signing_keys` folder), and publishes their public halves in the database, so that
//! every node's `/jwks` names every key any node signs with. A resource server may fetch the
//! JWKS from any node behind the load balancer and verify a token from any other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::oauth::TokenService;
use crate::store::{PublicKey, PublishedKeyStore};

/// Publishes this node's keys and reads everyone's, once.
pub async fn share_once(service: &TokenService, store: &dyn PublishedKeyStore, interval: Duration) {
    let max_validity = match service.max_access_token_validity_secs().await {
        Ok(max_validity) => max_validity,
        Err(err) => {
            tracing::warn!(error = %err, "signing keys not shared this time");
            return;
        }
    };
    // The folder as it is now, so that a key whose file was just deleted is not
    // published again by a pass that ran before this node's own reload.
    let keys = service.keys.clone();
    let _ = tokio::task::spawn_blocking(move || keys.reload_if_changed()).await;
    let now = service.clock.now_secs();
    let own: Vec<PublicKey> = service
        .keys
        .keys()
        .published_jwks(now, max_validity)
        .into_iter()
        .filter_map(|jwk| {
            Some(PublicKey {
                kid: jwk.get("kid")?.as_str()?.to_owned(),
                jwk: jwk.to_string(),
            })
        })
        .collect();
    // Long enough for every token these keys sign before the next pass to expire, should this
    // node never make that pass.
    let interval_secs = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
    let valid_until = now
        .saturating_add(max_validity)
        .saturating_add(interval_secs)
        .saturating_add(60);
    let shared = async {
        store.publish_keys(&own, valid_until).await?;
        store.published_keys(now).await
    };
    match shared.await {
        Ok(all) => service.keys.set_published_elsewhere(
            all.iter()
                .filter_map(|key| serde_json::from_str(&key.jwk).ok())
                .collect(),
        ),
        // The JWKS keeps the last keys seen; an outage shows in /health.
        Err(err) => tracing::warn!(error = %err, "signing keys not shared this time"),
    }
}

/// Shares every `interval` until `stop` changes.
pub fn spawn(
    service: Arc<TokenService>,
    store: Arc<dyn PublishedKeyStore>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    crate::reload::until_stopped(interval, stop, move || {
        let (service, store) = (service.clone(), store.clone());
        async move { share_once(&service, store.as_ref(), interval).await }
    });
}

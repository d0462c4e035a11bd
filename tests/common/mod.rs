//! Shared test fixtures: a credential on disk, a simulated authority that
//! knows it, and a configuration pointing at it.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokenbroker::authority::{AuthoritySettings, RetryPolicy};
use tokenbroker::broker::Broker;
use tokenbroker::cache::{CacheSettings, NoObserver};
use tokenbroker::clock::SystemClock;
use tokenbroker::config::Config;
use tokenbroker::credentials::{Credential, CredentialSource, CredentialStore};
use tokenbroker::simulated_authority::SimulatedAuthority;

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const GRAPH: &str = "https://graph.microsoft.com";

/// A fresh RSA-2048 certificate and key written to `dir/{name}.crt|.key`;
/// returns the certificate DER.
pub fn write_credential(dir: &Path, name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["tokenbroker.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// Everything a test needs: a temp dir with `app.crt`/`app.key`, a running
/// simulated authority with that certificate registered, and a config file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sim: SimulatedAuthority,
    pub cert_der: Vec<u8>,
    pub config_path: PathBuf,
}

impl Fixture {
    /// `extra` is appended to the configuration (tenants, accounts, cache…).
    pub async fn new(extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cert_der = write_credential(dir.path(), "app");
        let sim = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
        sim.register_certificate(&cert_der).unwrap();
        let config_path = dir.path().join("tokenbroker.toml");
        std::fs::write(
            &config_path,
            format!(
                "[app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\nrequest_timeout = \"2s\"\n{extra}",
                sim.url()
            ),
        )
        .unwrap();
        Fixture {
            dir,
            sim,
            cert_der,
            config_path,
        }
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::load(&self.config_path).unwrap())
    }

    pub fn credentials(&self, config: &Config) -> Arc<CredentialStore> {
        let loaded = Credential::load(
            &CredentialSource::from_config(&config.app),
            SystemTime::now(),
        )
        .unwrap();
        Arc::new(CredentialStore::new(loaded.credential))
    }

    /// A broker with quick retries (so tests of backoff take milliseconds).
    pub fn broker(&self) -> Broker {
        self.broker_with(|_, _| {})
    }

    pub fn broker_with(
        &self,
        adjust: impl FnOnce(&mut AuthoritySettings, &mut CacheSettings),
    ) -> Broker {
        let config = self.config();
        let mut authority = AuthoritySettings::from_config(&config);
        authority.retry = RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
            budget: Duration::from_secs(10),
        };
        let mut cache = CacheSettings::from_config(&config.cache);
        adjust(&mut authority, &mut cache);
        let credentials = self.credentials(&config);
        Broker::with_settings(
            config,
            authority,
            cache,
            credentials,
            Arc::new(SystemClock),
            Arc::new(NoObserver),
        )
        .unwrap()
    }
}

/// The claims of a JWT, unverified (for checking what the simulator issued).
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

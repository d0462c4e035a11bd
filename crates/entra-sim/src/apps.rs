//! App registrations: one authority can hold several (each its own client
//! ID, certificates, federated credentials, consents and app roles), as one
//! Entra directory holds several apps. The token request's `client_id`
//! selects the app; `SimulatedAuthority::start` makes the first, which the
//! single-app API (`register_certificate`, `consent`, …) addresses.

use crate::{is_guid, FederatedIssuer, SimError, SimulatedAuthority, State};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::{HashMap, HashSet};
use x509_cert::der::Decode;

/// The `roles` an app's tokens carry until `set_roles` changes them.
const DEFAULT_ROLES: &[&str] = &[
    "Mail.ReadWrite",
    "Calendars.ReadWrite",
    "Contacts.ReadWrite",
];

/// One app registration as the authority knows it.
#[derive(Debug)]
pub(crate) struct App {
    /// Registered certificates: base64url thumbprint (SHA-1 and SHA-256) →
    /// PKCS#1 public key.
    pub(crate) keys: HashMap<String, Vec<u8>>,
    /// The tenants (GUIDs) whose admin consented to this app.
    pub(crate) consented: HashSet<String>,
    /// Federated identity credentials: issuer → (key, trusted subjects).
    pub(crate) federated: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// The `roles` claim of its tokens.
    pub(crate) roles: Vec<String>,
}

impl App {
    pub(crate) fn new() -> App {
        App {
            keys: HashMap::new(),
            consented: HashSet::new(),
            federated: HashMap::new(),
            roles: DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect(),
        }
    }
}

impl State {
    /// The app `client_id`, registered first if absent.
    pub(crate) fn app_mut(&mut self, client_id: &str) -> &mut App {
        self.apps
            .entry(client_id.to_owned())
            .or_insert_with(App::new)
    }

    /// The GUID of `tenant` (GUID or domain, any case), the tenant made
    /// first if absent: a tenant exists once, whichever apps it consented.
    pub(crate) fn tenant_id(&mut self, tenant: &str) -> String {
        let key = tenant.to_ascii_lowercase();
        let tid = match self.tenants.get(&key) {
            Some(tid) => tid.clone(),
            None if is_guid(tenant) => key.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        self.tenants.insert(key, tid.clone());
        self.tenants.insert(tid.clone(), tid.clone());
        tid
    }
}

impl SimulatedAuthority {
    /// The client ID `start` was given: the app of the single-app API.
    pub(crate) fn first_app(&self) -> String {
        self.shared.lock().client_id.clone()
    }

    /// Registers another app registration, `client_id`, on this authority
    /// (same token endpoint; the request's `client_id` selects the app). It
    /// starts with no certificate, no consent and the default roles. An app
    /// already registered is left as it is.
    pub fn add_app(&self, client_id: &str) {
        self.shared.lock().app_mut(client_id);
    }

    /// Registers a certificate (DER) on the app `client_id` (added first if
    /// absent), as an upload in the portal does.
    pub fn register_certificate_for(
        &self,
        client_id: &str,
        cert_der: &[u8],
    ) -> Result<(), SimError> {
        let public = rsa_public_key(cert_der).map_err(SimError)?;
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut state = self.shared.lock();
        let keys = &mut state.app_mut(client_id).keys;
        keys.insert(URL_SAFE_NO_PAD.encode(sha1.as_ref()), public.clone());
        keys.insert(URL_SAFE_NO_PAD.encode(sha256.as_ref()), public);
        Ok(())
    }

    /// Makes the app `client_id` (added first if absent) trust tokens from
    /// `issuer` about `subject`, as a federated identity credential does.
    pub fn trust_federated_for(&self, client_id: &str, issuer: &FederatedIssuer, subject: &str) {
        let mut state = self.shared.lock();
        let entry = state
            .app_mut(client_id)
            .federated
            .entry(issuer.issuer.clone())
            .or_insert_with(|| (issuer.public_key(), Vec::new()));
        entry.1.push(subject.to_owned());
    }

    /// Grants admin consent to the app `client_id` (added first if absent)
    /// in `tenant` (GUID or domain, added if absent); returns the tenant
    /// GUID, the same whichever app consents.
    pub fn consent_for(&self, client_id: &str, tenant: &str) -> String {
        let mut state = self.shared.lock();
        let tid = state.tenant_id(tenant);
        state.app_mut(client_id).consented.insert(tid.clone());
        tid
    }

    /// The `roles` claim of the tokens issued to the app `client_id` (added
    /// first if absent).
    pub fn set_roles_for(&self, client_id: &str, roles: &[&str]) {
        self.shared.lock().app_mut(client_id).roles =
            roles.iter().map(|r| (*r).to_owned()).collect();
    }

    /// Token requests received for `tenant` (as written in the URL, any
    /// case) whose `client_id` field was `client_id`, whatever the answer
    /// (faults and refusals included).
    pub fn requests_for(&self, client_id: &str, tenant: &str) -> usize {
        self.shared
            .lock()
            .app_requests
            .get(&(client_id.to_owned(), tenant.to_ascii_lowercase()))
            .copied()
            .unwrap_or(0)
    }
}

/// The RSA public key (PKCS#1 DER) of a DER certificate.
fn rsa_public_key(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| format!("not a certificate: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
        return Err("Entra accepts RSA certificates only".into());
    }
    Ok(spki.subject_public_key.raw_bytes().to_vec())
}

//! A private key that never leaves an HSM: signing through PKCS#11 (the
//! `cryptoki` crate) with a hardware HSM, a cloud HSM's library, a TPM's
//! PKCS#11 bridge, or SoftHSM. The broker logs in with the PIN from the
//! named environment variable, finds the key by label, and asks the token
//! to sign: `CKM_SHA256_RSA_PKCS_PSS` for PS256, `CKM_SHA256_RSA_PKCS` for
//! RS256. The certificate comes from its file.
//!
//! Sessions are pooled; a session or key handle that stops working (token
//! removed, module error, key deleted) is dropped and re-opened once per
//! signature, with a backoff between re-opens, and the failure is reported:
//! the authority then falls back to the next credential.

use crate::config::{Pkcs11Config, SigningAlgorithm};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Why a key in a PKCS#11 token could not be reached, made or used; each
/// message names the module, token or key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {path}: {source}")]
    Load { path: PathBuf, source: CkError },
    #[error("initialising the PKCS#11 module {path}: {source}")]
    Initialize { path: PathBuf, source: CkError },
    #[error("listing the PKCS#11 slots: {0}")]
    Slots(CkError),
    #[error("no PKCS#11 token is labelled \"{token}\" (tokens present: {present})")]
    NoToken { token: String, present: String },
    #[error("the PIN variable {0} (pin_env) is not set; set it to the token's user PIN")]
    NoPin(String),
    #[error("the token refused the PIN (CKR_PIN_INCORRECT); check pin_env's value")]
    PinIncorrect,
    #[error("logging in to the token: {0}")]
    Login(CkError),
    #[error("opening a session on token \"{token}\": {source}")]
    Session { token: String, source: CkError },
    #[error("searching the token for \"{label}\": {source}")]
    Search { label: String, source: CkError },
    #[error("the token holds no {kind} labelled \"{label}\"")]
    NoKey { kind: &'static str, label: String },
    #[error("the token holds {count} keys labelled \"{label}\"; labels must be unique")]
    DuplicateKeys { count: usize, label: String },
    #[error("reading the key's public part: {0}")]
    PublicPart(CkError),
    #[error("the key has no RSA modulus and exponent (is it an RSA key?)")]
    NotRsa,
    #[error("the token refused to sign with \"{label}\": {source}")]
    Sign { label: String, source: CkError },
    #[error("the token already holds a key labelled \"{0}\"; choose another --key-label (keys are never replaced)")]
    KeyExists(String),
    #[error("generating an RSA-{bits} key pair in token \"{token}\": {source}")]
    Generate {
        bits: u32,
        token: String,
        source: CkError,
    },
}

/// Re-opening a lost session is tried at most this often.
const REOPEN_BACKOFF: Duration = Duration::from_secs(2);

/// Each module is loaded and initialised once per process and never
/// finalised: finalising would end every other user's sessions.
fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    let module = Pkcs11::new(path).map_err(|source| HsmError::Load {
        path: path.to_owned(),
        source,
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => {
            return Err(HsmError::Initialize {
                path: path.to_owned(),
                source,
            })
        }
    }
    modules.insert(path.to_owned(), module.clone());
    Ok(module)
}

/// The PKCS#11 mechanism for `algorithm`.
fn mechanism(algorithm: SigningAlgorithm) -> Mechanism<'static> {
    match algorithm {
        SigningAlgorithm::PS256 => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        }),
        SigningAlgorithm::RS256 => Mechanism::Sha256RsaPkcs,
    }
}

/// Where the key is, and how to reach it.
struct Location {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    label: String,
    token: String,
}

/// A key in a PKCS#11 token.
pub struct HsmKey {
    location: Location,
    /// Open, logged-in sessions, and the key's handle in them.
    pool: Mutex<Vec<Session>>,
    handle: Mutex<Option<ObjectHandle>>,
    last_reopen: Mutex<Option<Instant>>,
    /// The public key: modulus and exponent, big-endian.
    public: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("token", &self.location.token)
            .field("label", &self.location.label)
            .finish()
    }
}

/// The slot holding the token labelled `token`.
fn find_slot(pkcs11: &Pkcs11, token: &str) -> Result<Slot, HsmError> {
    let slots = pkcs11.get_slots_with_token().map_err(HsmError::Slots)?;
    let mut labels = Vec::new();
    for slot in slots {
        if let Ok(info) = pkcs11.get_token_info(slot) {
            let label = info.label().trim().to_owned();
            if label == token {
                return Ok(slot);
            }
            labels.push(label);
        }
    }
    Err(HsmError::NoToken {
        token: token.to_owned(),
        present: if labels.is_empty() {
            "none".into()
        } else {
            labels.join(", ")
        },
    })
}

/// Reads the PIN from the environment variable `pin_env`.
pub fn pin_from_env(pin_env: &str) -> Result<AuthPin, HsmError> {
    crate::sys::SecretSource::Env(pin_env.to_owned())
        .read()
        .map(|pin| AuthPin::new(pin.as_str().into()))
        .map_err(|_| HsmError::NoPin(pin_env.to_owned()))
}

fn login(session: &Session, pin: &AuthPin) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(HsmError::PinIncorrect),
        Err(e) => Err(HsmError::Login(e)),
    }
}

/// Opens a logged-in session on the token `config` names.
pub fn open_session(config: &Pkcs11Config) -> Result<(Session, Pkcs11, Slot), HsmError> {
    let pkcs11 = module(&config.module)?;
    let slot = find_slot(&pkcs11, &config.token)?;
    let pin = pin_from_env(config.pin_env.as_str())?;
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|source| HsmError::Session {
            token: config.token.clone(),
            source,
        })?;
    login(&session, &pin)?;
    Ok((session, pkcs11, slot))
}

fn find_key(session: &Session, label: &str, class: ObjectClass) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|source| HsmError::Search {
            label: label.to_owned(),
            source,
        })?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::NoKey {
            kind: if class == ObjectClass::PRIVATE_KEY {
                "private key"
            } else {
                "public key"
            },
            label: label.to_owned(),
        }),
        _ => Err(HsmError::DuplicateKeys {
            count: found.len(),
            label: label.to_owned(),
        }),
    }
}

/// The modulus and public exponent of a key (public attributes, readable
/// even on a sensitive private key).
fn public_of(session: &Session, key: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), HsmError> {
    let attributes = session
        .get_attributes(
            key,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(HsmError::PublicPart)?;
    let (mut n, mut e) = (None, None);
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(m) => n = Some(m),
            Attribute::PublicExponent(x) => e = Some(x),
            _ => {}
        }
    }
    match (n, e) {
        (Some(n), Some(e)) => Ok((n, e)),
        _ => Err(HsmError::NotRsa),
    }
}

impl HsmKey {
    /// Logs in and finds the key `config` names.
    pub fn open(config: &Pkcs11Config) -> Result<HsmKey, HsmError> {
        let (session, pkcs11, slot) = open_session(config)?;
        let handle = find_key(&session, &config.key_label, ObjectClass::PRIVATE_KEY)?;
        let public = public_of(&session, handle)?;
        Ok(HsmKey {
            location: Location {
                pkcs11,
                slot,
                pin: pin_from_env(config.pin_env.as_str())?,
                label: config.key_label.clone(),
                token: config.token.clone(),
            },
            pool: Mutex::new(vec![session]),
            handle: Mutex::new(Some(handle)),
            last_reopen: Mutex::new(None),
            public,
        })
    }

    /// The public key: modulus and exponent, big-endian.
    pub fn public(&self) -> (&[u8], &[u8]) {
        (&self.public.0, &self.public.1)
    }

    fn session(&self) -> Result<Session, HsmError> {
        if let Some(session) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(session);
        }
        let location = &self.location;
        let session = location
            .pkcs11
            .open_rw_session(location.slot)
            .map_err(|source| HsmError::Session {
                token: location.token.clone(),
                source,
            })?;
        login(&session, &location.pin)?;
        Ok(session)
    }

    fn sign_once(
        &self,
        session: &Session,
        algorithm: SigningAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let cached = *self.handle.lock().unwrap_or_else(|p| p.into_inner());
        let handle = match cached {
            Some(handle) => handle,
            None => {
                let handle = find_key(session, &self.location.label, ObjectClass::PRIVATE_KEY)?;
                *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                handle
            }
        };
        session
            .sign(&mechanism(algorithm), handle, data)
            .map_err(|source| HsmError::Sign {
                label: self.location.label.clone(),
                source,
            })
    }

    /// Signs `data` (blocking: call it off the async runtime).
    pub fn sign(&self, algorithm: SigningAlgorithm, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let session = self.session()?;
        match self.sign_once(&session, algorithm, data) {
            Ok(signature) => {
                self.pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(session);
                Ok(signature)
            }
            Err(first) => {
                // The session or the handle went bad: drop both, re-open
                // once (not more often than the backoff), and report.
                drop(session);
                *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                {
                    let mut last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
                        return Err(first);
                    }
                    *last = Some(Instant::now());
                }
                tracing::warn!(token = %self.location.token, key = %self.location.label, "PKCS#11 signing failed ({first}); re-opening the session");
                let session = self.session()?;
                let signature = self.sign_once(&session, algorithm, data)?;
                self.pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(session);
                Ok(signature)
            }
        }
    }
}

/// Makes an RSA key pair inside the token: the private key sensitive and
/// never extractable, both token objects labelled `config.key_label`.
/// Returns its public modulus and exponent.
pub fn generate(config: &Pkcs11Config, bits: u32) -> Result<(Vec<u8>, Vec<u8>), HsmError> {
    let (session, _, _) = open_session(config)?;
    let label = config.key_label.as_bytes().to_vec();
    if find_key(&session, &config.key_label, ObjectClass::PRIVATE_KEY).is_ok() {
        return Err(HsmError::KeyExists(config.key_label.clone()));
    }
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::KeyType(KeyType::RSA),
        Attribute::ModulusBits(u64::from(bits).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Label(label.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        // A signing key only: no decrypting or unwrapping with it.
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Label(label),
    ];
    let (_, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|source| HsmError::Generate {
            bits,
            token: config.token.clone(),
            source,
        })?;
    public_of(&session, private)
}

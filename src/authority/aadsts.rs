//! The AADSTS codes the broker acts on, named once (docs/entra.md, "AADSTS
//! codes"), and what each means: the remedy an operator reads, whether a
//! refusal is about the tenant (every host of the fleet would get it) or
//! about this host (its credential, its clock, its address), and what it
//! says about consent. Pure.

/// The app is not known in the tenant: admin consent was never granted
/// (or the tenant id is wrong).
pub const APP_NOT_FOUND: u32 = 700_016;
/// Consent is missing.
pub const CONSENT_MISSING: u32 = 65_001;
/// The tenant does not exist.
pub const TENANT_NOT_FOUND: u32 = 90_002;
/// The tenant is in another national cloud.
pub const OTHER_CLOUD: u32 = 90_038;
/// The app is disabled in the tenant.
pub const APP_DISABLED: u32 = 7_000_112;
/// The certificate is not registered on the app.
pub const CERTIFICATE_NOT_REGISTERED: u32 = 700_027;
/// The assertion's time range was refused (this host's clock).
pub const ASSERTION_TIME: u32 = 700_024;
/// No federated identity credential matches the token's issuer and subject.
pub const FEDERATED_NO_MATCH: u32 = 70_021;
/// The federated token's issuer is not one the app trusts.
pub const FEDERATED_ISSUER: u32 = 700_211;
/// The federated token's audience is not `api://AzureADTokenExchange`.
pub const FEDERATED_AUDIENCE: u32 = 700_212;
/// The federated token's signature does not verify.
pub const FEDERATED_SIGNATURE: u32 = 700_213;
/// Conditional Access blocks the app (it may depend on the host's address).
pub const CONDITIONAL_ACCESS: u32 = 53_003;
/// Entra detected a request loop.
pub const REQUEST_LOOP: u32 = 50_196;
/// The client assertion names another app than `client_id`.
pub const ASSERTION_APP_MISMATCH: u32 = 700_021;
/// The certificate is expired, not yet valid or revoked.
pub const CERTIFICATE_INVALID: [u32; 4] = [1_000_502, 7_000_274, 7_000_214, 7_000_277];

/// Refusals about the tenant, not this host's credential, clock or address:
/// another host with the same app would be refused alike, so the fleet
/// shares them.
const TENANT_WIDE: [u32; 5] = [
    APP_NOT_FOUND,
    CONSENT_MISSING,
    TENANT_NOT_FOUND,
    OTHER_CLOUD,
    APP_DISABLED,
];

/// Codes that refuse this credential but not the next one: another
/// certificate or federated credential (or the one a reload replaced) may
/// be accepted.
const CREDENTIAL_REFUSED: [u32; 7] = [
    CERTIFICATE_NOT_REGISTERED,
    CERTIFICATE_INVALID[1],
    ASSERTION_APP_MISMATCH,
    FEDERATED_NO_MATCH,
    FEDERATED_ISSUER,
    FEDERATED_AUDIENCE,
    FEDERATED_SIGNATURE,
];

/// Whether a refusal with `codes` is about the tenant (shared with the
/// fleet), not about this host.
pub fn tenant_wide(codes: &[u32]) -> bool {
    codes.iter().any(|c| TENANT_WIDE.contains(c))
}

/// Whether `codes` refuse the credential that signed, not the request.
pub fn credential_refused(codes: &[u32]) -> bool {
    codes.iter().any(|c| CREDENTIAL_REFUSED.contains(c))
}

/// Whether `codes` refuse the assertion's time range (sign afresh).
pub fn assertion_time(codes: &[u32]) -> bool {
    codes.contains(&ASSERTION_TIME)
}

/// What `codes` say about the tenant's admin consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSignal {
    /// Not consented (or an unknown tenant).
    Missing,
    /// The app is disabled in the tenant.
    Disabled,
}

/// What `codes` say about consent; `None` when they say nothing.
pub fn consent(codes: &[u32]) -> Option<ConsentSignal> {
    if codes
        .iter()
        .any(|c| matches!(*c, APP_NOT_FOUND | CONSENT_MISSING))
    {
        Some(ConsentSignal::Missing)
    } else if codes.contains(&APP_DISABLED) {
        Some(ConsentSignal::Disabled)
    } else {
        None
    }
}

/// What an operator does about an AADSTS code.
pub fn remedy(code: u32) -> Option<&'static str> {
    Some(match code {
        APP_NOT_FOUND => "the tenant has not granted admin consent to this app (or the tenant id is wrong): send its global admin the URL from `tokenbroker consent-url --tenant <tenant>`",
        CONSENT_MISSING => "consent is missing: have the tenant's global admin grant admin consent (`tokenbroker consent-url`)",
        TENANT_NOT_FOUND => "the tenant does not exist: fix the tenant id or domain",
        OTHER_CLOUD => "the tenant is in another national cloud: set app.cloud accordingly",
        APP_DISABLED => "the app is disabled in this tenant: ask the tenant's admin to enable it",
        CERTIFICATE_NOT_REGISTERED => "the certificate is not registered on the app registration: upload it under Certificates & secrets (check the thumbprint with `tokenbroker cert inspect`)",
        ASSERTION_TIME => "the assertion's time range was refused: check this host's clock (NTP)",
        ASSERTION_APP_MISMATCH => "the credential belongs to another app registration than app.client_id: use this app's certificate, or fix app.client_id",
        c if CERTIFICATE_INVALID.contains(&c) => "the certificate is expired, not yet valid or revoked: rotate it (`tokenbroker cert new`, upload, configure)",
        FEDERATED_NO_MATCH => "no federated identity credential on the app matches the token's issuer and subject: add one (App registrations > your app > Certificates & secrets > Federated credentials) for the issuer and subject Entra names",
        FEDERATED_ISSUER | FEDERATED_SIGNATURE => "the federated token's issuer or signature is not one the app trusts: check the federated identity credential's issuer",
        FEDERATED_AUDIENCE => "the federated token's audience is not api://AzureADTokenExchange: fix the token's audience (the projected token's audience, or the managed identity's resource)",
        CONDITIONAL_ACCESS => "Conditional Access in the tenant blocks the app: ask the tenant's admin to exclude it",
        REQUEST_LOOP => "Entra detected a request loop: something is not caching tokens",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_refusals_are_shared_and_host_refusals_are_not() {
        for code in [
            APP_NOT_FOUND,
            CONSENT_MISSING,
            TENANT_NOT_FOUND,
            OTHER_CLOUD,
            APP_DISABLED,
        ] {
            assert!(tenant_wide(&[code]), "{code}");
        }
        for code in [
            CERTIFICATE_NOT_REGISTERED,
            ASSERTION_TIME,
            CONDITIONAL_ACCESS,
            FEDERATED_NO_MATCH,
        ] {
            assert!(!tenant_wide(&[code]), "{code}");
        }
        assert!(tenant_wide(&[50_000, APP_NOT_FOUND]));
        assert!(!tenant_wide(&[]));
    }

    #[test]
    fn consent_follows_the_codes() {
        assert_eq!(consent(&[APP_NOT_FOUND]), Some(ConsentSignal::Missing));
        assert_eq!(consent(&[CONSENT_MISSING]), Some(ConsentSignal::Missing));
        assert_eq!(consent(&[APP_DISABLED]), Some(ConsentSignal::Disabled));
        assert_eq!(consent(&[CERTIFICATE_NOT_REGISTERED]), None);
    }

    #[test]
    fn every_named_code_has_a_remedy() {
        for code in TENANT_WIDE
            .iter()
            .chain(&CREDENTIAL_REFUSED)
            .chain(&CERTIFICATE_INVALID)
            .chain(&[ASSERTION_TIME, CONDITIONAL_ACCESS, REQUEST_LOOP])
        {
            assert!(remedy(*code).is_some(), "{code}");
        }
        assert_eq!(remedy(1), None);
        assert!(credential_refused(&[FEDERATED_AUDIENCE]));
        assert!(assertion_time(&[ASSERTION_TIME]));
    }
}

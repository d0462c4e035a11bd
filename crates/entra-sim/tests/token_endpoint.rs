//! The simulator as another project would use it: a certificate registered,
//! a client assertion signed by hand, a raw HTTP POST to the token endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::{Fault, SimulatedAuthority};
use serde_json::Value;

mod common;

use common::{assertion, credential, request};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

#[tokio::test]
async fn a_registered_certificate_gets_a_signed_token_for_a_consented_tenant() {
    let sim = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
    let (key, cert) = credential();
    sim.register_certificate(&cert).unwrap();
    let tid = sim.consent("contoso.onmicrosoft.com");
    let jwt = assertion(
        CLIENT_ID,
        &key,
        &cert,
        &sim.token_url("contoso.onmicrosoft.com"),
    );
    let (status, body) = request(&sim, CLIENT_ID, "contoso.onmicrosoft.com", &jwt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sim.token_signing_key())
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["tid"], tid.as_str());
    assert_eq!(sim.requests("contoso.onmicrosoft.com"), 1);
}

#[tokio::test]
async fn it_refuses_as_entra_does() {
    let sim = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
    let (key, cert) = credential();
    sim.add_unconsented_tenant("fabrikam.com");
    sim.consent("contoso.com");
    // Not registered yet: AADSTS700027.
    let jwt = assertion(CLIENT_ID, &key, &cert, &sim.token_url("contoso.com"));
    let (status, body) = request(&sim, CLIENT_ID, "contoso.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700_027))
    );
    sim.register_certificate(&cert).unwrap();
    // No consent: AADSTS700016.
    let jwt = assertion(CLIENT_ID, &key, &cert, &sim.token_url("fabrikam.com"));
    let (status, body) = request(&sim, CLIENT_ID, "fabrikam.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(700_016))
    );
    // An assertion for another tenant's endpoint: the audience is wrong.
    let jwt = assertion(CLIENT_ID, &key, &cert, &sim.token_url("fabrikam.com"));
    let (status, body) = request(&sim, CLIENT_ID, "contoso.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700_212))
    );
    assert_eq!(sim.refusals().len(), 3);
    // Injected faults come first, then normal service.
    sim.push_fault(Fault::Throttle(30), 1);
    let jwt = assertion(CLIENT_ID, &key, &cert, &sim.token_url("contoso.com"));
    let (status, _) = request(&sim, CLIENT_ID, "contoso.com", &jwt).await;
    assert_eq!(status, 429);
    let (status, _) = request(&sim, CLIENT_ID, "contoso.com", &jwt).await;
    assert_eq!(status, 200);
}

//! The simulator as another project would use it: a certificate registered,
//! a client assertion signed by hand, a raw HTTP POST to the token endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::{Fault, SimulatedAuthority};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// An RSA key and a self-signed certificate for it (DER).
fn credential() -> (RsaKeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sim.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pair = RsaKeyPair::from_pkcs8(&key.serialize_der()).unwrap();
    (pair, cert.der().to_vec())
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// A PS256 client assertion for `aud`, as MSAL makes one.
fn assertion(key: &RsaKeyPair, cert_der: &[u8], aud: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let thumbprint = URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der).as_ref());
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint});
    let claims = json!({"aud": aud, "iss": CLIENT_ID, "sub": CLIENT_ID,
        "jti": "6f1c0a8e-0000-4000-8000-000000000001", "nbf": now, "iat": now, "exp": now + 600});
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PSS_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// POSTs the client-credentials form for `tenant`; returns status and JSON body.
async fn request(sim: &SimulatedAuthority, tenant: &str, jwt: &str) -> (u16, Value) {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", CLIENT_ID)
        .append_pair("scope", "https://graph.microsoft.com/.default")
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", jwt)
        .append_pair("grant_type", "client_credentials")
        .finish();
    let addr = sim.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /{tenant}/oauth2/v2.0/token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(form.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn a_registered_certificate_gets_a_signed_token_for_a_consented_tenant() {
    let sim = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
    let (key, cert) = credential();
    sim.register_certificate(&cert).unwrap();
    let tid = sim.consent("contoso.onmicrosoft.com");
    let jwt = assertion(&key, &cert, &sim.token_url("contoso.onmicrosoft.com"));
    let (status, body) = request(&sim, "contoso.onmicrosoft.com", &jwt).await;
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
    let jwt = assertion(&key, &cert, &sim.token_url("contoso.com"));
    let (status, body) = request(&sim, "contoso.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700_027))
    );
    sim.register_certificate(&cert).unwrap();
    // No consent: AADSTS700016.
    let jwt = assertion(&key, &cert, &sim.token_url("fabrikam.com"));
    let (status, body) = request(&sim, "fabrikam.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(700_016))
    );
    // An assertion for another tenant's endpoint: the audience is wrong.
    let jwt = assertion(&key, &cert, &sim.token_url("fabrikam.com"));
    let (status, body) = request(&sim, "contoso.com", &jwt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (401, Some(700_212))
    );
    assert_eq!(sim.refusals().len(), 3);
    // Injected faults come first, then normal service.
    sim.push_fault(Fault::Throttle(30), 1);
    let jwt = assertion(&key, &cert, &sim.token_url("contoso.com"));
    let (status, _) = request(&sim, "contoso.com", &jwt).await;
    assert_eq!(status, 429);
    let (status, _) = request(&sim, "contoso.com", &jwt).await;
    assert_eq!(status, 200);
}

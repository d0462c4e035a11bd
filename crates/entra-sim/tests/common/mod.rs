//! What the token-endpoint tests share: a credential, a client assertion
//! as MSAL makes one, and the client-credentials request.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::signature::RsaKeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::SimulatedAuthority;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An RSA key and a self-signed certificate for it (DER).
pub fn credential() -> (RsaKeyPair, Vec<u8>) {
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

/// A PS256 client assertion of `client_id` for `aud`, as MSAL makes one.
pub fn assertion(client_id: &str, key: &RsaKeyPair, cert_der: &[u8], aud: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let thumbprint = URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der).as_ref());
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint});
    let claims = json!({"aud": aud, "iss": client_id, "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 600});
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

/// POSTs the client-credentials form of `client_id` for `tenant`; returns
/// status and JSON body.
pub async fn request(
    sim: &SimulatedAuthority,
    client_id: &str,
    tenant: &str,
    jwt: &str,
) -> (u16, Value) {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
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

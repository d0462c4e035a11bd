//! The credential file loader: a certificate file (PEM, DER or PFX) and a
//! key file (PKCS#8, PKCS#1, encrypted PKCS#8), as bytes. The first two
//! bytes split the input between them.

pub fn run(data: &[u8]) {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
    let (certificate, key) = rest.split_at(split);
    let _ = tokenbroker::credentials::Credential::from_pem(
        certificate,
        key,
        std::time::SystemTime::now(),
    );
}

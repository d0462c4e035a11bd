//! `/v1/token` and `/msi/token` query strings, then the tenant and resource
//! they name through the access policy (what goes into the token URL).

use std::sync::OnceLock;
use tokenbroker::access::Policy;
use tokenbroker::config::Config;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let text = "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
                    [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";
        match Config::parse(text, std::path::Path::new("fuzz.toml")) {
            Ok(config) => Policy::new(&config),
            Err(e) => panic!("the fuzz configuration is valid: {e}"),
        }
    })
}

pub fn run(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    for msi in [false, true] {
        if let Ok(asked) = tokenbroker::server::query::token_query(&query, msi, 4096) {
            if let Some(tenant) = asked.tenant.as_deref() {
                if let Ok(target) = policy().target(tenant, asked.resource.as_deref(), None) {
                    // An accepted tenant id is one URL path segment.
                    let id = target.tenant.id.as_str();
                    assert!(!id.contains('/') && !id.contains('?') && !id.contains('#'));
                }
            }
        }
    }
}

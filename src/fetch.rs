//! Upstream answers read whole but bounded: Entra's token endpoint and a
//! managed-identity endpoint both answer small JSON bodies, and neither may
//! make the broker hold more than the bound, however long the body it
//! sends (a broken proxy, a hostile endpoint).

/// Why an answer's body could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the bound arrived; reading stopped there.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed while the body was read.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// Reads `response`'s body chunk by chunk, refusing it as soon as it
/// passes `limit` bytes.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

//! `POST /{version}/$batch`: the steps parsed and checked as Graph checks
//! them, run in order through the routes with the batch's token, and their
//! answers in a batch's shape.

use super::reply::{error, error_body, ok, Ids, Reply, ODATA_JSON, WWW_AUTHENTICATE};
use super::request::{json_body, segments, Call};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

const MAX_BATCH: usize = 20;

/// `POST /{version}/$batch`: each step runs through [`route`] with the
/// batch's token, in order; `dependsOn` a failed step gives 424.
/// `run` routes each step (the router passes itself, so this module does
/// not reach back up into it).
pub(super) fn batch(call: &Call<'_>, run: fn(&Call<'_>) -> Reply) -> Reply {
    let input = match json_body(call) {
        Ok(map) => map,
        Err(reply) => return reply,
    };
    let Some(Value::Array(steps)) = input.get("requests") else {
        return error(
            400,
            "BadRequest",
            "Invalid batch payload format: a 'requests' array is expected.",
        );
    };
    if steps.is_empty() {
        return error(
            400,
            "BadRequest",
            "Invalid batch payload format: no requests.",
        );
    }
    if steps.len() > MAX_BATCH {
        return error(
            400,
            "BadRequest",
            format!("Number of batch request steps exceeds the maximum of {MAX_BATCH}."),
        );
    }
    let mut parsed = Vec::with_capacity(steps.len());
    for step in steps {
        match parse_step(step, &parsed) {
            Ok(step) => parsed.push(step),
            Err(reply) => return reply,
        }
    }
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::with_capacity(parsed.len());
    for step in &parsed {
        let ids = Ids::new(step.client_request_id.clone());
        let reply = if step
            .depends_on
            .iter()
            .any(|d| statuses.get(d).is_some_and(|s| *s >= 400))
        {
            error(
                424,
                "FailedDependency",
                "A request this request depends on failed.",
            )
        } else {
            run_step(call, step, run)
        };
        let (status, rendered) = step_response(&step.id, reply, &ids);
        statuses.insert(step.id.clone(), status);
        responses.push(rendered);
    }
    ok(200, json!({"responses": responses}))
}

struct Step {
    id: String,
    method: String,
    url: String,
    client_request_id: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    depends_on: Vec<String>,
}

fn parse_step(step: &Value, earlier: &[Step]) -> Result<Step, Reply> {
    let bad = |message: String| error(400, "BadRequest", message);
    let Some(id) = step["id"].as_str().filter(|id| !id.is_empty()) else {
        return Err(bad(
            "Every batch request needs a non-empty string 'id'.".into()
        ));
    };
    if earlier.iter().any(|s| s.id == id) {
        return Err(bad(format!(
            "Batch request ids must be unique: '{id}' appears more than once."
        )));
    }
    let Some(method) = step["method"].as_str().filter(|m| !m.is_empty()) else {
        return Err(bad(format!("Batch request '{id}' has no 'method'.")));
    };
    let Some(url) = step["url"].as_str().filter(|u| !u.is_empty()) else {
        return Err(bad(format!("Batch request '{id}' has no 'url'.")));
    };
    if url.contains("://") {
        return Err(bad(format!(
            "Batch request '{id}' has an absolute url; a url relative to the version is expected."
        )));
    }
    let headers = match &step["headers"] {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        _ => {
            return Err(bad(format!(
                "The headers of batch request '{id}' are not an object."
            )))
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let body = match &step["body"] {
        Value::Null => Vec::new(),
        body => {
            if content_type.is_none() {
                return Err(bad(format!(
                    "Write request id : {id} does not contain Content-Type header or body."
                )));
            }
            body.to_string().into_bytes()
        }
    };
    let depends_on = match &step["dependsOn"] {
        Value::Null => Vec::new(),
        Value::Array(ids) => {
            let mut out = Vec::new();
            for dep in ids {
                match dep.as_str() {
                    Some(dep) if earlier.iter().any(|s| s.id == dep) => out.push(dep.to_owned()),
                    _ => {
                        return Err(bad(format!(
                        "Batch request '{id}' depends on {dep}, which is not an earlier request."
                    )))
                    }
                }
            }
            out
        }
        _ => {
            return Err(bad(format!(
                "The dependsOn of batch request '{id}' is not an array."
            )))
        }
    };
    Ok(Step {
        id: id.to_owned(),
        method: method.to_ascii_uppercase(),
        url: url.to_owned(),
        client_request_id: header("client-request-id"),
        content_type,
        body,
        depends_on,
    })
}

fn run_step(call: &Call<'_>, step: &Step, run: fn(&Call<'_>) -> Reply) -> Reply {
    let (path, query) = match step.url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (step.url.as_str(), None),
    };
    let segments = match segments(path) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    run(&Call {
        shared: call.shared,
        version: call.version,
        token: call.token,
        method: &step.method,
        segments: &segments,
        query,
        content_type: step.content_type.as_deref(),
        body: &step.body,
        in_batch: true,
    })
}

/// A step's answer as a batch carries it (header names as Graph writes them).
fn step_response(id: &str, reply: Reply, ids: &Ids) -> (u16, Value) {
    let mut headers = Map::new();
    let (status, body) = match reply {
        Reply::Json {
            status,
            body,
            headers: extra,
        } => {
            headers.insert("Content-Type".into(), ODATA_JSON.into());
            for (name, value) in extra {
                headers.insert(name.into(), value.into());
            }
            (status, Some(body))
        }
        Reply::Error {
            status,
            code,
            message,
            headers: extra,
        } => {
            headers.insert("Content-Type".into(), "application/json".into());
            for (name, value) in extra {
                headers.insert(name.into(), value.into());
            }
            if status == 401 {
                headers.insert("WWW-Authenticate".into(), WWW_AUTHENTICATE.into());
            }
            (status, Some(error_body(code, &message, ids)))
        }
        Reply::Empty { status } => (status, None),
        // Refused in a batch before it gets here.
        Reply::Value { .. } => (500, None),
    };
    headers.insert("request-id".into(), ids.request.clone().into());
    headers.insert("client-request-id".into(), ids.client().into());
    let mut out = json!({"id": id, "status": status, "headers": headers});
    if let Some(body) = body {
        out["body"] = body;
    }
    (status, out)
}

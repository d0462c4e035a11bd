//! What the stand-in holds: the tenants' users, their mailboxes and sent
//! mail, the test's settings, and the synthesised content of messages.

use super::SeenRequest;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Folder {
    Inbox,
    Drafts,
}

#[derive(Debug)]
pub(super) struct Message {
    pub(super) folder: Folder,
    pub(super) json: Value,
}

#[derive(Debug)]
pub(super) struct User {
    /// Lower-case tenant GUID.
    pub(super) tenant: String,
    pub(super) id: String,
    pub(super) upn: String,
    pub(super) messages: Vec<Message>,
    pub(super) sent: Vec<Value>,
}

impl User {
    pub(super) fn json(&self) -> Value {
        let local = self.upn.split('@').next().unwrap_or_default();
        let mut name: Vec<char> = local.chars().collect();
        if let Some(first) = name.first_mut() {
            *first = first.to_ascii_uppercase();
        }
        let name: String = name.into_iter().collect();
        json!({
            "id": self.id,
            "userPrincipalName": self.upn,
            "displayName": name,
            "mail": self.upn,
            "givenName": name,
            "surname": null,
            "jobTitle": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "businessPhones": [],
        })
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) users: Vec<User>,
    pub(super) value_size: usize,
    pub(super) revoked_at: Option<u64>,
    pub(super) faults: VecDeque<(u16, Option<u64>)>,
    pub(super) requests: Vec<SeenRequest>,
    pub(super) link_base: String,
}

impl State {
    /// A user of `tenant` by object id or UPN, in any case.
    pub(super) fn user(&self, tenant: &str, key: &str) -> Option<&User> {
        self.users.iter().find(|u| matches(u, tenant, key))
    }

    pub(super) fn user_mut(&mut self, tenant: &str, key: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| matches(u, tenant, key))
    }
}

fn matches(user: &User, tenant: &str, key: &str) -> bool {
    user.tenant.eq_ignore_ascii_case(tenant)
        && (user.id.eq_ignore_ascii_case(key) || user.upn.eq_ignore_ascii_case(key))
}

/// The `$value` (MIME) content of `message_id` cut to `size` bytes: a
/// header naming the message, then one line repeated. What a download
/// must equal, byte for byte.
pub fn value_bytes(message_id: &str, size: usize) -> Vec<u8> {
    ValuePattern::new(message_id).fill(0, size)
}

pub(super) struct ValuePattern {
    head: Vec<u8>,
    line: Vec<u8>,
}

impl ValuePattern {
    pub(super) fn new(message_id: &str) -> ValuePattern {
        ValuePattern {
            head: format!(
                "Message-ID: <{message_id}@entra-sim.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            )
            .into_bytes(),
            line: format!("Body of message {message_id}, one line repeated to size.\r\n")
                .into_bytes(),
        }
    }

    /// Bytes `offset..offset + len` of the endless content.
    pub(super) fn fill(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while out.len() < len {
            let want = len - out.len();
            let piece = if at < self.head.len() {
                &self.head[at..]
            } else {
                &self.line[(at - self.head.len()) % self.line.len()..]
            };
            let take = piece.len().min(want);
            out.extend_from_slice(&piece[..take]);
            at += take;
        }
        out
    }
}

pub(super) fn folder_id(folder: Folder) -> String {
    let name = match folder {
        Folder::Inbox => "inbox",
        Folder::Drafts => "drafts",
    };
    format!("AAMkAG{}", URL_SAFE_NO_PAD.encode(name))
}

/// An id like Exchange's: URL-safe base64 that may end in `=`.
pub(super) fn message_id() -> String {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.push(0x46);
    format!("AAMkAG{}", URL_SAFE.encode(bytes))
}

/// Message N of a mailbox, received N minutes into 2024.
pub(super) fn inbox_message(n: usize, upn: &str) -> Value {
    let received = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_704_067_200 + 60 * u64::try_from(n).unwrap_or(0));
    let received = humantime::format_rfc3339_seconds(received).to_string();
    let id = message_id();
    let text = format!("Body of message {n}.");
    json!({
        "@odata.etag": format!("W/\"{}\"", uuid::Uuid::new_v4().simple()),
        "id": id,
        "createdDateTime": received,
        "lastModifiedDateTime": received,
        "changeKey": uuid::Uuid::new_v4().simple().to_string(),
        "categories": [],
        "receivedDateTime": received,
        "sentDateTime": received,
        "hasAttachments": false,
        "internetMessageId": format!("<message-{n}.{}@fabrikam.example>", uuid::Uuid::new_v4().simple()),
        "subject": format!("Message {n}"),
        "bodyPreview": text,
        "importance": "normal",
        "parentFolderId": folder_id(Folder::Inbox),
        "conversationId": uuid::Uuid::new_v4().simple().to_string(),
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": false,
        "isDraft": false,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={id}"),
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": text},
        "sender": {"emailAddress": {"name": "Sender", "address": "sender@fabrikam.example"}},
        "from": {"emailAddress": {"name": "Sender", "address": "sender@fabrikam.example"}},
        "toRecipients": [{"emailAddress": {"name": upn, "address": upn}}],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    })
}

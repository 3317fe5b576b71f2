//! API errors, rendered as `metav1.Status` with the code, reason and message the real API server uses.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::store::StoreError;

/// An error answer of the API server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `pods "x" not found`.
    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found")).with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    /// An unknown path or resource.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    pub fn conflict(qualified: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    pub fn stale(qualified: &str, name: &str) -> Self {
        Self::conflict(
            qualified,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with field causes, e.g. `Pod "X" is invalid: metadata.name: Invalid value: ...`.
    pub fn invalid(kind: &str, name: &str, group: &str, causes: &[(String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = if text.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", text[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", text.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 429 with an optional `DisruptionBudget` cause, as the eviction subresource returns. Like the
    /// real server, a `Retry-After` header is sent only when `retry_after` is above zero (clients
    /// such as client-go retry those on their own).
    pub fn too_many_requests(
        message: impl Into<String>,
        retry_after: u32,
        cause: Option<String>,
    ) -> Self {
        let mut details = json!({});
        if retry_after > 0 {
            details["retryAfterSeconds"] = json!(retry_after);
        }
        if let Some(c) = cause {
            details["causes"] = json!([{"reason": "DisruptionBudget", "message": c}]);
        }
        Self::new(429, "TooManyRequests", message).with_details(details)
    }

    /// An error injected by a fault (see [`crate::faults`]): 429 asks clients to retry after 1 s.
    pub fn injected(code: u16) -> Self {
        match code {
            429 => Self::new(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later (injected fault)")
                .with_details(json!({"retryAfterSeconds": 1})),
            503 => Self::new(503, "ServiceUnavailable", "the server is currently unable to handle the request (injected fault)"),
            _ => Self::internal("an error on the server (\"injected fault\") has prevented the request from succeeding"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Maps a storage error for an object of `qualified` named `name`.
    pub fn from_store(err: StoreError, qualified: &str, name: &str) -> Self {
        match err {
            StoreError::NotFound(_) => Self::not_found(qualified, name),
            StoreError::AlreadyExists(_) => Self::already_exists(qualified, name),
            StoreError::Conflict { .. } => Self::stale(qualified, name),
            StoreError::Expired { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::Internal(m) => Self::internal(m),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

fn kind_of(qualified: &str) -> &str {
    qualified.split('.').next().unwrap_or(qualified)
}

fn group_of(qualified: &str) -> &str {
    qualified.split_once('.').map(|(_, g)| g).unwrap_or("")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self
            .details
            .as_ref()
            .and_then(|d| d.get("retryAfterSeconds"))
            .and_then(Value::as_u64)
            && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        resp
    }
}

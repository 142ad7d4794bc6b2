//! Problem documents (RFC 9457): the one place where errors become HTTP.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use warehouse::{Refusal, ShortLine, WarehouseError};

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answer. `code` is one of the fixed codes of API.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub lines: Option<Vec<ShortLine>>,
    pub retry_after_seconds: Option<u32>,
}

/// The problem document as served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(example = "urn:stockroom:problem:insufficient_stock")]
    pub problem_type: String,
    #[schema(example = "Insufficient stock")]
    pub title: &'static str,
    #[schema(example = 409)]
    pub status: u16,
    /// One of `validation_failed` (422), `malformed_request` (400), `unauthorized` (401),
    /// `forbidden` (403), `not_found` (404), `method_not_allowed` (405), `conflict`,
    /// `insufficient_stock`, `invalid_state`, `capacity_exceeded` (409),
    /// `idempotency_key_reused` (422), `payload_too_large` (413), `unavailable` (503),
    /// `internal` (500).
    #[schema(example = "insufficient_stock")]
    pub code: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<ShortLine>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: Vec::new(), lines: None, retry_after_seconds: None }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation_many(vec![FieldError { field: field.into(), message: message.into() }])
    }

    pub fn validation_many(errors: Vec<FieldError>) -> Self {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail) }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this API key lacks the scope {scope}"))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed on this path")
    }

    pub fn idempotency_key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used before with a different request",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self { retry_after_seconds: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail) }
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred; it has been logged")
    }

    pub fn is_refusal(&self) -> bool {
        self.status.is_client_error()
    }

    fn title(&self) -> &'static str {
        match self.code {
            "validation_failed" => "Validation failed",
            "malformed_request" => "Malformed request",
            "method_not_allowed" => "Method not allowed",
            "unauthorized" => "Unauthorized",
            "forbidden" => "Forbidden",
            "not_found" => "Not found",
            "conflict" => "Conflict",
            "insufficient_stock" => "Insufficient stock",
            "invalid_state" => "Invalid state",
            "capacity_exceeded" => "Capacity exceeded",
            "idempotency_key_reused" => "Idempotency key reused",
            "payload_too_large" => "Payload too large",
            "unavailable" => "Service unavailable",
            _ => "Internal error",
        }
    }

    pub fn to_problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:stockroom:problem:{}", self.code),
            title: self.title(),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.clone(),
            errors: self.errors.clone(),
            lines: self.lines.clone(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&self.to_problem()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // RFC 9110: a 401 names the scheme the client must use.
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<WarehouseError> for ApiError {
    fn from(error: WarehouseError) -> Self {
        // Lasting refusals render through `Refusal`, so a fresh refusal and its stored replay
        // (an idempotency key's answer) are the same document.
        if let Some(refusal) = error.refusal() {
            return ApiError::from(refusal);
        }
        match error {
            WarehouseError::Contention(what) => ApiError::unavailable(format!("{what} is changing too fast; retry")),
            WarehouseError::Overloaded => {
                ApiError::unavailable("too many reservation requests are waiting; retry shortly")
            }
            WarehouseError::ShuttingDown => {
                ApiError::unavailable("the server is shutting down; retry on another instance")
            }
            WarehouseError::IdempotencyKeyReused => ApiError::idempotency_key_reused(),
            WarehouseError::Panicked => {
                tracing::error!("a batch panicked; its requests were answered with 500");
                ApiError::internal()
            }
            WarehouseError::Store(e) => ApiError::from(e),
            refusal => {
                tracing::error!(error = %refusal, "a refusal without its lasting form");
                ApiError::internal()
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound { what, key } => ApiError::not_found(format!("{what} {key} does not exist")),
            Refusal::Invalid { field, message } => ApiError::validation(field, message),
            Refusal::InvalidFields { errors } => ApiError::validation_many(
                errors.into_iter().map(|i| FieldError { field: i.field, message: i.message }).collect(),
            ),
            Refusal::Conflict { detail } => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            Refusal::InsufficientStock { lines } => {
                let detail = lines
                    .iter()
                    .map(|l| match (l.reason.as_deref(), &l.warehouse) {
                        (Some("warehouse_inactive"), Some(w)) => format!(
                            "{}: requested {}, available {}: warehouse {w} is inactive",
                            l.sku, l.requested, l.available
                        ),
                        _ => format!("{}: requested {}, available {}", l.sku, l.requested, l.available),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError { lines: Some(lines), ..ApiError::new(StatusCode::CONFLICT, "insufficient_stock", detail) }
            }
            Refusal::InvalidState { what, from, action } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("the {what} is {from} and cannot {action}"),
            ),
            Refusal::CapacityExceeded { detail } => ApiError::new(StatusCode::CONFLICT, "capacity_exceeded", detail),
        }
    }
}

impl From<catalog::CatalogError> for ApiError {
    fn from(error: catalog::CatalogError) -> Self {
        use catalog::CatalogError;
        match error {
            CatalogError::NotFound { what, key } => ApiError::not_found(format!("{what} {key} does not exist")),
            CatalogError::Invalid(problems) => ApiError::validation_many(
                problems.into_iter().map(|p| FieldError { field: p.field, message: p.message }).collect(),
            ),
            CatalogError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            CatalogError::Unavailable(detail) => ApiError::unavailable(detail),
            CatalogError::SearchIndex(detail) => {
                tracing::error!(%detail, "search index failed");
                ApiError::internal()
            }
            CatalogError::Store(e) => ApiError::from(e),
            CatalogError::Warehouse(e) => ApiError::from(e),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(error: store::StoreError) -> Self {
        if error.is_retryable() {
            tracing::warn!(error = %error, "retryable database conflict");
            return ApiError::unavailable("the database is busy; retry");
        }
        if error.is_unreachable() {
            tracing::error!(error = %error, "database unavailable");
            return ApiError::unavailable("the database is unavailable; retry");
        }
        if let store::StoreError::Corrupt(what) = &error {
            metrics::counter!("stockroom_corrupt_data_total").increment(1);
            tracing::error!(corrupt = %what, "stored data does not parse");
            return ApiError::internal();
        }
        tracing::error!(error = ?error, "database error");
        ApiError::internal()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(store::StoreError::Database(error))
    }
}

impl From<events::EventsError> for ApiError {
    fn from(error: events::EventsError) -> Self {
        use events::EventsError;
        match error {
            EventsError::NotFound { what, key } => ApiError::not_found(format!("{what} {key} does not exist")),
            EventsError::Invalid(problems) => ApiError::validation_many(
                problems.into_iter().map(|p| FieldError { field: p.field, message: p.message }).collect(),
            ),
            EventsError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            EventsError::Unavailable(detail) => ApiError::unavailable(detail),
            EventsError::Store(e) => ApiError::from(e),
        }
    }
}

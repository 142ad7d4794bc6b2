//! Request parsing at the edge: JSON bodies and query strings into typed requests, with
//! every failure a problem document naming the field.

use crate::error::ApiError;
use crate::error::FieldError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use kernel::limits::REQUEST_BODY_BYTES_MAX;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// A JSON body: 400 `malformed_request` if it is not JSON (or not declared as JSON), 422
/// `validation_failed` naming the field if it has the wrong shape. Keeps the raw bytes for
/// idempotency fingerprints.
#[derive(Debug)]
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::malformed("the body must be JSON with Content-Type: application/json"));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(REQUEST_BODY_BYTES_MAX)
            } else {
                ApiError::malformed(rejection.body_text())
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

/// Parses JSON, telling syntax errors (400) from shape errors (422, with the field's path).
/// Every request body is a JSON object: an array is refused even where it would fill a struct
/// whose members are all optional (serde reads structs from arrays too).
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let opens_object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !opens_object && serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok() {
        return Err(ApiError::validation("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde_json files a number too large for any numeric type (`1e400`) under syntax
        // errors, but the JSON is valid: it is a value out of range for the field.
        let out_of_range = inner.to_string().starts_with("number out of range");
        match inner.classify() {
            serde_json::error::Category::Syntax if out_of_range => {
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::validation(field, "number out of range")
            }
            // A shape error can surface before a syntax error later in the body (an unknown
            // field stops deserializing early): the body must be valid JSON to be a 422.
            serde_json::error::Category::Data
                if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) =>
            {
                ApiError::malformed(format!("the body is not valid JSON: {}", without_position(&syntax.to_string())))
            }
            serde_json::error::Category::Data => {
                let message = without_position(&inner.to_string());
                let field = match missing_field(&message).or_else(|| unknown_field(&message)) {
                    Some(name) if path == "." => name.to_owned(),
                    Some(name) if path == name || path.ends_with(&format!(".{name}")) => path,
                    Some(name) => format!("{path}.{name}"),
                    None if path == "." => "body".to_owned(),
                    None => path,
                };
                ApiError::validation(field, message)
            }
            _ => ApiError::malformed(format!("the body is not valid JSON: {}", without_position(&inner.to_string()))),
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::malformed(format!("the body is not valid JSON: {}", without_position(&e.to_string())))
    })?;
    Ok(value)
}

fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The name in serde's "unknown field `name`, expected ..." (request types refuse unknown
/// fields, so a typo is never silently ignored).
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// The query string as a map; each route parses its own parameters so errors name them.
#[derive(Debug, Default)]
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::malformed(format!("the query string is malformed: {e}")))?;
        let mut map = HashMap::new();
        for (key, value) in pairs {
            if map.insert(key.clone(), value).is_some() {
                return Err(ApiError::validation(key, "is given more than once"));
            }
        }
        Ok(Self(map))
    }
}

impl QueryMap {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The parameter parsed as a code (SKU or warehouse), if present.
    pub fn code<C: std::str::FromStr<Err = kernel::CodeError>>(&self, key: &str) -> Result<Option<C>, ApiError> {
        self.get(key).map(|raw| raw.parse::<C>().map_err(|e| ApiError::validation(key, e.to_string()))).transpose()
    }

    pub fn page(&self) -> Result<kernel::PageRequest, ApiError> {
        kernel::PageRequest::parse(self.get("limit"), self.get("next")).map_err(|(f, m)| ApiError::validation(f, m))
    }

    /// Starts parsing a route's parameters: every parameter not in `allowed` is refused, by
    /// name, and the parsing methods of [`QueryParse`] gather every bad parameter, so that one
    /// 422 lists them all (call [`QueryParse::finish`] before using the values).
    pub fn only(&self, allowed: &[&str]) -> QueryParse<'_> {
        let mut unknown: Vec<&String> = self.0.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
        unknown.sort();
        let expected = if allowed.is_empty() {
            "this route takes no query parameters".to_owned()
        } else {
            format!("is not a parameter of this route (it takes {})", allowed.join(", "))
        };
        let errors = unknown
            .into_iter()
            .map(|name| crate::error::FieldError { field: name.clone(), message: expected.clone() })
            .collect();
        QueryParse { query: self, errors }
    }
}

/// A query being parsed: values come out of it as options, and every refusal is kept for
/// [`QueryParse::finish`].
#[derive(Debug)]
pub struct QueryParse<'a> {
    query: &'a QueryMap,
    errors: Vec<crate::error::FieldError>,
}

impl QueryParse<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.query.get(key)
    }

    /// Records a refusal of `field`.
    pub fn refuse(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(crate::error::FieldError { field: field.into(), message: message.into() });
    }

    /// Keeps the value of a check, recording its field errors.
    pub fn keep<T>(&mut self, checked: Result<T, ApiError>) -> Option<T> {
        checked.map_err(|e| self.errors.extend(e.errors)).ok()
    }

    /// The parameter parsed as a code (SKU or warehouse), if present and valid.
    pub fn code<C: std::str::FromStr<Err = kernel::CodeError>>(&mut self, key: &str) -> Option<C> {
        let parsed = self.query.code(key);
        self.keep(parsed).flatten()
    }

    /// `limit` and `next`, each checked on its own so both can be reported.
    pub fn page(&mut self) -> kernel::PageRequest {
        let limit = kernel::PageRequest::parse(self.get("limit"), None);
        let next = kernel::PageRequest::parse(None, self.get("next"));
        let mut page = kernel::PageRequest::parse(None, None).expect("the default page is valid");
        match limit {
            Ok(l) => page.limit = l.limit,
            Err((field, message)) => self.refuse(field, message),
        }
        match next {
            Ok(n) => page.after = n.after,
            Err((field, message)) => self.refuse(field, message),
        }
        page
    }

    /// Refuses `field` when it names a warehouse that does not exist: a filter with a typo is
    /// an error, not an empty answer.
    pub async fn require_warehouse(
        &mut self,
        pool: &sqlx::AnyPool,
        field: &str,
        code: Option<&kernel::WarehouseCode>,
    ) -> Result<(), ApiError> {
        if let Some(code) = code
            && !warehouse::site::warehouse_exists(pool, code).await?
        {
            self.refuse(field, format!("unknown warehouse {code}"))
        }
        Ok(())
    }

    /// Refuses `field` when it names an item that does not exist.
    pub async fn require_item(
        &mut self,
        pool: &sqlx::AnyPool,
        field: &str,
        sku: Option<&kernel::SkuCode>,
    ) -> Result<(), ApiError> {
        if let Some(sku) = sku {
            match warehouse::item::item_get(pool, sku).await {
                Ok(_) => {}
                Err(warehouse::WarehouseError::NotFound { .. }) => self.refuse(field, format!("unknown SKU {sku}")),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// 422 naming every refused parameter, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::validation_many(self.errors)) }
    }
}

/// For routes that take no query parameters: any parameter is refused by name (422), so
/// that `?dry_run=true` on a write is never silently ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        QueryMap::from_request_parts(parts, state).await?.only(&[]).finish()?;
        Ok(NoQuery)
    }
}

/// 422 with every field error: the request's own (`errors`) and, when there are any, also what
/// the database finds wrong with it (`check`, run in a read-only transaction and rolled back),
/// so one answer names every bad field. Without form errors it does nothing: the write path
/// runs the same database checks.
pub async fn finish_all<F>(
    state: &crate::AppState,
    mut errors: Vec<crate::error::FieldError>,
    check: F,
) -> Result<(), ApiError>
where
    F: for<'t> FnOnce(
        &'t mut store::Tx,
    ) -> futures::future::BoxFuture<'t, warehouse::Result<Vec<warehouse::FieldIssue>>>,
{
    if errors.is_empty() {
        return Ok(());
    }
    let mut tx = state.db.reader().begin().await?;
    let issues = check(&mut tx).await?;
    tx.rollback().await?;
    for issue in issues {
        // A field the form checks refused already is named once.
        if !errors.iter().any(|e| e.field == issue.field) {
            errors.push(crate::error::FieldError { field: issue.field, message: issue.message });
        }
    }
    Err(ApiError::validation_many(errors))
}

/// Checks free text: at most [`kernel::limits::TEXT_CHARS_MAX`] characters, and not blank when
/// required.
pub fn check_text(field: &str, value: &str, required: bool, errors: &mut Vec<crate::error::FieldError>) {
    let chars = value.chars().count();
    if value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        // PostgreSQL cannot store NUL in text, and no name or reference needs control characters.
        errors.push(crate::error::FieldError {
            field: field.to_owned(),
            message: "must not contain control characters".into(),
        });
    } else if required && value.trim().is_empty() {
        errors.push(crate::error::FieldError { field: field.to_owned(), message: "must not be empty".into() });
    } else if chars > kernel::limits::TEXT_CHARS_MAX {
        errors.push(crate::error::FieldError {
            field: field.to_owned(),
            message: format!("must be at most {} characters", kernel::limits::TEXT_CHARS_MAX),
        });
    }
}

/// Adds a field error to those a route gathers before answering.
pub fn problem(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError { field: field.into(), message: message.into() });
}

/// 422 naming every gathered field error, if there are any.
pub fn finish(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() { Ok(()) } else { Err(ApiError::validation_many(errors)) }
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value: JSON Merge Patch.
pub fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

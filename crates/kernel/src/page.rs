//! Pagination: `?limit=` and an opaque `next` cursor.
//!
//! A cursor wraps the sort key of the last row of a page (a `seq`, or a code) in hex, so
//! clients treat it as opaque and we can change what is inside without breaking them.

use crate::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use serde::Serialize;

/// A validated page request: rows strictly after `after` (a sort key), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

/// Why a page request was refused: the field and the message.
pub type PageError = (&'static str, String);

impl PageRequest {
    /// `limit` defaults to [`PAGE_SIZE_DEFAULT`] and must be 1 to [`PAGE_SIZE_MAX`];
    /// `next` is a cursor given out by an earlier page.
    pub fn parse(limit: Option<&str>, next: Option<&str>) -> Result<Self, PageError> {
        let limit = match limit {
            None => PAGE_SIZE_DEFAULT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(l) if (1..=PAGE_SIZE_MAX).contains(&l) => l,
                _ => {
                    return Err(("limit", format!("must be an integer from 1 to {PAGE_SIZE_MAX}")));
                }
            },
        };
        let after = match next {
            None | Some("") => None,
            Some(cursor) => {
                Some(decode_cursor(cursor).ok_or(("next", "is not a cursor given out by this API".to_owned()))?)
            }
        };
        Ok(Self { after, limit })
    }

    /// The position after which a `seq`-ordered page starts (0: from the beginning).
    pub fn after_seq(&self) -> Result<i64, PageError> {
        match &self.after {
            None => Ok(0),
            Some(key) => {
                key.parse::<i64>().ok().filter(|s| *s >= 0).ok_or(("next", "is not a cursor for this list".to_owned()))
            }
        }
    }
}

/// A page of results with the cursor of the next page, `null` on the last one.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit` rows; `key` gives each row's sort key.
    pub fn from_rows(items: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let next = if items.len() as u32 >= limit { items.last().map(|last| encode_cursor(&key(last))) } else { None };
        Self { items, next }
    }
}

pub fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 256 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_checks_limit_and_cursor() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, PAGE_SIZE_DEFAULT);
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("1001"), None).is_err());
        assert!(PageRequest::parse(Some("ten"), None).is_err());
        let req = PageRequest::parse(None, Some(&encode_cursor("42"))).unwrap();
        assert_eq!(req.after_seq(), Ok(42));
        assert_eq!(PageRequest::parse(None, Some("zz")).unwrap_err().0, "next");
    }

    #[test]
    fn a_full_page_points_at_the_next_and_a_short_one_does_not() {
        let full = Page::from_rows(vec![1_i64, 2, 3], 3, |x| x.to_string());
        assert_eq!(decode_cursor(full.next.as_deref().unwrap()).as_deref(), Some("3"));
        let short = Page::from_rows(vec![1_i64], 3, |x| x.to_string());
        assert_eq!(short.next, None);
    }
}

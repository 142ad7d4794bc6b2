//! One way to speak two dialects: SQL text built at run time from static fragments.
//!
//! - [`Values`]: a multi-row `VALUES` list that owns its binds, for multi-row `INSERT`s and
//!   `UPDATE ... FROM (VALUES ...)`.
//! - [`Lock`]: row locking (`FOR UPDATE`, `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on
//!   SQLite, whose `BEGIN IMMEDIATE` transactions hold the one write lock already).
//!
//! Values are always bound as parameters; only placeholder lists are generated here.

use crate::Backend;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::query::QueryAs;

/// Row locking of a `SELECT`, spelled per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Lock the rows read until commit, waiting for other holders.
    ForUpdate,
    /// Lock the rows read until commit, skipping rows another transaction holds, so replicas
    /// share a queue of work.
    ForUpdateSkipLocked,
    /// Lock only the rows of this table alias of a join.
    ForUpdateOf(&'static str),
}

impl Lock {
    /// The clause to append to a `SELECT` on `backend` (with a leading space), or nothing.
    pub fn clause(self, backend: Backend) -> String {
        match (backend, self) {
            (Backend::Sqlite, _) => String::new(),
            (Backend::Postgres, Lock::ForUpdate) => " FOR UPDATE".into(),
            (Backend::Postgres, Lock::ForUpdateSkipLocked) => " FOR UPDATE SKIP LOCKED".into(),
            (Backend::Postgres, Lock::ForUpdateOf(alias)) => format!(" FOR UPDATE OF {alias}"),
        }
    }

    /// `select` with this lock on the backend of `conn`, as a query to bind and run.
    pub fn select(self, conn: &sqlx::AnyConnection, select: &str) -> Query<'static, sqlx::Any, AnyArguments> {
        dynamic(format!("{select}{}", self.clause(crate::db::backend_of(conn))))
    }
}

/// A flag as stored: 0 or 1 on both backends (sqlx's `Any` cannot decode SQLite booleans).
/// Rows decode it into a `bool` at the store boundary with
/// `#[sqlx(try_from = "store::sql::IntFlag")]`; any other value is a decode error, never a
/// guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct IntFlag(pub i64);

/// A stored flag that is neither 0 nor 1.
#[derive(Debug, thiserror::Error)]
#[error("a stored flag is {0}, not 0 or 1")]
pub struct NotAFlag(i64);

impl TryFrom<IntFlag> for bool {
    type Error = NotAFlag;

    fn try_from(flag: IntFlag) -> Result<Self, NotAFlag> {
        match flag.0 {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(NotAFlag(other)),
        }
    }
}

/// Binds every value onto a `Query` or a `QueryAs` (they share `bind` but no trait).
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for value in $binds {
            query = match value {
                SqlValue::Int(v) => query.bind(v),
                SqlValue::Text(v) => query.bind(v),
            };
        }
        query
    }};
}

/// A value bound by [`Values`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(Option<i64>),
    Text(Option<String>),
}

/// The `VALUES` rows of one statement, with their binds: the statement's only parameters, so
/// the placeholders cannot be numbered against other binds by mistake.
///
/// On SQLite the placeholders are anonymous `?`: SQLite looks a named parameter up by a
/// linear scan, and sqlx looks up every parameter of a statement, so thousands of `$N` cost
/// quadratic time (it was 70% of a bulk import's CPU). PostgreSQL needs `$N`.
#[derive(Debug)]
pub struct Values {
    backend: Backend,
    columns: usize,
    binds: Vec<SqlValue>,
}

/// One row being written into [`Values`].
#[derive(Debug)]
pub struct ValuesRow<'a> {
    values: &'a mut Values,
}

impl ValuesRow<'_> {
    fn push(self, value: SqlValue) -> Self {
        self.values.binds.push(value);
        self
    }
    pub fn int(self, value: i64) -> Self {
        self.push(SqlValue::Int(Some(value)))
    }
    pub fn opt_int(self, value: Option<i64>) -> Self {
        self.push(SqlValue::Int(value))
    }
    /// A flag, stored as 0/1 on both backends (see docs/architecture.md).
    pub fn flag(self, value: bool) -> Self {
        self.push(SqlValue::Int(Some(i64::from(value))))
    }
    pub fn text(self, value: impl Into<String>) -> Self {
        self.push(SqlValue::Text(Some(value.into())))
    }
    pub fn opt_text(self, value: Option<impl Into<String>>) -> Self {
        self.push(SqlValue::Text(value.map(Into::into)))
    }
}

impl Values {
    /// Rows of `columns` values for a statement on the backend of `conn`.
    pub fn new(conn: &sqlx::AnyConnection, columns: usize) -> Self {
        Self::for_backend(crate::db::backend_of(conn), columns)
    }

    pub fn for_backend(backend: Backend, columns: usize) -> Self {
        Self { backend, columns, binds: Vec::new() }
    }

    /// Starts a row; give it exactly `columns` values.
    pub fn row(&mut self) -> ValuesRow<'_> {
        ValuesRow { values: self }
    }

    fn rows(&self) -> usize {
        self.binds.len() / self.columns.max(1)
    }

    /// The placeholder list for the rows given so far.
    fn placeholders(&self) -> String {
        let rows = self.rows();
        match self.backend {
            Backend::Postgres => values_placeholders(rows, self.columns, 1),
            Backend::Sqlite => {
                let row = format!("({})", vec!["?"; self.columns].join(", "));
                vec![row; rows].join(", ")
            }
        }
    }

    /// `template` with `{values}` replaced by the rows, every value bound. The template must
    /// have no parameters of its own.
    ///
    /// # Panics
    /// When a row was given the wrong number of values, or the template has a parameter or
    /// no `{values}`: mistakes in the calling code, not in data.
    pub fn query(self, template: &str) -> Query<'static, sqlx::Any, AnyArguments> {
        let (sql, binds) = self.finish(template);
        bind_all!(dynamic(sql), binds)
    }

    /// [`query`](Self::query) decoding rows as `O`.
    pub fn query_as<O>(self, template: &str) -> QueryAs<'static, sqlx::Any, O, AnyArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let (sql, binds) = self.finish(template);
        bind_all!(sqlx::query_as::<_, O>(AssertSqlSafe(sql)), binds)
    }

    fn finish(self, template: &str) -> (String, Vec<SqlValue>) {
        assert!(
            self.columns > 0 && self.binds.len().is_multiple_of(self.columns) && !self.binds.is_empty(),
            "Values: {} binds for rows of {} columns",
            self.binds.len(),
            self.columns
        );
        assert!(template.contains("{values}"), "Values: the template has no {{values}}");
        assert!(!template.contains('$') && !template.contains('?'), "Values: the template binds parameters of its own");
        (template.replace("{values}", &self.placeholders()), self.binds)
    }
}

/// `($1, $2, $3), ($4, $5, $6)` for `rows` rows of `columns` columns, starting at `$first`.
pub fn values_placeholders(rows: usize, columns: usize, first: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    let mut n = first;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&n.to_string());
            n += 1;
        }
        out.push(')');
    }
    out
}

/// The largest chunk [`fixed_chunks`] makes: 256 rows of our widest row (12 columns) stay far
/// below either database's bind-parameter limit.
pub const FIXED_CHUNK_MAX: usize = 256;

/// Splits `items` into chunks whose lengths are powers of two (largest first, at most
/// [`FIXED_CHUNK_MAX`]): 38 rows are 32 + 4 + 2. A multi-row statement then has at most nine
/// texts, so its prepared form stays in the connection's statement cache instead of being
/// parsed again for every batch size (issue 13: a miss re-prepares hundreds of placeholders).
pub fn fixed_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = FIXED_CHUNK_MAX.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// The values of an `IN (...)` list padded to a power of two (at most 1,024, then a multiple of
/// 1,024) by repeating the last one, which changes nothing an `IN` matches: the query has few
/// distinct texts and stays in the statement cache. Bind them with
/// `list_placeholders(padded.len(), first)`.
pub fn padded_in_list<T: Clone>(values: &[T]) -> Vec<T> {
    const STEP: usize = 1_024;
    let len = values.len();
    let padded = if len <= STEP { len.next_power_of_two() } else { len.div_ceil(STEP) * STEP };
    let mut out = values.to_vec();
    if let Some(last) = values.last() {
        out.resize(padded, last.clone());
    }
    out
}

/// `$first, $first+1, ...` for an `IN (...)` list of `count` values.
pub fn list_placeholders(count: usize, first: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// A query whose text was assembled from static fragments and generated placeholders.
pub fn dynamic(sql: String) -> Query<'static, sqlx::Any, AnyArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_chunks_are_powers_of_two_largest_first_and_cover_every_item_once() {
        let items: Vec<usize> = (0..1_000).collect();
        for len in [0, 1, 2, 3, 38, 255, 256, 257, 1_000] {
            let sizes: Vec<usize> = fixed_chunks(&items[..len]).map(<[usize]>::len).collect();
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= FIXED_CHUNK_MAX), "{len}: {sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{len}: {sizes:?}");
            let joined: Vec<usize> = fixed_chunks(&items[..len]).flatten().copied().collect();
            assert_eq!(joined, items[..len]);
        }
        assert_eq!(fixed_chunks(&items[..38]).map(<[usize]>::len).collect::<Vec<_>>(), [32, 4, 2]);
    }

    #[test]
    fn in_lists_are_padded_with_their_last_value() {
        assert_eq!(padded_in_list(&[1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(padded_in_list(&[7]), [7]);
        assert!(padded_in_list::<i32>(&[]).is_empty());
        assert_eq!(padded_in_list(&vec![0; 1_025]).len(), 2_048);
        assert_eq!(padded_in_list(&vec![0; 600]).len(), 1_024);
    }

    #[test]
    fn values_number_their_own_placeholders_per_backend() {
        let mut values = Values::for_backend(Backend::Postgres, 2);
        values.row().int(1).text("a");
        values.row().int(2).opt_text(None::<String>);
        assert_eq!(values.placeholders(), "($1, $2), ($3, $4)");
        let mut values = Values::for_backend(Backend::Sqlite, 2);
        values.row().int(1).flag(true);
        assert_eq!(values.placeholders(), "(?, ?)");
    }

    #[test]
    #[should_panic(expected = "binds parameters of its own")]
    fn a_template_with_its_own_parameter_is_refused() {
        let mut values = Values::for_backend(Backend::Postgres, 1);
        values.row().int(1);
        let _ = values.query("INSERT INTO t (a) VALUES {values} RETURNING $1");
    }

    #[test]
    fn locks_are_spelled_per_backend() {
        assert_eq!(Lock::ForUpdate.clause(Backend::Postgres), " FOR UPDATE");
        assert_eq!(Lock::ForUpdateSkipLocked.clause(Backend::Postgres), " FOR UPDATE SKIP LOCKED");
        assert_eq!(Lock::ForUpdateOf("s").clause(Backend::Postgres), " FOR UPDATE OF s");
        assert_eq!(Lock::ForUpdate.clause(Backend::Sqlite), "");
    }

    #[test]
    fn placeholders_number_across_rows() {
        assert_eq!(values_placeholders(2, 2, 1), "($1, $2), ($3, $4)");
        assert_eq!(list_placeholders(3, 2), "$2, $3, $4");
    }
}

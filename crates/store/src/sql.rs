//! Helpers for SQL text that is built at run time from static fragments.
//!
//! Values are always bound as parameters; only placeholder lists are generated here.

use sqlx::AssertSqlSafe;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

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

/// The `VALUES` lists of a multi-row `INSERT` whose only parameters are these values.
///
/// On SQLite they are anonymous `?`: SQLite looks a named parameter up by a linear scan, and
/// sqlx looks up every parameter of a statement, so thousands of `$N` cost quadratic time (it
/// was 70% of a bulk import's CPU). PostgreSQL needs `$N`.
pub fn insert_values(conn: &sqlx::AnyConnection, rows: usize, columns: usize) -> String {
    match crate::db::backend_of(conn) {
        crate::Backend::Postgres => values_placeholders(rows, columns, 1),
        crate::Backend::Sqlite => {
            let row = format!("({})", vec!["?"; columns].join(", "));
            vec![row; rows].join(", ")
        }
    }
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
    fn placeholders_number_across_rows() {
        assert_eq!(values_placeholders(2, 2, 1), "($1, $2), ($3, $4)");
        assert_eq!(list_placeholders(3, 2), "$2, $3, $4");
    }
}

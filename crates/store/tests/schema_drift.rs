//! The SQLite and PostgreSQL migrations must build the same schema: the same tables, columns
//! (by what their type means, and nullability), primary keys, unique constraints and indexes,
//! other indexes, foreign keys and named CHECK constraints.
//!
//! Each dialect's migrations are applied to a fresh database, the schema is read back from
//! its catalogs into one model, and the two models are compared; every difference is listed
//! at once. PostgreSQL is checked when `STOCKROOM_TEST_POSTGRES_URL` names an admin database
//! (a throwaway database is created there and dropped afterwards); without it only the SQLite
//! side is read.

use sqlx::AnyPool;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use store::{Db, DbOptions};

const POSTGRES_URL_VAR: &str = "STOCKROOM_TEST_POSTGRES_URL";

/// sqlx's bookkeeping, not part of Stockroom's schema.
const SQLX_MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Tables every Stockroom schema has: a model without them was not read properly.
const CORE_TABLES: [&str; 3] = ["events", "stock_levels", "reservations"];

/// SQLite accepts NULL in a primary key column not declared NOT NULL, unless it is an
/// `INTEGER PRIMARY KEY` (a legacy quirk, see "CREATE TABLE" in the SQLite docs), while
/// PostgreSQL makes every primary key column NOT NULL. The migrations declare these keys alike
/// (`TEXT PRIMARY KEY`) and every INSERT in the code supplies the key, so the difference is
/// the dialects', not drift. SQLite cannot add NOT NULL to an existing column; new tables
/// should declare `TEXT PRIMARY KEY NOT NULL` rather than join this list.
const SQLITE_NULLABLE_TEXT_KEY: &str = "SQLite's legacy rule: a TEXT PRIMARY KEY accepts NULL";

/// Differences that are the dialects' rather than the migrations', each with why it is
/// accepted. An entry that no longer matches a difference fails the test, so the list
/// cannot go stale.
const ALLOWED_DIFFERENCES: &[(&str, &str)] = &[
    ("table aggregate_heads: column aggregate: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table alert_rescans: column scope: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table alert_rules: column scope: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table alerts: column id: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table api_keys: column id: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table counts: column id: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table items: column sku: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table reservations: column id: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table warehouses: column code: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
    ("table worker_offsets: column worker: nullable on sqlite, NOT NULL on postgres", SQLITE_NULLABLE_TEXT_KEY),
];

type Failure = Box<dyn std::error::Error>;

// The model both dialects are read into.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Schema {
    tables: BTreeMap<String, Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    /// In key order.
    primary_key: Vec<String>,
    /// Unique constraints and unique indexes alike (both dialects back the former with the
    /// latter); the primary key is not among them.
    unique: BTreeSet<IndexKey>,
    /// Indexes that are neither unique nor the primary key.
    indexes: BTreeSet<IndexKey>,
    foreign_keys: BTreeSet<ForeignKey>,
    named_checks: BTreeSet<String>,
    /// Unnamed CHECKs have no name to compare by (PostgreSQL makes one up), so only their
    /// number is compared.
    unnamed_checks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    kind: ColumnKind,
    not_null: bool,
}

/// What a declared type means, whichever dialect spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ColumnKind {
    Integer,
    Text,
    Real,
    Blob,
    Boolean,
    /// Any other type, by its upper-cased name without size (`NUMERIC`), or empty if none.
    Other(String),
}

impl ColumnKind {
    /// Reads a declared type: SQLite's `type` in `pragma_table_info` or PostgreSQL's
    /// `information_schema.columns.data_type`. A size (`VARCHAR(40)`) does not change the kind.
    fn of(declared: &str) -> Self {
        let upper = declared.trim().to_ascii_uppercase();
        let base = upper.split('(').next().unwrap_or_default().trim();
        match base {
            "INTEGER" | "INT" | "BIGINT" | "INT8" | "INT4" | "INT2" | "SMALLINT" => Self::Integer,
            "TEXT" | "VARCHAR" | "CHARACTER VARYING" | "CHAR" | "CHARACTER" => Self::Text,
            "REAL" | "DOUBLE PRECISION" | "DOUBLE" | "FLOAT" | "FLOAT4" | "FLOAT8" => Self::Real,
            "BLOB" | "BYTEA" => Self::Blob,
            "BOOLEAN" | "BOOL" => Self::Boolean,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer => f.write_str("integer"),
            Self::Text => f.write_str("text"),
            Self::Real => f.write_str("real"),
            Self::Blob => f.write_str("blob"),
            Self::Boolean => f.write_str("boolean"),
            Self::Other(name) if name.is_empty() => f.write_str("no declared type"),
            Self::Other(name) => write!(f, "type {name}"),
        }
    }
}

/// An index by what it covers: its columns in order, and whether it has a WHERE clause.
/// Predicates are not compared: each dialect prints them its own way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IndexKey {
    columns: Vec<String>,
    partial: bool,
}

impl IndexKey {
    fn full(columns: &[&str]) -> Self {
        Self { columns: names(columns), partial: false }
    }
}

impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({})", self.columns.join(", "))?;
        if self.partial { f.write_str(" WHERE ...") } else { Ok(()) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    target_table: String,
    target_columns: Vec<String>,
    /// `NO ACTION`, `RESTRICT`, `CASCADE`, `SET NULL` or `SET DEFAULT`.
    on_update: String,
    on_delete: String,
}

impl ForeignKey {
    fn new(columns: &[&str], target_table: &str, target_columns: &[&str]) -> Self {
        Self {
            columns: names(columns),
            target_table: target_table.to_owned(),
            target_columns: names(target_columns),
            on_update: "NO ACTION".to_owned(),
            on_delete: "NO ACTION".to_owned(),
        }
    }
}

impl fmt::Display for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) -> {} ({})", self.columns.join(", "), self.target_table, self.target_columns.join(", "))?;
        if self.on_update != "NO ACTION" {
            write!(f, " ON UPDATE {}", self.on_update)?;
        }
        if self.on_delete != "NO ACTION" {
            write!(f, " ON DELETE {}", self.on_delete)?;
        }
        Ok(())
    }
}

fn names(columns: &[&str]) -> Vec<String> {
    columns.iter().map(|c| (*c).to_owned()).collect()
}

/// Files a CHECK constraint under its name, or as unnamed when it has none or the name is
/// one PostgreSQL makes up for an unnamed CHECK (`<table>_check`, `<table>_<column>_check`,
/// maybe with a number after it). Both dialects go through here, so they agree.
fn add_check(table_name: &str, table: &mut Table, name: Option<&str>) {
    match name {
        Some(name) if !is_generated_check_name(table_name, table, name) => {
            table.named_checks.insert(name.to_owned());
        }
        _ => table.unnamed_checks += 1,
    }
}

fn is_generated_check_name(table_name: &str, table: &Table, name: &str) -> bool {
    let Some(stem) = name.trim_end_matches(|c: char| c.is_ascii_digit()).strip_suffix("_check") else {
        return false;
    };
    stem == table_name || table.columns.keys().any(|column| stem == format!("{table_name}_{column}"))
}

// The comparison.

/// Every difference between the two schemas, one readable line each, in a stable order.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    let table_names: BTreeSet<&String> = sqlite.tables.keys().chain(postgres.tables.keys()).collect();
    for name in table_names {
        match (sqlite.tables.get(name), postgres.tables.get(name)) {
            (Some(on_sqlite), Some(on_postgres)) => table_differences(name, on_sqlite, on_postgres, &mut found),
            (Some(_), None) => found.push(format!("table {name}: on sqlite only")),
            (None, _) => found.push(format!("table {name}: on postgres only")),
        }
    }
    found
}

fn table_differences(name: &str, sqlite: &Table, postgres: &Table, found: &mut Vec<String>) {
    let column_names: BTreeSet<&String> = sqlite.columns.keys().chain(postgres.columns.keys()).collect();
    for column in column_names {
        match (sqlite.columns.get(column), postgres.columns.get(column)) {
            (Some(on_sqlite), Some(on_postgres)) => {
                if on_sqlite.kind != on_postgres.kind {
                    found.push(format!(
                        "table {name}: column {column}: {} on sqlite, {} on postgres",
                        on_sqlite.kind, on_postgres.kind
                    ));
                }
                if on_sqlite.not_null != on_postgres.not_null {
                    found.push(format!(
                        "table {name}: column {column}: {} on sqlite, {} on postgres",
                        nullability(on_sqlite),
                        nullability(on_postgres)
                    ));
                }
            }
            (Some(_), None) => found.push(format!("table {name}: column {column}: on sqlite only")),
            (None, _) => found.push(format!("table {name}: column {column}: on postgres only")),
        }
    }
    if sqlite.primary_key != postgres.primary_key {
        found.push(format!(
            "table {name}: primary key {} on sqlite, {} on postgres",
            primary_key(&sqlite.primary_key),
            primary_key(&postgres.primary_key)
        ));
    }
    one_sided(name, "unique", &sqlite.unique, &postgres.unique, found);
    one_sided(name, "index", &sqlite.indexes, &postgres.indexes, found);
    one_sided(name, "foreign key", &sqlite.foreign_keys, &postgres.foreign_keys, found);
    one_sided(name, "check constraint", &sqlite.named_checks, &postgres.named_checks, found);
    if sqlite.unnamed_checks != postgres.unnamed_checks {
        found.push(format!(
            "table {name}: unnamed check constraints: {} on sqlite, {} on postgres",
            sqlite.unnamed_checks, postgres.unnamed_checks
        ));
    }
}

/// Reports each member of one set that the other lacks.
fn one_sided<T: Ord + fmt::Display>(
    table: &str,
    what: &str,
    sqlite: &BTreeSet<T>,
    postgres: &BTreeSet<T>,
    found: &mut Vec<String>,
) {
    for item in sqlite.difference(postgres) {
        found.push(format!("table {table}: {what} {item} on sqlite only"));
    }
    for item in postgres.difference(sqlite) {
        found.push(format!("table {table}: {what} {item} on postgres only"));
    }
}

fn nullability(column: &Column) -> &'static str {
    if column.not_null { "NOT NULL" } else { "nullable" }
}

fn primary_key(columns: &[String]) -> String {
    if columns.is_empty() { "none".to_owned() } else { format!("({})", columns.join(", ")) }
}

// Reading SQLite.

async fn read_sqlite(pool: &AnyPool) -> Result<Schema, sqlx::Error> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        r"SELECT name, sql FROM sqlite_master
          WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name <> ?",
    )
    .bind(SQLX_MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    let mut schema = Schema::default();
    for (name, sql) in tables {
        let table = read_sqlite_table(pool, &name, &sql).await?;
        schema.tables.insert(name, table);
    }
    Ok(schema)
}

async fn read_sqlite_table(pool: &AnyPool, name: &str, sql: &str) -> Result<Table, sqlx::Error> {
    let mut table = Table::default();

    let columns: Vec<(String, String, i64, i64)> =
        sqlx::query_as(r#"SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid"#)
            .bind(name)
            .fetch_all(pool)
            .await?;
    let mut key: Vec<(i64, String)> = columns.iter().filter(|c| c.3 > 0).map(|c| (c.3, c.0.clone())).collect();
    key.sort();
    table.primary_key = key.into_iter().map(|(_, column)| column).collect();
    // An `INTEGER PRIMARY KEY` is the rowid: the pragma calls it nullable, yet it never holds
    // NULL (inserting NULL assigns the next rowid).
    let rowid_alias = match (table.primary_key.as_slice(), columns.iter().find(|c| c.3 > 0)) {
        ([_], Some((column, declared, _, _))) if declared.eq_ignore_ascii_case("INTEGER") => Some(column.clone()),
        _ => None,
    };
    for (column, declared, not_null, _) in columns {
        let not_null = not_null != 0 || rowid_alias.as_ref() == Some(&column);
        table.columns.insert(column, Column { kind: ColumnKind::of(&declared), not_null });
    }

    let index_columns: Vec<(String, i64, String, i64, Option<String>)> = sqlx::query_as(
        r#"SELECT il.name, il."unique", il.origin, il.partial, ii.name
           FROM pragma_index_list(?) AS il JOIN pragma_index_info(il.name) AS ii
           ORDER BY il.name, ii.seqno"#,
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let mut indexes: BTreeMap<String, (bool, IndexKey)> = BTreeMap::new();
    for (index, unique, origin, partial, column) in index_columns {
        // The primary key's own index ("pk") is the primary key, compared as such.
        if origin == "pk" {
            continue;
        }
        let entry = indexes
            .entry(index)
            .or_insert_with(|| (unique != 0, IndexKey { columns: Vec::new(), partial: partial != 0 }));
        // Expressions have no column name; they are compared by position only.
        entry.1.columns.push(column.unwrap_or_else(|| "(expression)".to_owned()));
    }
    for (unique, key) in indexes.into_values() {
        if unique {
            table.unique.insert(key)
        } else {
            table.indexes.insert(key)
        };
    }

    let references: Vec<(i64, String, String, Option<String>, String, String)> = sqlx::query_as(
        r#"SELECT id, "table", "from", "to", on_update, on_delete
           FROM pragma_foreign_key_list(?) ORDER BY id, seq"#,
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let mut foreign_keys: BTreeMap<i64, ForeignKey> = BTreeMap::new();
    for (id, target_table, column, target_column, on_update, on_delete) in references {
        let key = foreign_keys.entry(id).or_insert_with(|| ForeignKey {
            target_table: target_table.clone(),
            on_update,
            on_delete,
            ..ForeignKey::new(&[], "", &[])
        });
        key.columns.push(column);
        if let Some(target_column) = target_column {
            key.target_columns.push(target_column);
        }
    }
    for mut key in foreign_keys.into_values() {
        // `REFERENCES t` without columns means t's primary key.
        if key.target_columns.is_empty() {
            key.target_columns = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk")
                .bind(&key.target_table)
                .fetch_all(pool)
                .await?;
        }
        table.foreign_keys.insert(key);
    }

    // SQLite keeps no catalog of CHECKs: they are read from the CREATE TABLE text.
    for name_of_check in check_constraints(sql) {
        add_check(name, &mut table, name_of_check.as_deref());
    }
    Ok(table)
}

/// The CHECK constraints of a CREATE TABLE statement, by name (None when unnamed): each
/// `CHECK` keyword, named when it follows `CONSTRAINT <name>`.
fn check_constraints(create_table: &str) -> Vec<Option<String>> {
    let tokens = sql_tokens(create_table);
    let mut checks = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        if !matches!(token, SqlToken::Word(word) if word.eq_ignore_ascii_case("CHECK")) {
            continue;
        }
        let name = match at.checked_sub(2).map(|before| (&tokens[before], &tokens[at - 1])) {
            Some((SqlToken::Word(keyword), SqlToken::Word(name) | SqlToken::Quoted(name)))
                if keyword.eq_ignore_ascii_case("CONSTRAINT") =>
            {
                Some(name.clone())
            }
            _ => None,
        };
        checks.push(name);
    }
    checks
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SqlToken {
    /// A keyword or an unquoted identifier.
    Word(String),
    /// A quoted identifier ("x", `x` or [x]), unquoted.
    Quoted(String),
    /// A string literal; its text does not matter here.
    Literal,
    Symbol(char),
}

/// Just enough of a SQL tokenizer that a `CHECK` inside a comment, a string or a quoted
/// identifier is not taken for a constraint.
fn sql_tokens(sql: &str) -> Vec<SqlToken> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&c) = chars.get(at) {
        let next = chars.get(at + 1).copied();
        if c.is_whitespace() {
            at += 1;
        } else if c == '-' && next == Some('-') {
            while chars.get(at).is_some_and(|&c| c != '\n') {
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            at += 2;
            while at < chars.len() && !(chars[at] == '*' && chars.get(at + 1) == Some(&'/')) {
                at += 1;
            }
            at += 2;
        } else if matches!(c, '\'' | '"' | '`' | '[') {
            let (text, after) = quoted(&chars, at);
            tokens.push(if c == '\'' { SqlToken::Literal } else { SqlToken::Quoted(text) });
            at = after;
        } else if c.is_alphanumeric() || c == '_' {
            let start = at;
            while chars.get(at).is_some_and(|&c| c.is_alphanumeric() || c == '_' || c == '$') {
                at += 1;
            }
            tokens.push(SqlToken::Word(chars[start..at].iter().collect()));
        } else {
            tokens.push(SqlToken::Symbol(c));
            at += 1;
        }
    }
    tokens
}

/// The text of the quoted token opening at `open`, and where the token ends. A doubled quote
/// stands for itself, except in `[...]`, which has no escape.
fn quoted(chars: &[char], open: usize) -> (String, usize) {
    let close = if chars[open] == '[' { ']' } else { chars[open] };
    let mut text = String::new();
    let mut at = open + 1;
    while let Some(&c) = chars.get(at) {
        if c != close {
            text.push(c);
            at += 1;
        } else if close != ']' && chars.get(at + 1) == Some(&close) {
            text.push(close);
            at += 2;
        } else {
            return (text, at + 1);
        }
    }
    (text, at)
}

// Reading PostgreSQL. The Any driver carries only bools, numbers, text and bytes, so `name`,
// `"char"` and `sql_identifier` values are cast to text.

async fn read_postgres(pool: &AnyPool) -> Result<Schema, sqlx::Error> {
    let mut schema = Schema::default();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> $1",
    )
    .bind(SQLX_MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    for name in tables {
        schema.tables.insert(name, Table::default());
    }

    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns WHERE table_schema = current_schema()
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(pool)
    .await?;
    for (table_name, column, declared, nullable) in columns {
        // Rows of sqlx's table (or of views) are skipped: they are not among the tables.
        if let Some(table) = schema.tables.get_mut(&table_name) {
            table.columns.insert(column, Column { kind: ColumnKind::of(&declared), not_null: nullable == "NO" });
        }
    }

    let key_columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, a.attname::text
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, position)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.contype = 'p' AND n.nspname = current_schema()
         ORDER BY t.relname, k.position",
    )
    .fetch_all(pool)
    .await?;
    for (table_name, column) in key_columns {
        if let Some(table) = schema.tables.get_mut(&table_name) {
            table.primary_key.push(column);
        }
    }

    // Unique constraints show up here through the unique indexes backing them.
    let index_columns: Vec<(String, String, bool, bool, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, x.indisunique, x.indpred IS NOT NULL,
                COALESCE(a.attname::text, '(expression)')
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
         LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
         WHERE NOT x.indisprimary AND n.nspname = current_schema() AND k.position <= x.indnkeyatts
         ORDER BY t.relname, i.relname, k.position",
    )
    .fetch_all(pool)
    .await?;
    let mut indexes: BTreeMap<(String, String), (bool, IndexKey)> = BTreeMap::new();
    for (table_name, index, unique, partial, column) in index_columns {
        let entry =
            indexes.entry((table_name, index)).or_insert_with(|| (unique, IndexKey { columns: Vec::new(), partial }));
        entry.1.columns.push(column);
    }
    for ((table_name, _), (unique, key)) in indexes {
        if let Some(table) = schema.tables.get_mut(&table_name) {
            if unique {
                table.unique.insert(key)
            } else {
                table.indexes.insert(key)
            };
        }
    }

    let reference_columns: Vec<(String, String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, c.conname::text, r.relname::text, a.attname::text, ra.attname::text,
                c.confupdtype::text, c.confdeltype::text
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         JOIN pg_class r ON r.oid = c.confrelid
         CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(attnum, target_attnum, position)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.target_attnum
         WHERE c.contype = 'f' AND n.nspname = current_schema()
         ORDER BY t.relname, c.conname, k.position",
    )
    .fetch_all(pool)
    .await?;
    let mut foreign_keys: BTreeMap<(String, String), ForeignKey> = BTreeMap::new();
    for (table_name, constraint, target_table, column, target_column, on_update, on_delete) in reference_columns {
        let key = foreign_keys.entry((table_name, constraint)).or_insert_with(|| ForeignKey {
            target_table,
            on_update: postgres_action(&on_update),
            on_delete: postgres_action(&on_delete),
            ..ForeignKey::new(&[], "", &[])
        });
        key.columns.push(column);
        key.target_columns.push(target_column);
    }
    for ((table_name, _), key) in foreign_keys {
        if let Some(table) = schema.tables.get_mut(&table_name) {
            table.foreign_keys.insert(key);
        }
    }

    let checks: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, c.conname::text
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE c.contype = 'c' AND n.nspname = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    for (table_name, check) in checks {
        if let Some(table) = schema.tables.get_mut(&table_name) {
            add_check(&table_name, table, Some(&check));
        }
    }
    Ok(schema)
}

/// `pg_constraint.confupdtype` / `confdeltype` in SQLite's words.
fn postgres_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .to_owned()
}

// Throwaway databases.

/// A temp SQLite file, removed (with its WAL files) when dropped.
struct SqliteFile(PathBuf);

impl SqliteFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("stockroom_drift_{}.db", uuid::Uuid::new_v4().simple())))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn migrated_sqlite_schema() -> Result<Schema, Failure> {
    let file = SqliteFile::new();
    let db = Db::connect_and_migrate(&file.url(), &DbOptions::default()).await?;
    let schema = read_sqlite(db.reader()).await;
    db.close().await;
    Ok(schema?)
}

/// Creates a fresh database next to `admin_url`'s, migrates and reads it, and drops it again
/// whatever happened in between. (The store crate cannot use testkit, which depends on it.)
async fn migrated_postgres_schema(admin_url: &str) -> Result<Schema, Failure> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("stockroom_drift_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;

    let (server, query) = admin_url.split_once('?').map_or((admin_url, None), |(url, query)| (url, Some(query)));
    let server = server.rsplit_once('/').map_or(server, |(server, _)| server);
    let url = match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    };
    let read = async {
        let db = Db::connect_and_migrate(&url, &DbOptions::default()).await?;
        let schema = read_postgres(db.reader()).await;
        db.close().await;
        Ok::<_, Failure>(schema?)
    }
    .await;

    let dropped =
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut admin).await;
    let _ = admin.close().await;
    let schema = read?;
    dropped?;
    Ok(schema)
}

// The tests.

/// Fails unless the readers found the core tables and each kind of fact the comparison
/// looks at, so that two readers that miss something cannot agree on nothing.
fn assert_read_fully(label: &str, schema: &Schema) {
    for table in CORE_TABLES {
        assert!(
            schema.tables.contains_key(table),
            "{label}: table {table} not read; tables: {:?}",
            schema.tables.keys()
        );
    }
    assert!(!schema.tables.contains_key(SQLX_MIGRATIONS_TABLE), "{label}: sqlx's own table read as Stockroom's");
    let table = |name: &str| &schema.tables[name];
    let on_hand = &table("stock_levels").columns["on_hand"];
    assert_eq!(*on_hand, Column { kind: ColumnKind::Integer, not_null: true }, "{label}: stock_levels.on_hand");
    assert_eq!(table("stock_levels").primary_key, names(&["sku", "warehouse"]), "{label}: stock_levels key");
    let expectations = [
        ("foreign key", table("stock_levels").foreign_keys.contains(&ForeignKey::new(&["sku"], "items", &["sku"]))),
        (
            "composite foreign key",
            table("bin_stock").foreign_keys.contains(&ForeignKey::new(
                &["warehouse", "bin"],
                "bins",
                &["warehouse", "code"],
            )),
        ),
        ("named check", table("stock_levels").named_checks.contains("stock_reserved_within_on_hand")),
        ("unnamed check", table("event_sequence").unnamed_checks == 1),
        ("unique constraint", table("events").unique.contains(&IndexKey::full(&["aggregate", "aggregate_seq"]))),
        (
            "partial unique index",
            table("alerts").unique.contains(&IndexKey { columns: names(&["subject"]), partial: true }),
        ),
        ("index", table("movements").indexes.contains(&IndexKey::full(&["sku", "warehouse", "seq"]))),
    ];
    for (what, found) in expectations {
        assert!(found, "{label}: a {what} the migrations create was not read");
    }
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_build_the_same_schema() {
    let sqlite = migrated_sqlite_schema().await.expect("migrate and read SQLite");
    assert_read_fully("sqlite", &sqlite);

    let Some(admin_url) = std::env::var(POSTGRES_URL_VAR).ok().filter(|url| !url.is_empty()) else {
        eprintln!("note: {POSTGRES_URL_VAR} is not set: only the SQLite schema was read, nothing compared");
        return;
    };
    let postgres = migrated_postgres_schema(&admin_url).await.expect("migrate and read PostgreSQL");
    assert_read_fully("postgres", &postgres);

    let found = differences(&sqlite, &postgres);
    let allowed = |difference: &String| ALLOWED_DIFFERENCES.iter().any(|(entry, _)| entry == difference);
    let mut problems: Vec<String> = found.iter().filter(|d| !allowed(d)).cloned().collect();
    for (entry, _) in ALLOWED_DIFFERENCES {
        if !found.iter().any(|difference| difference == entry) {
            problems.push(format!("allowed difference no longer found, remove it from the list: {entry}"));
        }
    }
    assert!(
        problems.is_empty(),
        "the SQLite and PostgreSQL migrations build different schemas ({} problems):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The comparison itself: differences of every kind are each named, and equal schemas have
/// none, so the test above cannot pass by comparing nothing.
#[test]
fn differences_name_every_difference() {
    let mut stock = Table::default();
    stock.columns.insert("sku".into(), Column { kind: ColumnKind::Text, not_null: true });
    stock.columns.insert("on_hand".into(), Column { kind: ColumnKind::Integer, not_null: true });
    stock.primary_key = names(&["sku"]);
    stock.indexes.insert(IndexKey::full(&["on_hand"]));
    stock.named_checks.insert("stock_on_hand_bounded".into());
    let mut sqlite = Schema::default();
    sqlite.tables.insert("stock".into(), stock.clone());
    sqlite.tables.insert("legacy".into(), Table::default());
    assert_eq!(differences(&sqlite, &sqlite), Vec::<String>::new());

    let mut postgres = Schema::default();
    let mut changed = stock;
    changed.columns.insert("on_hand".into(), Column { kind: ColumnKind::Text, not_null: false });
    changed.columns.insert("note".into(), Column { kind: ColumnKind::Text, not_null: false });
    changed.primary_key = names(&["sku", "on_hand"]);
    changed.indexes.clear();
    changed.unique.insert(IndexKey { columns: names(&["note"]), partial: true });
    changed
        .foreign_keys
        .insert(ForeignKey { on_delete: "CASCADE".into(), ..ForeignKey::new(&["sku"], "items", &["sku"]) });
    changed.named_checks.clear();
    changed.unnamed_checks = 1;
    postgres.tables.insert("stock".into(), changed);

    assert_eq!(
        differences(&sqlite, &postgres),
        [
            "table legacy: on sqlite only",
            "table stock: column note: on postgres only",
            "table stock: column on_hand: integer on sqlite, text on postgres",
            "table stock: column on_hand: NOT NULL on sqlite, nullable on postgres",
            "table stock: primary key (sku) on sqlite, (sku, on_hand) on postgres",
            "table stock: unique (note) WHERE ... on postgres only",
            "table stock: index (on_hand) on sqlite only",
            "table stock: foreign key (sku) -> items (sku) ON DELETE CASCADE on postgres only",
            "table stock: check constraint stock_on_hand_bounded on sqlite only",
            "table stock: unnamed check constraints: 0 on sqlite, 1 on postgres",
        ]
    );
}

#[test]
fn check_constraints_are_read_from_create_table() {
    let sql = r#"CREATE TABLE t (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        -- a CHECK in a comment is not one
        kind TEXT DEFAULT 'CHECK' CONSTRAINT t_kind_known CHECK (kind IN ('a', 'b')),
        "check" INTEGER, /* nor CHECK here */
        CONSTRAINT "quoted name" CHECK ("check" > 0)
    )"#;
    assert_eq!(check_constraints(sql), [None, Some("t_kind_known".to_owned()), Some("quoted name".to_owned())]);
}

#[test]
fn names_postgres_makes_up_count_as_unnamed_checks() {
    let mut table = Table::default();
    table.columns.insert("id".into(), Column { kind: ColumnKind::Integer, not_null: true });
    for name in ["t_id_check", "t_check", "t_check1", "t_id_positive"] {
        add_check("t", &mut table, Some(name));
    }
    assert_eq!(table.unnamed_checks, 3);
    assert_eq!(table.named_checks, BTreeSet::from(["t_id_positive".to_owned()]));
}

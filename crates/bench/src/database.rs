//! Throwaway databases, one per run: a temp SQLite file, or a fresh PostgreSQL database
//! created through an admin URL and dropped afterwards (the approach of `testkit`).

use anyhow::Context;
use std::path::PathBuf;
use store::Backend;

#[derive(Debug, Clone)]
pub struct BenchDatabase {
    pub url: String,
    sqlite_file: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl BenchDatabase {
    pub async fn create(backend: Backend, postgres_admin_url: Option<&str>) -> anyhow::Result<Self> {
        let name = format!("stockroom_bench_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                Ok(Self { url: format!("sqlite://{}", path.display()), sqlite_file: Some(path), postgres: None })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url.context("a PostgreSQL system needs --postgres-url")?.to_owned();
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .context("connecting to the PostgreSQL admin database")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .context("creating the bench database")?;
                let _ = sqlx::Connection::close(conn).await;
                Ok(Self { url: database_url(&admin_url, &name), sqlite_file: None, postgres: Some((admin_url, name)) })
            }
        }
    }

    /// Removes the database (best effort).
    pub async fn drop_database(&self) {
        if let Some(path) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await;
        }
    }
}

/// `admin_url` with its database name replaced by `name`, keeping any query string (such as
/// `?host=/var/run/postgresql` for a Unix socket).
fn database_url(admin_url: &str, name: &str) -> String {
    let (path, query) = match admin_url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (admin_url, None),
    };
    let base = match path.find("://") {
        Some(scheme) => match path[scheme + 3..].find('/') {
            Some(slash) => &path[..scheme + 3 + slash],
            None => path,
        },
        None => path,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_the_name_and_keeps_the_query() {
        assert_eq!(database_url("postgres://u@h:5432/postgres", "b"), "postgres://u@h:5432/b");
        assert_eq!(database_url("postgres://u@h:5432", "b"), "postgres://u@h:5432/b");
        assert_eq!(
            database_url("postgres://u@localhost/postgres?host=/var/run/postgresql", "b"),
            "postgres://u@localhost/b?host=/var/run/postgresql"
        );
    }
}

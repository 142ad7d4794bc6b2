//! Binds through sqlx's `Any` driver on a reused connection: a NULL float followed by a value
//! must keep working. sqlx-core 0.9.0 mapped NULL `f64` to `f32` and back (upstream #4284),
//! so on PostgreSQL a statement prepared with NULL coordinates refused the next real ones
//! with `22P03 incorrect binary data format` (a 500 on warehouse writes). See vendor/README.md.

use sqlx::{AnyConnection, Connection, Row};

async fn nulls_then_values(url: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    sqlx::query("CREATE TEMPORARY TABLE coordinates (n BIGINT NOT NULL, latitude DOUBLE PRECISION, ratio REAL)")
        .execute(&mut conn)
        .await
        .expect("create the table");
    // The same statement (prepared once, cached on this connection) with NULLs, then values.
    let rows: [(i64, Option<f64>, Option<f32>); 4] =
        [(1, None, None), (2, None, None), (3, Some(52.5), Some(0.25)), (4, None, Some(1.5))];
    for (n, latitude, ratio) in rows {
        sqlx::query("INSERT INTO coordinates (n, latitude, ratio) VALUES ($1, $2, $3)")
            .bind(n)
            .bind(latitude)
            .bind(ratio)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("row {n} ({latitude:?}, {ratio:?}): {e}"));
    }
    let back = sqlx::query("SELECT latitude, ratio FROM coordinates WHERE n = 3").fetch_one(&mut conn).await.unwrap();
    assert_eq!(back.try_get::<f64, _>(0).unwrap(), 52.5);
    let ratio: f64 = sqlx::query_scalar("SELECT CAST(ratio AS DOUBLE PRECISION) FROM coordinates WHERE n = 4")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(ratio, 1.5);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn null_floats_then_values_bind_on_a_reused_connection() {
    let file = std::env::temp_dir().join(format!("stockroom_binds_{}.db", uuid::Uuid::new_v4().simple()));
    nulls_then_values(&format!("sqlite://{}?mode=rwc", file.display())).await;
    let _ = std::fs::remove_file(&file);
    match std::env::var("STOCKROOM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => nulls_then_values(&url).await,
        _ => eprintln!("STOCKROOM_TEST_POSTGRES_URL is not set: PostgreSQL side skipped"),
    }
}

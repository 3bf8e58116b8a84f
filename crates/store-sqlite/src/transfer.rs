//! `pairgate export` / `import --format json`: every row of every table as JSON (blobs — token digests —
//! as hex; a token value is never stored, so never exported), and back, into an empty database.
//!
//! The SQL here is built from table and column names, never from data: tables are a fixed list, and an
//! import's column names are checked against the schema before they reach a statement.

use serde_json::{Map, Value, json};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use super::{Store, StoreError, StoreResult, current_schema_version};
use pairgate_domain::clock::Millis;
use pairgate_domain::hex;
use pairgate_store_types::transfer::{EXPORT_FORMAT, TABLES, check_row};

fn row_to_json(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Map<String, Value>> {
    let mut object = Map::new();
    for (index, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(index)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "INTEGER" => json!(row.try_get::<i64, _>(index)?),
                "REAL" => json!(row.try_get::<f64, _>(index)?),
                "BLOB" => json!(hex(&row.try_get::<Vec<u8>, _>(index)?)),
                _ => json!(row.try_get::<String, _>(index)?),
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(object)
}

/// A table's columns and their declared types, from the schema.
async fn columns_of(conn: &mut sqlx::SqliteConnection, table: &str) -> StoreResult<Vec<(String, String)>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info(?)").bind(table).fetch_all(conn).await?;
    Ok(rows)
}

impl Store {
    /// Every row of every table, as one JSON document.
    pub async fn export_json(&self, now_ms: Millis) -> StoreResult<Value> {
        let mut conn = self.readers.acquire().await?;
        // One read transaction: a consistent snapshot even while the server writes.
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let mut tables = Map::new();
        for (table, order) in TABLES {
            let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}")).fetch_all(&mut *conn).await?;
            let rows = rows.iter().map(|row| row_to_json(row).map(Value::Object)).collect::<StoreResult<Vec<_>>>()?;
            tables.insert(table.to_owned(), Value::Array(rows));
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(json!({
            "format": EXPORT_FORMAT,
            "formatVersion": 1,
            "schemaVersion": current_schema_version(&self.readers).await?,
            "pairgateVersion": env!("CARGO_PKG_VERSION"),
            "exportedAtMs": now_ms,
            "tables": tables,
        }))
    }

    /// Loads an export into this database, which must hold no devices, requests, sessions, runs or
    /// audit events yet. One transaction: all or nothing. Every row must pass the rules live writes keep
    /// (known roles and scopes, a device id that is its key's); the target's gateway token hash is kept
    /// unless `replace_gateway_token`. Returns rows imported per table.
    pub async fn import_json(&self, export: &Value, replace_gateway_token: bool) -> StoreResult<Vec<(String, usize)>> {
        if export["format"] != EXPORT_FORMAT {
            return Err(StoreError::BadImport("not a pairgate export (format must be pairgate-export)".into()));
        }
        let version = export["schemaVersion"].as_i64().unwrap_or(-1);
        let current = current_schema_version(&self.readers).await?;
        if version < 1 || version > current {
            return Err(StoreError::BadImport(format!(
                "the export has schema version {version}; this pairgate reads exports of versions 1 to {current}"
            )));
        }
        let tables =
            export["tables"].as_object().ok_or_else(|| StoreError::BadImport("the export has no tables".into()))?;
        let mut tx = self.begin_write().await?;
        // A superseded request points at the newer one: check references at commit, not row by row.
        sqlx::query("PRAGMA defer_foreign_keys = ON").execute(&mut *tx).await?;
        for (table, _) in &TABLES[1..] {
            let present: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *tx).await?;
            if present > 0 && *table != "audit_events" {
                return Err(StoreError::BadImport(format!(
                    "the target database is not empty ({table} has {present} rows)"
                )));
            }
        }
        // The target's own audit rows (none but its creation) give way to the imported trail.
        sqlx::query("DELETE FROM audit_events").execute(&mut *tx).await?;
        let mut counts = Vec::new();
        for (table, _) in TABLES {
            let rows = match tables.get(table) {
                Some(Value::Array(rows)) => rows,
                Some(_) => return Err(StoreError::BadImport(format!("table {table} is not a list of rows"))),
                None => continue,
            };
            let columns = columns_of(&mut tx, table).await?;
            let mut imported = 0;
            for (index, row) in rows.iter().enumerate() {
                let object = row
                    .as_object()
                    .ok_or_else(|| StoreError::BadImport(format!("{table} row {index} is not an object")))?;
                let gateway_token =
                    table == "meta" && object.get("key") == Some(&json!(super::meta::GATEWAY_TOKEN_ARGON2));
                if gateway_token && !replace_gateway_token {
                    // The target's own token stays: its operators and clients keep working.
                    continue;
                }
                check_row(table, object).map_err(|why| StoreError::BadImport(format!("{table} row {index}: {why}")))?;
                imported += 1;
                let mut names = Vec::with_capacity(object.len());
                let mut holes = Vec::with_capacity(object.len());
                for name in object.keys() {
                    let (_, kind) = columns
                        .iter()
                        .find(|(column, _)| column == name)
                        .ok_or_else(|| StoreError::BadImport(format!("{table} has no column {name}")))?;
                    names.push(name.as_str());
                    holes.push(if kind == "BLOB" { "unhex(?)" } else { "?" });
                }
                let conflict =
                    if table == "meta" { " ON CONFLICT (key) DO UPDATE SET value = excluded.value" } else { "" };
                let sql = format!("INSERT INTO {table} ({}) VALUES ({}){conflict}", names.join(", "), holes.join(", "));
                let mut query = sqlx::query(&sql);
                for name in &names {
                    query = match &object[*name] {
                        Value::Null => query.bind(None::<String>),
                        Value::Bool(value) => query.bind(*value),
                        Value::Number(number) => match number.as_i64() {
                            Some(integer) => query.bind(integer),
                            None => query.bind(number.as_f64()),
                        },
                        Value::String(text) => query.bind(text.clone()),
                        other => query.bind(other.to_string()),
                    };
                }
                query.execute(&mut *tx).await.map_err(|e| match StoreError::from(e) {
                    StoreError::Constraint(why) => StoreError::BadImport(format!("{table} row {index}: {why}")),
                    other => other,
                })?;
            }
            counts.push((table.to_owned(), imported));
        }
        tx.commit().await?;
        Ok(counts)
    }
}

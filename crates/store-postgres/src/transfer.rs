//! `pairgate export` / `import --format json` on PostgreSQL, in the format both engines share
//! (`pairgate_store_types::transfer`): an export of either engine loads into the other.
//!
//! What only PostgreSQL has stays out of an export: the nodes, the node serving each run, a request's
//! listing order (made again by the import, in the export's order). The SQL here is built from table and
//! column names, never from data: tables are a fixed list, and an import's column names are checked
//! against the schema before they reach a statement.

use serde_json::{Map, Value, json};
use sqlx::postgres::PgRow;
use sqlx::{Column, PgConnection, Row, TypeInfo, ValueRef};

use super::{Store, StoreError, StoreResult, schema};
use pairgate_domain::clock::Millis;
use pairgate_domain::hex;
use pairgate_store_types::transfer::{EXPORT_FORMAT, TABLES, check_row};

/// Columns of this engine alone, never exported.
const ENGINE_ONLY: &[(&str, &str)] = &[("pairing_requests", "seq"), ("runs", "node_id")];

fn row_to_json(table: &str, row: &PgRow) -> StoreResult<Map<String, Value>> {
    let mut object = Map::new();
    for (index, column) in row.columns().iter().enumerate() {
        if ENGINE_ONLY.contains(&(table, column.name())) {
            continue;
        }
        let raw = row.try_get_raw(index)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "INT8" | "INT4" | "INT2" => json!(row.try_get::<i64, _>(index)?),
                "BOOL" => json!(i64::from(row.try_get::<bool, _>(index)?)),
                "BYTEA" => json!(hex(&row.try_get::<Vec<u8>, _>(index)?)),
                // JSON lists and objects travel as their text, as SQLite stores them.
                "JSONB" | "JSON" => json!(row.try_get::<Value, _>(index)?.to_string()),
                _ => json!(row.try_get::<String, _>(index)?),
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(object)
}

/// A table's columns and their types, from the schema.
async fn columns_of(conn: &mut PgConnection, table: &str) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query!(
        r#"SELECT column_name::text AS "name!", data_type::text AS "kind!" FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = $1"#,
        table
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.name, row.kind)).collect())
}

impl Store {
    /// Every row of every table, as one JSON document.
    pub async fn export_json(&self, now_ms: Millis) -> StoreResult<Value> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for every table, even while the fleet writes.
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let mut tables = Map::new();
        for (table, order) in TABLES {
            let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}")).fetch_all(&mut *tx).await?;
            let rows =
                rows.iter().map(|row| row_to_json(table, row).map(Value::Object)).collect::<StoreResult<Vec<_>>>()?;
            tables.insert(table.to_owned(), Value::Array(rows));
        }
        let schema_version = schema::current_version(&mut tx).await?;
        tx.rollback().await?;
        Ok(json!({
            "format": EXPORT_FORMAT,
            "formatVersion": 1,
            "schemaVersion": schema_version,
            "engine": "postgres",
            "pairgateVersion": env!("CARGO_PKG_VERSION"),
            "exportedAtMs": now_ms,
            "tables": tables,
        }))
    }

    /// Loads an export (of either engine) into this database, which must hold no devices, requests,
    /// sessions, runs or audit events yet. One transaction: all or nothing. Every row must pass the rules
    /// live writes keep; the target's gateway token hash is kept unless `replace_gateway_token`. Returns
    /// rows imported per table.
    pub async fn import_json(&self, export: &Value, replace_gateway_token: bool) -> StoreResult<Vec<(String, usize)>> {
        if export["format"] != EXPORT_FORMAT {
            return Err(StoreError::BadImport("not a pairgate export (format must be pairgate-export)".into()));
        }
        let tables =
            export["tables"].as_object().ok_or_else(|| StoreError::BadImport("the export has no tables".into()))?;
        let mut tx = self.begin_write().await?;
        for (table, _) in &TABLES[1..] {
            let present: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *tx).await?;
            if present > 0 && *table != "audit_events" {
                return Err(StoreError::BadImport(format!(
                    "the target database is not empty ({table} has {present} rows)"
                )));
            }
        }
        // The target's own audit rows (none but its creation) give way to the imported trail.
        sqlx::query!("DELETE FROM audit_events").execute(&mut *tx).await?;
        let mut counts = Vec::new();
        // A superseded request points at the newer one, imported after it: linked once all are in.
        let mut superseded = Vec::new();
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
                let mut kinds = Vec::with_capacity(object.len());
                let mut holes = Vec::with_capacity(object.len());
                for name in object.keys() {
                    let (_, kind) = columns
                        .iter()
                        .find(|(column, _)| column == name)
                        .filter(|_| !ENGINE_ONLY.contains(&(table, name.as_str())))
                        .ok_or_else(|| StoreError::BadImport(format!("{table} has no column {name}")))?;
                    if table == "pairing_requests" && name == "superseded_by" {
                        if let (Some(Value::String(newer)), Some(Value::String(id))) =
                            (object.get(name), object.get("request_id"))
                        {
                            superseded.push((id.clone(), newer.clone()));
                        }
                        continue;
                    }
                    let n = names.len() + 1;
                    names.push(name.as_str());
                    kinds.push(kind.as_str());
                    holes.push(match kind.as_str() {
                        "bytea" => format!("decode(${n}, 'hex')"),
                        "jsonb" => format!("${n}::jsonb"),
                        "boolean" => format!("(${n}::bigint <> 0)"),
                        _ => format!("${n}"),
                    });
                }
                let conflict =
                    if table == "meta" { " ON CONFLICT (key) DO UPDATE SET value = excluded.value" } else { "" };
                let sql = format!("INSERT INTO {table} ({}) VALUES ({}){conflict}", names.join(", "), holes.join(", "));
                let mut query = sqlx::query(&sql);
                for (name, kind) in names.iter().zip(&kinds) {
                    query = match &object[*name] {
                        // A NULL of the column's own type: PostgreSQL does not cast a text NULL to a number.
                        Value::Null if matches!(*kind, "bigint" | "boolean") => query.bind(None::<i64>),
                        Value::Null => query.bind(None::<String>),
                        Value::Bool(value) => query.bind(i64::from(*value)),
                        Value::Number(number) => match number.as_i64() {
                            Some(integer) => query.bind(integer),
                            None => {
                                return Err(StoreError::BadImport(format!(
                                    "{table} row {index}: {name} is not an integer"
                                )));
                            }
                        },
                        Value::String(text) => query.bind(text.clone()),
                        other => query.bind(other.to_string()),
                    };
                }
                query.execute(&mut *tx).await.map_err(|e| match StoreError::from(e) {
                    StoreError::Constraint(why) => StoreError::BadImport(format!("{table} row {index}: {why}")),
                    StoreError::Database(e) => StoreError::BadImport(format!("{table} row {index}: {e}")),
                    other => other,
                })?;
            }
            counts.push((table.to_owned(), imported));
        }
        for (request_id, newer) in &superseded {
            sqlx::query!("UPDATE pairing_requests SET superseded_by = $1 WHERE request_id = $2", newer, request_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::BadImport(format!("pairing request {request_id}: {e}")))?;
        }
        // Imported ids were given explicitly: the identity sequences go on after them.
        sqlx::query_scalar!(
            "SELECT setval(pg_get_serial_sequence('device_tokens', 'token_id'), COALESCE(MAX(token_id), 0) + 1, false)
               FROM device_tokens"
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query_scalar!(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'event_id'), COALESCE(MAX(event_id), 0) + 1, false)
               FROM audit_events"
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(counts)
    }
}

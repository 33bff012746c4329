//! The `[[tables.<name>.transforms]]` entries, as configured.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// One `[[tables.<name>.transforms]]` entry: a normalising step applied to
/// every decoded batch before it is written, in the order the entries appear.
///
/// The `op` key picks the transform; the other keys are its options. Column
/// names are case-sensitive and refer to the columns as they are at that
/// point of the list (after earlier renames, casts and so on). A row that a
/// transform cannot process (a value that does not cast, an unparseable
/// timestamp, an SQL expression that fails on it) goes to the table's
/// quarantine with stage `transform` and the reason; the other rows of the
/// batch carry on.
///
/// ```toml
/// [[tables.events.transforms]]
/// op = "snake_case"
///
/// [[tables.events.transforms]]
/// op = "timestamp"
/// column = "event_time"
/// from = "epoch_millis"
///
/// [[tables.events.transforms]]
/// op = "derive"
/// column = "event_date"
/// expr = "to_date(event_time)"
///
/// [[tables.events.transforms]]
/// op = "hash"
/// columns = ["email"]
/// salt_env = "INLET_EMAIL_SALT"
/// ```
///
/// SQL expressions (`derive`, `filter`, `sql`) are DataFusion SQL: unquoted
/// column names are taken as written (`userName` is the column `userName`);
/// quote a name with `"..."` or `` `...` `` when it has spaces or other
/// special characters. Function names are case-insensitive.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    /// `op = "rename"`: renames columns, old name → new name.
    ///
    /// `columns = { userId = "user_id", "payload.ts" = "event_ts" }`. All
    /// renames of one entry happen at once, so two columns can swap names. A
    /// dotted old name renames a field inside a struct column (`"payload.ts"`
    /// renames the field `ts` of `payload`; the new name is the field's new
    /// name, without the path) unless a top-level column has that exact
    /// dotted name. Renaming onto a name that already exists is an error.
    Rename {
        /// Old name → new name.
        columns: BTreeMap<String, String>,
    },
    /// `op = "snake_case"`: renames every column to snake_case: `userName` →
    /// `user_name`, `HTTPStatus` → `http_status`, `Event Time` → `event_time`,
    /// `field2Name` → `field2_name`. Characters other than letters and digits
    /// become word breaks; leading underscores are kept (`_id` stays `_id`).
    /// Two columns that end up with the same name are an error.
    SnakeCase {
        /// Whether fields inside struct columns (also structs inside lists
        /// and maps) are renamed too. Default `true`.
        #[serde(default = "yes")]
        nested: bool,
    },
    /// `op = "cast"`: converts columns to a Spark/Delta type, column → type:
    /// `columns = { amount = "DECIMAL(10,2)", user_id = "BIGINT" }`.
    ///
    /// Types: `STRING`, `BOOLEAN`, `TINYINT`, `SMALLINT`, `INT`, `BIGINT`,
    /// `FLOAT`, `DOUBLE`, `DECIMAL(p,s)`, `DATE`, `TIMESTAMP`,
    /// `TIMESTAMP_NTZ`, `BINARY` and nested types, as in the table `schema`.
    /// A row whose non-null value does not convert exactly is rejected to the
    /// quarantine, never written as null or truncated: `"abc"` or `"1.5"` to
    /// `INT`, `1.5` (a double) to `INT`, 3000000000 to `INT`, a number too
    /// large for the decimal's precision. Decimals round half-up to their
    /// scale, as in Spark. Strings parse as timestamps the way `op =
    /// "timestamp"` does without a `format`. Numbers do not cast to `DATE` or
    /// `TIMESTAMP` (use `op = "timestamp"` with `from = "epoch_..."`).
    Cast {
        /// Column → target type.
        columns: BTreeMap<String, String>,
    },
    /// `op = "timestamp"`: parses a column into a `TIMESTAMP` (microseconds,
    /// UTC).
    ///
    /// ```toml
    /// op = "timestamp"
    /// column = "ts"
    /// from = "string"               # default
    /// format = "%d/%m/%Y %H:%M:%S"  # optional
    /// into = "event_time"           # optional: default replaces `ts`
    /// ```
    ///
    /// A non-null value that does not parse rejects its row to the quarantine.
    Timestamp {
        /// The column to parse.
        column: String,
        /// What the column holds. Default `"string"`.
        #[serde(default)]
        from: TimestampFrom,
        /// For `from = "string"`: a chrono `strftime` pattern, e.g.
        /// `"%d/%m/%Y %H:%M:%S%.f"`; a pattern with `%z` reads the offset, one
        /// without is UTC, one with only a date is midnight UTC. Default: RFC
        /// 3339 / ISO 8601 such as `2024-01-02T03:04:05.123Z`,
        /// `2024-01-02 03:04:05`, `2024-01-02T03:04:05+02:00` or `2024-01-02`;
        /// times without an offset are UTC.
        format: Option<String>,
        /// Output column. Default: replaces `column` in place. An existing
        /// column of that name is replaced in place; otherwise the column is
        /// added at the end.
        into: Option<String>,
    },
    /// `op = "flatten"`: replaces struct columns with one column per field,
    /// named `<struct><separator><field>`, recursively: `a {b, c {d}}` →
    /// `a_b`, `a_c_d`, at the struct's position. A field is null where its
    /// struct is null. A resulting name that already exists is an error.
    Flatten {
        /// Between the struct's name and the field's. Default `"_"`.
        #[serde(default = "underscore")]
        separator: String,
        /// The struct columns to flatten. Default: every struct column.
        columns: Option<Vec<String>>,
    },
    /// `op = "drop"`: removes columns: `columns = ["debug", "raw"]`. A name
    /// that does not exist is an error.
    Drop {
        /// Columns to remove.
        columns: Vec<String>,
    },
    /// `op = "mask"`: replaces every non-null value of the columns with a
    /// fixed string (the columns become `STRING`); nulls stay null.
    Mask {
        /// Columns to mask.
        columns: Vec<String>,
        /// The replacement. Default `"****"`.
        with: Option<String>,
    },
    /// `op = "hash"`: replaces every non-null value with the lower-case hex
    /// SHA-256 of the salt followed by the value's bytes (the columns become
    /// `STRING`); nulls stay null. This equals Spark's
    /// `sha2(concat('<salt>', col), 256)` for strings. Strings hash their
    /// UTF-8 bytes, binaries their bytes, other types their Arrow string form
    /// (`42`, `1.5`, `true`, `2024-01-02`).
    ///
    /// The salt is a secret: it is never logged or shown in errors. Since
    /// environment overrides (`INLET_TABLES__<T>__...`) cannot reach entries
    /// of the `transforms` array, give the salt through an environment
    /// variable with `salt_env` rather than in the file.
    Hash {
        /// Columns to hash.
        columns: Vec<String>,
        /// Salt prepended to every value. Default: none. Prefer `salt_env`.
        salt: Option<String>,
        /// Name of an environment variable that holds the salt, read when the
        /// table starts; a missing variable is an error. Not together with
        /// `salt`.
        salt_env: Option<String>,
    },
    /// `op = "derive"`: adds a column computed by an SQL expression over the
    /// row, e.g. `column = "event_date"`, `expr = "to_date(event_time)"`, or
    /// `expr = "date_trunc('hour', event_time)"`. An existing column of that
    /// name is replaced in place. A row on which the expression fails (a
    /// division by zero, a failing `CAST`) is rejected to the quarantine.
    Derive {
        /// Output column.
        column: String,
        /// DataFusion SQL expression.
        expr: String,
    },
    /// `op = "sql"`: a Spark-style projection and filter over the batch,
    /// which is the table `input`:
    ///
    /// ```toml
    /// op = "sql"
    /// query = """
    ///   SELECT * EXCEPT (name), upper(action) AS action_upper,
    ///          split_part(name, ' ', 1) AS first_name
    ///   FROM input WHERE amount > 0"""
    /// ```
    ///
    /// Supported: exactly `SELECT <items> FROM input [WHERE <condition>]`,
    /// where an item is `*`, `* EXCEPT (a, b)`, a column, or `<expr> AS
    /// <name>` (an expression needs a name). Rows where the condition is
    /// false or null are dropped (not quarantined). A row on which an
    /// expression fails is rejected to the quarantine. Joins, `GROUP BY`,
    /// `ORDER BY`, `LIMIT`, `DISTINCT`, subqueries in `FROM` and other tables
    /// are not supported: each batch is transformed row by row.
    Sql {
        /// The query.
        query: String,
    },
    /// `op = "filter"`: keeps the rows where an SQL condition is true, e.g.
    /// `expr = "action <> 'heartbeat'"`. Rows where it is false or null are
    /// dropped (not quarantined); rows where it fails are rejected to the
    /// quarantine.
    Filter {
        /// Boolean DataFusion SQL expression.
        expr: String,
    },
    /// `op = "debezium"`: unwraps Debezium change events into the changed
    /// row's columns plus the operation, for `[tables.<name>]` fed by a
    /// Debezium connector (Postgres, MySQL, ...):
    ///
    /// ```toml
    /// op = "debezium"
    /// op_column = "__op"                     # default
    /// source_fields = ["lsn", "ts_ms", "db", "table"]  # __source_lsn, ...
    /// ts_ms_column = "__ts_ms"               # optional
    /// transaction = true                     # __txn_id, __txn_total_order, ...
    /// ```
    ///
    /// The input is the envelope: `before` and `after` (STRUCTs of the
    /// row's fields, of one type), `op`, `source`, `ts_ms` and `transaction`,
    /// at the top level (JSON without schemas, Avro) or inside `payload`
    /// (JSON with `schema`/`payload`; both shapes may share a topic). The
    /// output is the fields of `after` for `c` (create), `u` (update) and
    /// `r` (snapshot read), of `before` for `d` (delete), as top-level
    /// columns, then the op as a STRING column (`c`, `u`, `d` or `r`), then
    /// the optional columns below. A `delete_when = "__op = 'd'"` and a
    /// `sequence_by` work on this output.
    ///
    /// Quarantined, stage `transform`, with the reason (never dropped
    /// silently): a truncate (`t`; the table keeps its rows), a logical
    /// decoding message (`m`), an unknown op, a message without `op` (a
    /// heartbeat or schema change message on the topic), and a change whose
    /// row image is missing (`after` of c/u/r, `before` of d, or both). The
    /// tombstone Debezium sends after a delete (a null value) is not a change
    /// event: in `append` mode it goes to quarantine as every null value
    /// does (stage `decode`; set the connector's `tombstones.on.delete =
    /// false` to not send them).
    ///
    /// Plain JSON without `input_schema` is decoded as the envelope of the
    /// table's value columns less the columns this transform adds (the
    /// `before`/`after` fields), both shapes; `source` then holds the
    /// Postgres and MySQL connectors' fields (`version`, `connector`, `name`,
    /// `ts_ms`, `snapshot`, `db`, `sequence`, `ts_us`, `ts_ns`, `schema`,
    /// `table`, `txId`, `lsn`, `xmin`, `server_id`, `gtid`, `file`, `pos`,
    /// `row`, `thread`, `query`), a requested source field outside that list takes the type of
    /// its table column, and a `source_column` declared as a STRUCT in the
    /// table is decoded with that STRUCT's fields. With later transforms that
    /// rename the row's fields, write the envelope in `input_schema`. Values
    /// keep Debezium's encodings (timestamps as epoch numbers, decimals in
    /// JSON as base64 bytes): convert them with later transforms.
    Debezium {
        /// The op column. Default `"__op"`.
        #[serde(default = "default_op_column")]
        op_column: String,
        /// Fields of `source` to keep, each as a column
        /// `<source_prefix><field>`, e.g. `["lsn", "ts_ms", "db", "table"]`
        /// or MySQL's `["file", "pos", "gtid"]`. Default: none.
        #[serde(default)]
        source_fields: Vec<String>,
        /// Prefix of the `source_fields` columns. Default `"__source_"`.
        #[serde(default = "default_source_prefix")]
        source_prefix: String,
        /// Keep the whole `source` STRUCT as this column. Default: not kept.
        source_column: Option<String>,
        /// Keep the event's `ts_ms` (when the connector processed it, epoch
        /// milliseconds, BIGINT) as this column. Default: not kept.
        ts_ms_column: Option<String>,
        /// Keep the transaction metadata (connector option
        /// `provide.transaction.metadata`) as the columns
        /// `<transaction_prefix>id` (STRING), `..total_order` and
        /// `..data_collection_order` (BIGINT); null for events without it.
        /// Default `false`.
        #[serde(default)]
        transaction: bool,
        /// Prefix of the transaction columns. Default `"__txn_"`.
        #[serde(default = "default_txn_prefix")]
        transaction_prefix: String,
    },
}

fn yes() -> bool {
    true
}

fn default_op_column() -> String {
    "__op".to_string()
}

fn default_source_prefix() -> String {
    "__source_".to_string()
}

fn default_txn_prefix() -> String {
    "__txn_".to_string()
}

fn underscore() -> String {
    "_".to_string()
}

impl TransformSpec {
    /// The `op` name of this transform, as written in the configuration.
    pub fn op(&self) -> &'static str {
        match self {
            TransformSpec::Rename { .. } => "rename",
            TransformSpec::SnakeCase { .. } => "snake_case",
            TransformSpec::Cast { .. } => "cast",
            TransformSpec::Timestamp { .. } => "timestamp",
            TransformSpec::Flatten { .. } => "flatten",
            TransformSpec::Drop { .. } => "drop",
            TransformSpec::Mask { .. } => "mask",
            TransformSpec::Hash { .. } => "hash",
            TransformSpec::Derive { .. } => "derive",
            TransformSpec::Sql { .. } => "sql",
            TransformSpec::Filter { .. } => "filter",
            TransformSpec::Debezium { .. } => "debezium",
        }
    }
}

/// Debug that never shows a hash salt.
impl fmt::Debug for TransformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformSpec::Rename { columns } => {
                f.debug_struct("Rename").field("columns", columns).finish()
            }
            TransformSpec::SnakeCase { nested } => {
                f.debug_struct("SnakeCase").field("nested", nested).finish()
            }
            TransformSpec::Cast { columns } => {
                f.debug_struct("Cast").field("columns", columns).finish()
            }
            TransformSpec::Timestamp {
                column,
                from,
                format,
                into,
            } => f
                .debug_struct("Timestamp")
                .field("column", column)
                .field("from", from)
                .field("format", format)
                .field("into", into)
                .finish(),
            TransformSpec::Flatten { separator, columns } => f
                .debug_struct("Flatten")
                .field("separator", separator)
                .field("columns", columns)
                .finish(),
            TransformSpec::Drop { columns } => {
                f.debug_struct("Drop").field("columns", columns).finish()
            }
            TransformSpec::Mask { columns, with } => f
                .debug_struct("Mask")
                .field("columns", columns)
                .field("with", with)
                .finish(),
            TransformSpec::Hash {
                columns,
                salt,
                salt_env,
            } => f
                .debug_struct("Hash")
                .field("columns", columns)
                .field("salt", &salt.as_ref().map(|_| "<redacted>"))
                .field("salt_env", salt_env)
                .finish(),
            TransformSpec::Derive { column, expr } => f
                .debug_struct("Derive")
                .field("column", column)
                .field("expr", expr)
                .finish(),
            TransformSpec::Sql { query } => f.debug_struct("Sql").field("query", query).finish(),
            TransformSpec::Filter { expr } => f.debug_struct("Filter").field("expr", expr).finish(),
            TransformSpec::Debezium {
                op_column,
                source_fields,
                source_prefix,
                source_column,
                ts_ms_column,
                transaction,
                transaction_prefix,
            } => f
                .debug_struct("Debezium")
                .field("op_column", op_column)
                .field("source_fields", source_fields)
                .field("source_prefix", source_prefix)
                .field("source_column", source_column)
                .field("ts_ms_column", ts_ms_column)
                .field("transaction", transaction)
                .field("transaction_prefix", transaction_prefix)
                .finish(),
        }
    }
}

/// What a `timestamp` transform's column holds.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFrom {
    /// Text: RFC 3339 / ISO 8601 by default, or the `format` pattern. A
    /// column that already is a date or timestamp is converted as it is.
    #[default]
    String,
    /// Seconds since 1970-01-01 UTC (integers, decimals, or numeric strings;
    /// fractions keep microseconds).
    EpochSeconds,
    /// Milliseconds since 1970-01-01 UTC.
    EpochMillis,
    /// Microseconds since 1970-01-01 UTC.
    EpochMicros,
}

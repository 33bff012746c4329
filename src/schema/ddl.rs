//! Parser for Spark-style DDL column lists (as accepted by `StructType.fromDDL`) into an Arrow
//! [`Schema`], e.g. `user STRING, amount DECIMAL(10,2) NOT NULL COMMENT 'in cents'`.
//!
//! Grammar (keywords and type names are case-insensitive):
//! ```text
//! ddl    := column (',' column)*
//! column := name type ['NOT' 'NULL'] ['COMMENT' string]
//! field  := name [':'] type ['NOT' 'NULL'] ['COMMENT' string]      (inside STRUCT<...>)
//! type   := STRING | VARCHAR(n) | CHAR(n) | BINARY | BOOLEAN | TINYINT | SMALLINT | INT | BIGINT
//!         | FLOAT | DOUBLE | DECIMAL[(p[,s])] | DATE | TIMESTAMP[_LTZ] | TIMESTAMP_NTZ
//!         | ARRAY<type> | MAP<type,type> | STRUCT<[field (',' field)*]>
//! name   := [A-Za-z0-9_]+ | `any text, `` escapes a backquote`
//! ```
//! Types map to Arrow following the Delta Lake protocol's physical mapping: timestamps are
//! microseconds (`TIMESTAMP` in UTC, `TIMESTAMP_NTZ` without a zone), list elements are named
//! `element`, map entries `key_value` with a non-null `key` and a nullable `value`. Columns are
//! nullable unless `NOT NULL`; comments are stored in field metadata under `"comment"`. Column
//! names must be unique case-insensitively (at each struct level). Positions in errors are
//! 0-based character offsets into the DDL string.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

const EXPECTED_TYPES: &str = "STRING, VARCHAR(n), CHAR(n), BINARY, BOOLEAN, TINYINT, SMALLINT, \
     INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s), DATE, TIMESTAMP, TIMESTAMP_NTZ, ARRAY<T>, MAP<K,V>, \
     STRUCT<...>";

/// Error produced by [`parse_ddl`]; every variant says where the problem is and what was expected.
#[allow(missing_docs)] // each variant's message is its documentation
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    #[error("empty DDL; expected at least one column definition such as `name STRING`")]
    Empty,
    #[error(
        "unexpected character `{ch}` at position {pos}; expected a name, type, number, quoted \
         string or one of , < > ( ) :"
    )]
    UnexpectedChar { ch: char, pos: usize },
    #[error("unterminated quoted text starting at position {pos}; expected a closing {close}")]
    Unterminated { close: char, pos: usize },
    #[error(
        "unknown type `{ty}` for column `{column}` at position {pos}; expected one of {}",
        EXPECTED_TYPES
    )]
    UnknownType {
        ty: String,
        column: String,
        pos: usize,
    },
    #[error(
        "invalid DECIMAL({precision},{scale}) for column `{column}` at position {pos}; expected \
         1 <= precision <= 38 and scale <= precision"
    )]
    InvalidDecimal {
        precision: u64,
        scale: u64,
        column: String,
        pos: usize,
    },
    #[error(
        "duplicate column name `{column}` at position {pos}; expected unique names \
         (compared case-insensitively)"
    )]
    DuplicateColumn { column: String, pos: usize },
    #[error("syntax error{context} at position {pos}: expected {expected}, found {found}")]
    Syntax {
        expected: String,
        found: String,
        context: String,
        pos: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Punct(char),
    Eof,
}

/// Splits the DDL into `(token, character position)` pairs, ending with `Tok::Eof`.
fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, DdlError> {
    let chars: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    while let Some(&c) = chars.get(i) {
        let pos = i;
        i += 1;
        let tok = match c {
            _ if c.is_whitespace() => continue,
            ',' | '<' | '>' | '(' | ')' | ':' => Tok::Punct(c),
            '`' | '\'' | '"' => {
                let mut text = String::new();
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(DdlError::Unterminated { close: c, pos });
                    };
                    i += 1;
                    if ch == '\\' && c != '`' && i < chars.len() {
                        text.push(unescape(chars[i]));
                        i += 1;
                    } else if ch == c && c == '`' && chars.get(i) == Some(&'`') {
                        text.push('`'); // `` inside a backquoted name is a literal backquote
                        i += 1;
                    } else if ch == c {
                        break;
                    } else {
                        text.push(ch);
                    }
                }
                if c == '`' {
                    Tok::Quoted(text)
                } else {
                    Tok::Str(text)
                }
            }
            _ if c.is_alphanumeric() || c == '_' => {
                while chars
                    .get(i)
                    .is_some_and(|&d| d.is_alphanumeric() || d == '_')
                {
                    i += 1;
                }
                Tok::Word(chars[pos..i].iter().collect())
            }
            _ => return Err(DdlError::UnexpectedChar { ch: c, pos }),
        };
        out.push((tok, pos));
    }
    out.push((Tok::Eof, chars.len()));
    Ok(out)
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        other => other,
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    /// Dotted path of the column being parsed (`outer.inner`), used in error messages.
    column: String,
}

impl Parser {
    fn tok(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i].1
    }

    fn err(&self, expected: impl Into<String>) -> DdlError {
        let found = match self.tok() {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Quoted(w) => format!("`{}`", w.replace('`', "``")),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of input".to_string(),
        };
        let context = match self.column.as_str() {
            "" => String::new(),
            c => format!(" in column `{c}`"),
        };
        let (expected, pos) = (expected.into(), self.pos());
        DdlError::Syntax {
            expected,
            found,
            context,
            pos,
        }
    }

    /// Consumes the current token if `accept` says so (never consumes `Eof`).
    fn eat_if(&mut self, accept: impl Fn(&Tok) -> bool) -> bool {
        let hit = accept(self.tok());
        self.i += hit as usize;
        hit
    }

    fn eat(&mut self, c: char) -> bool {
        self.eat_if(|t| *t == Tok::Punct(c))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        self.eat_if(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw)))
    }

    fn expect(&mut self, c: char) -> Result<(), DdlError> {
        match self.eat(c) {
            true => Ok(()),
            false => Err(self.err(format!("`{c}`"))),
        }
    }

    fn number(&mut self) -> Result<u64, DdlError> {
        let n = match self.tok() {
            Tok::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => w.parse().ok(),
            _ => None,
        };
        self.i += n.is_some() as usize;
        n.ok_or_else(|| self.err("a number (at most 20 digits)"))
    }

    fn path(&self, name: &str) -> String {
        match self.column.as_str() {
            "" => name.to_string(),
            outer => format!("{outer}.{name}"),
        }
    }

    /// `field (',' field)*` up to end of input, or up to `>` inside `STRUCT<...>` (may be empty).
    fn fields(&mut self, in_struct: bool) -> Result<Vec<Field>, DdlError> {
        let (end, end_name) = match in_struct {
            true => (Tok::Punct('>'), "`>`"),
            false => (Tok::Eof, "end of input"),
        };
        let (mut fields, mut seen) = (Vec::new(), HashSet::new());
        if in_struct && self.eat('>') {
            return Ok(fields);
        }
        loop {
            fields.push(self.field(in_struct, &mut seen)?);
            if *self.tok() == end {
                self.i += in_struct as usize; // consume `>`, but never `Eof`
                return Ok(fields);
            }
            if !self.eat(',') {
                let last = self.path(fields[fields.len() - 1].name());
                let mut err = self.err(format!("`,`, NOT NULL, COMMENT or {end_name}"));
                if let DdlError::Syntax { context, .. } = &mut err {
                    *context = format!(" after column `{last}`");
                }
                return Err(err);
            }
        }
    }

    /// `name [':'] type [NOT NULL] [COMMENT 'text']`; the colon is only accepted inside STRUCT.
    fn field(&mut self, in_struct: bool, seen: &mut HashSet<String>) -> Result<Field, DdlError> {
        let pos = self.pos();
        let name = match self.tok() {
            Tok::Word(w) | Tok::Quoted(w) if !w.is_empty() => w.clone(),
            _ => return Err(self.err("a column name")),
        };
        self.i += 1;
        let path = self.path(&name);
        let outer = std::mem::replace(&mut self.column, path);
        if !seen.insert(name.to_lowercase()) {
            let column = self.column.clone();
            return Err(DdlError::DuplicateColumn { column, pos });
        }
        if in_struct {
            self.eat(':');
        }
        let data_type = self.data_type()?;
        let (mut nullable, mut metadata) = (true, HashMap::new());
        loop {
            if self.eat_kw("NOT") {
                if !self.eat_kw("NULL") {
                    return Err(self.err("NULL after NOT"));
                }
                nullable = false;
            } else if self.eat_kw("COMMENT") {
                let Tok::Str(text) = self.tok() else {
                    return Err(self.err("a quoted string after COMMENT"));
                };
                metadata.insert("comment".to_string(), text.clone());
                self.i += 1;
            } else {
                break;
            }
        }
        self.column = outer;
        Ok(Field::new(name, data_type, nullable).with_metadata(metadata))
    }

    /// `<T1, ..., TN>`: the element type of ARRAY or the key and value types of MAP.
    fn type_args<const N: usize>(&mut self) -> Result<[DataType; N], DdlError> {
        let mut args = [(); N].map(|_| DataType::Null);
        for (i, arg) in args.iter_mut().enumerate() {
            self.expect(if i == 0 { '<' } else { ',' })?;
            *arg = self.data_type()?;
        }
        self.expect('>')?;
        Ok(args)
    }

    fn data_type(&mut self) -> Result<DataType, DdlError> {
        let pos = self.pos();
        let Tok::Word(ty) = self.tok().clone() else {
            return Err(self.err(format!("a data type (one of {EXPECTED_TYPES})")));
        };
        self.i += 1;
        Ok(match ty.to_ascii_uppercase().as_str() {
            "STRING" => DataType::Utf8,
            "VARCHAR" | "CHAR" => {
                self.expect('(')?;
                self.number()?;
                self.expect(')')?;
                DataType::Utf8
            }
            "BINARY" => DataType::Binary,
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" | "BYTE" => DataType::Int8,
            "SMALLINT" | "SHORT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" | "LONG" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => DataType::Float64,
            "DATE" => DataType::Date32,
            "TIMESTAMP" | "TIMESTAMP_LTZ" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let (mut precision, mut scale) = (10, 0);
                if self.eat('(') {
                    precision = self.number()?;
                    if self.eat(',') {
                        scale = self.number()?;
                    }
                    self.expect(')')?;
                }
                if precision == 0 || precision > 38 || scale > precision {
                    let column = self.column.clone();
                    return Err(DdlError::InvalidDecimal {
                        precision,
                        scale,
                        column,
                        pos,
                    });
                }
                DataType::Decimal128(precision as u8, scale as i8)
            }
            "ARRAY" => self.type_args::<1>().map(|[element]| list_of(element))?,
            "MAP" => self
                .type_args::<2>()
                .map(|[key, value]| map_of(key, value))?,
            "STRUCT" => {
                self.expect('<')?;
                DataType::Struct(self.fields(true)?.into())
            }
            _ => {
                let column = self.column.clone();
                return Err(DdlError::UnknownType { ty, column, pos });
            }
        })
    }
}

/// Delta's array type: elements are always nullable and named `element`.
fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", element, true)))
}

/// Delta's map type: `key_value` entries with a non-null `key` and a nullable `value`.
fn map_of(key: DataType, value: DataType) -> DataType {
    let kv = vec![
        Field::new("key", key, false),
        Field::new("value", value, true),
    ];
    let entries = Field::new("key_value", DataType::Struct(kv.into()), false);
    DataType::Map(Arc::new(entries), false)
}

/// Parses a Spark-style DDL column list (e.g. `user STRING, amount DOUBLE NOT NULL`) into an
/// Arrow [`Schema`] using the Delta Lake type mapping described in the module docs.
pub fn parse_ddl(ddl: &str) -> Result<Schema, DdlError> {
    let toks = tokenize(ddl)?;
    if toks.len() == 1 {
        return Err(DdlError::Empty);
    }
    let column = String::new();
    Ok(Schema::new(Parser { toks, i: 0, column }.fields(false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Fields;

    fn ty(ddl_type: &str) -> DataType {
        let schema = parse_ddl(&format!("c {ddl_type}")).unwrap();
        schema.field(0).data_type().clone()
    }

    fn comment(f: Field, text: &str) -> Field {
        f.with_metadata(HashMap::from([("comment".to_string(), text.to_string())]))
    }

    #[test]
    fn example_schema() {
        let s =
            parse_ddl("user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP").unwrap();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let expected = Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("action", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("event_time", utc, true),
        ]);
        assert_eq!(s, expected);
    }

    #[test]
    fn every_type_and_alias() {
        use DataType::*;
        let utc = Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let cases = [
            ("STRING/varchar(20)/Char( 3 )", Utf8),
            ("BINARY", Binary),
            ("BOOLEAN/bool", Boolean),
            ("TINYINT/BYTE", Int8),
            ("SMALLINT/short", Int16),
            ("INT/Integer", Int32),
            ("BIGINT/long", Int64),
            ("FLOAT/REAL", Float32),
            ("DOUBLE", Float64),
            ("DATE", Date32),
            ("timestamp/TIMESTAMP_LTZ", utc),
            ("TIMESTAMP_NTZ", Timestamp(TimeUnit::Microsecond, None)),
            ("DECIMAL/dec/NUMERIC/numeric(10)", Decimal128(10, 0)),
            ("dec(5)/DECIMAL(5,0)", Decimal128(5, 0)),
            ("NUMERIC(12, 4)", Decimal128(12, 4)),
            ("DECIMAL(38,38)", Decimal128(38, 38)),
            ("DECIMAL(1,0)", Decimal128(1, 0)),
            (
                "MAP<INT, MAP<STRING, DOUBLE>>",
                map_of(Int32, map_of(Utf8, Float64)),
            ),
        ];
        for (names, expected) in cases {
            for name in names.split('/') {
                assert_eq!(ty(name), expected, "{name}");
            }
        }
    }

    #[test]
    fn delta_list_and_map_layout() {
        let key = Field::new("key", DataType::Utf8, false);
        let kv = Fields::from(vec![key, Field::new("value", DataType::Int32, true)]);
        let entries = Field::new("key_value", DataType::Struct(kv), false);
        assert_eq!(
            ty("MAP<STRING,INT>"),
            DataType::Map(Arc::new(entries), false)
        );
        let element = Field::new("element", DataType::Int64, true);
        assert_eq!(ty("array<BIGINT>"), DataType::List(Arc::new(element)));
    }

    #[test]
    fn nested_types() {
        let s = parse_ddl(
            "items ARRAY<STRUCT<sku: STRING NOT NULL, qty INT COMMENT 'n', tags array<string>>>, \
             attrs map<string,array<int>>, empty STRUCT<>",
        )
        .unwrap();
        let inner = Fields::from(vec![
            Field::new("sku", DataType::Utf8, false),
            comment(Field::new("qty", DataType::Int32, true), "n"),
            Field::new("tags", list_of(DataType::Utf8), true),
        ]);
        assert_eq!(s.field(0).data_type(), &list_of(DataType::Struct(inner)));
        let attrs = map_of(DataType::Utf8, list_of(DataType::Int32));
        assert_eq!(s.field(1).data_type(), &attrs);
        assert_eq!(s.field(2).data_type(), &DataType::Struct(Fields::empty()));
    }

    #[test]
    fn not_null_comments_and_names() {
        let ddl = r#"id BIGINT NOT NULL COMMENT 'it\'s the \\ id', `my col` int comment 'x',
            `a``b` STRING not null, _9 DATE COMMENT "say \"hi\"" NOT NULL"#;
        let expected = Schema::new(vec![
            comment(Field::new("id", DataType::Int64, false), r"it's the \ id"),
            comment(Field::new("my col", DataType::Int32, true), "x"),
            Field::new("a`b", DataType::Utf8, false),
            comment(Field::new("_9", DataType::Date32, false), "say \"hi\""),
        ]);
        assert_eq!(parse_ddl(ddl).unwrap(), expected);
    }

    #[test]
    fn whitespace_and_newlines() {
        let s = parse_ddl("\n  a\tINT ,\r\n  b   ARRAY < STRUCT < x : INT > >  \n").unwrap();
        let x = Fields::from(vec![Field::new("x", DataType::Int32, true)]);
        let expected = Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", list_of(DataType::Struct(x)), true),
        ]);
        assert_eq!(s, expected);
        assert!(parse_ddl("a STRUCT<a INT>, b STRUCT<a INT>").is_ok());
    }

    #[test]
    fn exact_error_messages() {
        assert_eq!(parse_ddl(" \n\t ").unwrap_err(), DdlError::Empty);
        let e = parse_ddl("user STRNG").unwrap_err().to_string();
        let want = format!(
            "unknown type `STRNG` for column `user` at position 5; expected one of {EXPECTED_TYPES}"
        );
        assert_eq!(e, want);
        assert!(
            e.contains("STRING, VARCHAR(n), CHAR(n), BINARY, BOOLEAN, TINYINT"),
            "{e}"
        );
    }

    /// `ddl | substring the error message must contain`, one case per line.
    const ERROR_CASES: &str = "
        | empty DDL; expected at least one column
        a INT; b INT | unexpected character `;` at position 5
        a STRING COMMENT 'oops | unterminated quoted text starting at position 17; expected a closing '
        `a INT | unterminated quoted text starting at position 0; expected a closing `
        s STRUCT<a INT, b ARRAY<FOO>> | unknown type `FOO` for column `s.b` at position 24
        price DECIMAL(39,2) | invalid DECIMAL(39,2) for column `price` at position 6; expected 1 <= precision <= 38
        p DECIMAL(0) | invalid DECIMAL(0,0) for column `p` at position 2
        p DECIMAL(5,6) | invalid DECIMAL(5,6) for column `p` at position 2
        p DECIMAL(x) | in column `p` at position 10: expected a number (at most 20 digits), found `x`
        p DEC(99999999999999999999) | in column `p` at position 6: expected a number
        a INT, b STRING, A DOUBLE | duplicate column name `A` at position 17; expected unique names
        s STRUCT<x INT, X INT> | duplicate column name `s.X` at position 16
        a INT b | after column `a` at position 6: expected `,`, NOT NULL, COMMENT or end of input, found `b`
        a INT, | at position 6: expected a column name, found end of input
        , a INT | at position 0: expected a column name, found `,`
        a | in column `a` at position 1: expected a data type (one of STRING
        a: INT | in column `a` at position 1: expected a data type (one of STRING
        'a' INT | at position 0: expected a column name, found string 'a'
        `` INT | at position 0: expected a column name, found ``
        a ARRAY<INT | in column `a` at position 11: expected `>`, found end of input
        a ARRAY<INT>> | after column `a` at position 12: expected `,`, NOT NULL, COMMENT or end of input, found `>`
        a ARRAY INT | in column `a` at position 8: expected `<`, found `INT`
        a DECIMAL(10,2 | in column `a` at position 14: expected `)`, found end of input
        a VARCHAR(10> | in column `a` at position 12: expected `)`, found `>`
        a VARCHAR 10) | in column `a` at position 10: expected `(`, found `10`
        a INT) | after column `a` at position 5: expected `,`, NOT NULL, COMMENT or end of input, found `)`
        m MAP<STRING> | in column `m` at position 12: expected `,`, found `>`
        s STRUCT<x INT y INT> | after column `s.x` at position 15: expected `,`, NOT NULL, COMMENT or `>`, found `y`
        s STRUCT<x INT,> | in column `s` at position 15: expected a column name, found `>`
        s STRUCT<x STRUCT<y INT> | after column `s.x` at position 24: expected `,`, NOT NULL, COMMENT or `>`
        a INT NOT NUL | in column `a` at position 10: expected NULL after NOT, found `NUL`
        a INT COMMENT x | in column `a` at position 14: expected a quoted string after COMMENT, found `x`
    ";

    #[test]
    fn errors_say_where_and_what() {
        for line in ERROR_CASES.lines().filter(|l| !l.trim().is_empty()) {
            let (ddl, want) = line.trim().split_once('|').unwrap();
            let e = parse_ddl(ddl.trim()).unwrap_err().to_string();
            assert!(e.contains(want.trim()), "{ddl}: {e}");
        }
    }
}

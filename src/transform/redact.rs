//! `mask` and `hash`: replacing sensitive values.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray as _, StringArray, StringBuilder};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, Field};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};

use super::{ColumnFn, Compiled, Ctx};

/// A compiled `mask` of one column.
pub(crate) struct MaskFn {
    column: usize,
    with: String,
}

impl fmt::Debug for MaskFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mask({}, {:?})", self.column, self.with)
    }
}

/// The columns to replace, each once, in schema order.
fn targets(ctx: &Ctx<'_>, columns: &[String]) -> Result<Vec<usize>, String> {
    if columns.is_empty() {
        return Err("`columns` is empty; list the columns to replace".to_string());
    }
    let mut out = columns
        .iter()
        .map(|c| ctx.column(c))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn string_field(f: &Field) -> Arc<Field> {
    Arc::new(
        Field::new(f.name(), DataType::Utf8, f.is_nullable()).with_metadata(f.metadata().clone()),
    )
}

pub(crate) fn compile_mask(
    ctx: &Ctx<'_>,
    columns: &[String],
    with: &Option<String>,
) -> Result<Compiled, String> {
    let with = with.clone().unwrap_or_else(|| "****".to_string());
    let mut out = super::keep_all(ctx.schema);
    for i in targets(ctx, columns)? {
        let field = string_field(ctx.schema.field(i));
        let mask = MaskFn {
            column: i,
            with: with.clone(),
        };
        out[i] = (field, ColumnFn::Mask(mask));
    }
    Ok(Compiled::columns(out))
}

impl MaskFn {
    pub(crate) fn eval(&self, batch: &RecordBatch) -> ArrayRef {
        let input = batch.column(self.column);
        let n = input.len();
        let nulls = input.logical_nulls();
        let valid = n - nulls.as_ref().map_or(0, |b| b.null_count());
        let mut b = StringBuilder::with_capacity(n, valid * self.with.len());
        match &nulls {
            None => (0..n).for_each(|_| b.append_value(&self.with)),
            Some(nulls) => {
                for is_valid in nulls.iter() {
                    if is_valid {
                        b.append_value(&self.with);
                    } else {
                        b.append_null();
                    }
                }
            }
        }
        Arc::new(b.finish())
    }
}

/// A hash salt: never shown.
struct Salt(Vec<u8>);

/// A compiled `hash` of one column.
pub(crate) struct HashFn {
    column: usize,
    /// The salt already fed in (cloned for every value).
    salted: Sha256,
    salt: Arc<Salt>,
}

impl fmt::Debug for HashFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let salted = if self.salt.0.is_empty() {
            ""
        } else {
            ", salted"
        };
        write!(f, "Hash({}{salted})", self.column)
    }
}

pub(crate) fn compile_hash(
    ctx: &Ctx<'_>,
    columns: &[String],
    salt: Option<&str>,
    salt_env: Option<&str>,
) -> Result<Compiled, String> {
    let salt = match (salt, salt_env) {
        (Some(_), Some(_)) => {
            return Err(
                "both `salt` and `salt_env` are set; keep one (preferably `salt_env`)".to_string(),
            );
        }
        (Some(s), None) => s.as_bytes().to_vec(),
        (None, Some(var)) => match std::env::var_os(var) {
            Some(v) => v.into_encoded_bytes(),
            None => {
                return Err(format!(
                    "`salt_env` names the environment variable `{var}`, which is not set; set it, or remove `salt_env`"
                ));
            }
        },
        (None, None) => Vec::new(),
    };
    let salt = Arc::new(Salt(salt));
    let mut salted = Sha256::new();
    salted.update(&salt.0);
    let mut out = super::keep_all(ctx.schema);
    for i in targets(ctx, columns)? {
        let field = ctx.schema.field(i);
        let ty = field.data_type();
        if !(hashes_bytes(ty) || can_cast_types(ty, &DataType::Utf8)) {
            return Err(format!(
                "`{}` is {ty}, which has no string form to hash; hash its fields instead (flatten it first)",
                field.name()
            ));
        }
        let function = HashFn {
            column: i,
            salted: salted.clone(),
            salt: salt.clone(),
        };
        out[i] = (string_field(field), ColumnFn::Hash(function));
    }
    Ok(Compiled::columns(out))
}

/// Types whose values are hashed as their bytes.
fn hashes_bytes(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

impl HashFn {
    pub(crate) fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef, ArrowError> {
        let input = batch.column(self.column);
        let n = input.len();
        let mut b = StringBuilder::with_capacity(n, 64 * (n - input.null_count()));
        let mut hex = [0u8; 64];
        let mut one = |value: Option<&[u8]>| match value {
            None => b.append_null(),
            Some(v) => {
                let mut h = self.salted.clone();
                h.update(v);
                let digest = h.finalize();
                // Cannot fail: 32 bytes always make 64 hex digits.
                let _ = hex::encode_to_slice(digest.as_slice(), &mut hex);
                b.append_value(std::str::from_utf8(&hex).unwrap_or_default());
            }
        };
        match input.data_type() {
            DataType::Utf8 => input
                .as_string::<i32>()
                .iter()
                .for_each(|v| one(v.map(str::as_bytes))),
            DataType::LargeUtf8 => input
                .as_string::<i64>()
                .iter()
                .for_each(|v| one(v.map(str::as_bytes))),
            DataType::Utf8View => input
                .as_string_view()
                .iter()
                .for_each(|v| one(v.map(str::as_bytes))),
            DataType::Binary => input.as_binary::<i32>().iter().for_each(&mut one),
            DataType::LargeBinary => input.as_binary::<i64>().iter().for_each(&mut one),
            DataType::BinaryView => input.as_binary_view().iter().for_each(&mut one),
            DataType::FixedSizeBinary(_) => input.as_fixed_size_binary().iter().for_each(&mut one),
            _ => {
                let text = cast(input, &DataType::Utf8)?;
                let text: &StringArray = text.as_string::<i32>();
                text.iter().for_each(|v| one(v.map(str::as_bytes)));
            }
        }
        Ok(Arc::new(b.finish()))
    }
}

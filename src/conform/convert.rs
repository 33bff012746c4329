//! Running a plan: every array converted to its table column with arrow
//! kernels (shared, not copied, where the type is the same).

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, MapArray,
    PrimitiveArray, StringArray, StructArray,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{
    DataType, Decimal128Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampSecondType,
};
use arrow::error::ArrowError;

use super::nulls::trim;
use super::plan::{Node, Source, StructPlan};

pub(super) fn convert_children(
    plan: &StructPlan,
    columns: &[ArrayRef],
    len: usize,
) -> Result<Vec<ArrayRef>, ArrowError> {
    plan.children
        .iter()
        .zip(plan.fields.iter())
        .map(|(child, field)| match &child.source {
            Source::Input(i, node) => convert(node, &columns[*i]),
            Source::Missing => Ok(new_null_array(field.data_type(), len)),
        })
        .collect()
}

pub(super) fn convert(node: &Node, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    Ok(match node {
        Node::Same => array.clone(),
        Node::AllNull(dt) => new_null_array(dt, array.len()),
        Node::Cast(dt) => cast_with_options(
            array,
            dt,
            &CastOptions {
                safe: false,
                ..Default::default()
            },
        )?,
        Node::Retype(dt) => match dt {
            DataType::Decimal128(..) => Arc::new(
                array
                    .as_primitive::<Decimal128Type>()
                    .clone()
                    .with_data_type(dt.clone()),
            ),
            _ => Arc::new(
                array
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_data_type(dt.clone()),
            ),
        },
        Node::Rescale { unit, to, .. } => {
            // Rows that would overflow were rejected before (see check_node);
            // a null slot's value is meaningless either way.
            let out: PrimitiveArray<TimestampMicrosecondType> = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .unary(|v| v.wrapping_mul(1_000_000)),
                _ => array
                    .as_primitive::<TimestampMillisecondType>()
                    .unary(|v| v.wrapping_mul(1_000)),
            };
            Arc::new(out.with_data_type(to.clone()))
        }
        Node::Uuid => Arc::new(uuid_strings(array.as_fixed_size_binary())?),
        Node::Struct(plan) => {
            let s = array.as_struct();
            let columns = convert_children(plan, s.columns(), s.len())?;
            Arc::new(StructArray::try_new_with_length(
                plan.fields.clone(),
                columns,
                s.nulls().cloned(),
                s.len(),
            )?)
        }
        Node::List { field, item, .. } => {
            let list = array.as_list::<i32>();
            let (offsets, values) = trim(list.offsets(), list.values());
            let values = convert(item, &values)?;
            Arc::new(ListArray::try_new(
                field.clone(),
                offsets,
                values,
                list.nulls().cloned(),
            )?)
        }
        Node::Map {
            field,
            ordered,
            key,
            value,
            ..
        } => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let (offsets, entries) = trim(map.offsets(), &entries);
            let entries = entries.as_struct();
            let DataType::Struct(fields) = field.data_type() else {
                return Err(ArrowError::SchemaError(
                    "map entries must be a struct".into(),
                ));
            };
            let columns = vec![
                convert(key, entries.column(0))?,
                convert(value, entries.column(1))?,
            ];
            let entries =
                StructArray::try_new_with_length(fields.clone(), columns, None, entries.len())?;
            Arc::new(MapArray::try_new(
                field.clone(),
                offsets,
                entries,
                map.nulls().cloned(),
                *ordered,
            )?)
        }
    })
}

/// 16-byte uuids as their canonical lowercase hyphenated strings.
pub(super) fn uuid_strings(array: &FixedSizeBinaryArray) -> Result<StringArray, ArrowError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = array.len();
    let too_big = || ArrowError::ComputeError("too many uuids for one string array".into());
    let total = i32::try_from(n.checked_mul(36).ok_or_else(too_big)?).map_err(|_| too_big())?;
    let mut bytes = Vec::with_capacity(total as usize);
    for i in 0..n {
        for (j, b) in array.value(i).iter().enumerate() {
            if matches!(j, 4 | 6 | 8 | 10) {
                bytes.push(b'-');
            }
            bytes.push(HEX[(b >> 4) as usize]);
            bytes.push(HEX[(b & 15) as usize]);
        }
    }
    let offsets = OffsetBuffer::new((0..=total).step_by(36).collect::<Vec<i32>>().into());
    StringArray::try_new(offsets, Buffer::from_vec(bytes), array.nulls().cloned())
}

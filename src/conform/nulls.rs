//! Rows that cannot be stored: nulls in NOT NULL columns, nested fields,
//! array elements and map values, and timestamps beyond the microsecond
//! range, found at each array's granularity and mapped to the batch's rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use arrow::datatypes::{TimeUnit, TimestampMillisecondType, TimestampSecondType};

use super::plan::{Node, Source, StructPlan};

/// Rows that cannot be stored: (reason, rows flagged), at one array's granularity.
pub(super) type Violations = Vec<(String, BooleanBuffer)>;

pub(super) fn null_violation(
    path: &str,
    array: &dyn Array,
    parent: Option<&NullBuffer>,
    out: &mut Violations,
) {
    let Some(nulls) = array.logical_nulls() else {
        return;
    };
    let mut mask = !nulls.inner();
    if let Some(parent) = parent {
        mask = &mask & parent.inner();
    }
    if mask.count_set_bits() > 0 {
        out.push((
            format!("`{path}` is NOT NULL in the table but the value is null"),
            mask,
        ));
    }
}

/// Checks a struct's (or the batch's) children. A null in a NOT NULL field only
/// counts where the struct itself is valid, as in Arrow's own rule.
pub(super) fn check_children(
    plan: &StructPlan,
    columns: &[ArrayRef],
    nulls: Option<&NullBuffer>,
    out: &mut Violations,
) {
    for child in &plan.children {
        let Source::Input(i, node) = &child.source else {
            continue;
        };
        let array = &columns[*i];
        if child.check_null {
            null_violation(&child.path, array.as_ref(), nulls, out);
        }
        check_node(node, array, out);
    }
}

pub(super) fn check_node(node: &Node, array: &ArrayRef, out: &mut Violations) {
    match node {
        Node::Rescale { unit, path, .. } => {
            let (factor, values) = match unit {
                TimeUnit::Second => (
                    1_000_000,
                    array.as_primitive::<TimestampSecondType>().values(),
                ),
                _ => (
                    1_000,
                    array.as_primitive::<TimestampMillisecondType>().values(),
                ),
            };
            let (lo, hi) = (i64::MIN / factor, i64::MAX / factor);
            let nulls = array.nulls();
            let mask = BooleanBuffer::collect_bool(array.len(), |i| {
                (values[i] < lo || values[i] > hi) && nulls.is_none_or(|n| n.is_valid(i))
            });
            if mask.count_set_bits() > 0 {
                out.push((
                    format!(
                        "`{path}`: the timestamp is out of the range of microsecond timestamps"
                    ),
                    mask,
                ));
            }
        }
        Node::Struct(plan) => {
            let s = array.as_struct();
            check_children(plan, s.columns(), s.nulls(), out);
        }
        Node::List {
            item,
            check_null,
            path,
            ..
        } => {
            let list = array.as_list::<i32>();
            let (offsets, values) = trim(list.offsets(), list.values());
            let mut inner = Vec::new();
            if *check_null {
                null_violation(path, values.as_ref(), None, &mut inner);
            }
            check_node(item, &values, &mut inner);
            out.extend(inner.into_iter().map(|(r, m)| (r, to_rows(&m, &offsets))));
        }
        Node::Map {
            key,
            value,
            check_null,
            path,
            ..
        } => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let (offsets, entries) = trim(map.offsets(), &entries);
            let entries = entries.as_struct();
            let mut inner = Vec::new();
            if *check_null {
                null_violation(path, entries.column(1).as_ref(), None, &mut inner);
            }
            check_node(key, entries.column(0), &mut inner);
            check_node(value, entries.column(1), &mut inner);
            out.extend(inner.into_iter().map(|(r, m)| (r, to_rows(&m, &offsets))));
        }
        _ => {}
    }
}

/// The values a list's offsets reference, and the offsets rebased onto them.
pub(super) fn trim(
    offsets: &OffsetBuffer<i32>,
    values: &ArrayRef,
) -> (OffsetBuffer<i32>, ArrayRef) {
    let start = offsets[0];
    let end = offsets[offsets.len() - 1];
    if start == 0 && end as usize == values.len() {
        return (offsets.clone(), values.clone());
    }
    let values = values.slice(start as usize, (end - start) as usize);
    if start == 0 {
        return (offsets.clone(), values);
    }
    let rebased: Vec<i32> = offsets.iter().map(|o| o - start).collect();
    (OffsetBuffer::new(rebased.into()), values)
}

/// Maps a mask over (rebased) list values to the list's rows.
pub(super) fn to_rows(mask: &BooleanBuffer, offsets: &OffsetBuffer<i32>) -> BooleanBuffer {
    let mut rows = vec![false; offsets.len() - 1];
    for j in mask.set_indices() {
        let row = offsets.partition_point(|&o| o as usize <= j) - 1;
        rows[row] = true;
    }
    BooleanBuffer::from(rows)
}

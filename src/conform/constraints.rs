//! Delta CHECK constraints (`delta.constraints.<name>` table properties),
//! compiled once with DataFusion and evaluated on whole batches.
//!
//! A row satisfies a constraint only when the expression is `true`: `false`
//! and `NULL` both violate it, as in Delta's reference implementation (write
//! `x IS NULL OR x > 0` to let nulls through).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray as _};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::physical_plan::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;

/// Prefix of constraint table properties.
pub const PROPERTY_PREFIX: &str = "delta.constraints.";

/// Errors compiling or evaluating a constraint.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    /// The expression does not parse or does not fit the schema.
    #[error("constraint `{name}` (`{expr}`): {message}")]
    Invalid {
        /// Constraint name.
        name: String,
        /// Its SQL text.
        expr: String,
        /// Why.
        message: String,
    },
    /// Evaluation failed on a batch (a bug or an unsupported expression).
    #[error("constraint `{name}`: evaluation failed: {message}")]
    Eval {
        /// Constraint name.
        name: String,
        /// Why.
        message: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = ConstraintError> = std::result::Result<T, E>;

/// One compiled CHECK constraint.
pub struct Constraint {
    name: String,
    expr: String,
    physical: Arc<dyn PhysicalExpr>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("name", &self.name)
            .field("expr", &self.expr)
            .finish()
    }
}

impl Constraint {
    /// Compiles `expr` against `schema`; it must be boolean.
    pub fn compile(name: &str, expr: &str, schema: &Schema) -> Result<Self> {
        let invalid = |message: String| ConstraintError::Invalid {
            name: name.to_string(),
            expr: expr.to_string(),
            message,
        };
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| invalid(e.to_string()))?;
        let logical = ctx
            .parse_sql_expr(expr, &df_schema)
            .map_err(|e| invalid(e.to_string()))?;
        let physical = ctx
            .create_physical_expr(logical, &df_schema)
            .map_err(|e| invalid(e.to_string()))?;
        let ty = physical
            .data_type(schema)
            .map_err(|e| invalid(e.to_string()))?;
        if ty != DataType::Boolean {
            return Err(invalid(format!("is {ty}, not a boolean")));
        }
        Ok(Constraint {
            name: name.to_string(),
            expr: expr.to_string(),
            physical,
        })
    }

    /// The constraint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the expression is true on each row (NULL is false).
    pub fn holds(&self, batch: &RecordBatch) -> Result<arrow::array::BooleanArray> {
        self.passes(batch)
    }

    /// Whether each row satisfies it (`true` only when the expression is).
    fn passes(&self, batch: &RecordBatch) -> Result<arrow::array::BooleanArray> {
        let eval = |message: String| ConstraintError::Eval {
            name: self.name.clone(),
            message,
        };
        let value = self
            .physical
            .evaluate(batch)
            .map_err(|e| eval(e.to_string()))?;
        let array = value
            .into_array(batch.num_rows())
            .map_err(|e| eval(e.to_string()))?;
        let bools = array
            .as_boolean_opt()
            .ok_or_else(|| eval("not boolean".into()))?;
        // NULL counts as a violation: fold the validity into the values.
        Ok(match bools.nulls() {
            None => bools.clone(),
            Some(nulls) => {
                let values = bools.values() & nulls.inner();
                arrow::array::BooleanArray::new(values, None)
            }
        })
    }
}

/// The CHECK constraints of one table.
#[derive(Debug, Default)]
pub struct Constraints {
    all: Vec<Constraint>,
}

/// A row that violates a constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Row index in the batch.
    pub row: usize,
    /// Which constraint (the first one violated), and its expression.
    pub reason: String,
}

impl Constraints {
    /// Compiles the `delta.constraints.*` entries of a table configuration
    /// against the table's Arrow schema.
    pub fn from_properties(props: &HashMap<String, String>, schema: &Schema) -> Result<Self> {
        let mut all = props
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(PROPERTY_PREFIX)?, v)))
            .map(|(name, expr)| Constraint::compile(name, expr, schema))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Constraints { all })
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The rows of `batch` that violate a constraint, in row order.
    pub fn violations(&self, batch: &RecordBatch) -> Result<Vec<Violation>> {
        let mut out: Vec<Violation> = Vec::new();
        if self.all.is_empty() || batch.num_rows() == 0 {
            return Ok(out);
        }
        let mut failed = vec![false; batch.num_rows()];
        for c in &self.all {
            let ok = c.passes(batch)?;
            if ok.true_count() == batch.num_rows() {
                continue;
            }
            for (row, pass) in ok.values().iter().enumerate() {
                if !pass && !failed[row] {
                    failed[row] = true;
                    out.push(Violation {
                        row,
                        reason: format!("violates CHECK constraint `{}`: {}", c.name, c.expr),
                    });
                }
            }
        }
        out.sort_by_key(|v| v.row);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("d"),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(-2.0),
                    Some(3.0),
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn violations_are_false_or_null_rows() {
        let b = batch();
        let props = HashMap::from([
            (
                "delta.constraints.non_negative".to_string(),
                "amount >= 0".to_string(),
            ),
            (
                "delta.constraints.has_user".to_string(),
                "user IS NOT NULL".to_string(),
            ),
            ("delta.appendOnly".to_string(), "true".to_string()),
        ]);
        let c = Constraints::from_properties(&props, &b.schema()).unwrap();
        let v = c.violations(&b).unwrap();
        let rows: Vec<usize> = v.iter().map(|v| v.row).collect();
        assert_eq!(rows, vec![1, 2, 3]);
        assert!(v[0].reason.contains("non_negative"), "{v:?}");
        assert!(v[1].reason.contains("has_user"), "{v:?}");
        // NULL amount violates `amount >= 0`.
        assert!(v[2].reason.contains("non_negative"), "{v:?}");
    }

    #[test]
    fn sql_functions_and_errors() {
        let b = batch();
        let ok = Constraint::compile("u", "upper(user) IN ('A', 'B', 'D')", &b.schema()).unwrap();
        assert_eq!(ok.passes(&b).unwrap().true_count(), 3);
        let e = Constraint::compile("x", "amount + 1", &b.schema()).unwrap_err();
        assert!(e.to_string().contains("not a boolean"), "{e}");
        let e = Constraint::compile("x", "missing > 1", &b.schema()).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(Constraints::default().violations(&b).unwrap().is_empty());
    }
}

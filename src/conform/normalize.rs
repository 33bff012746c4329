//! From decoded parts to rows of the table: the table's transforms, then
//! conforming to its value columns, with schema evolution. Both are planned
//! once per input schema (a topic can bring several writer schema versions)
//! and run on whole batches.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use super::{ConformError, Conformer};
use crate::config::{EvolutionPolicy, TransformSpec};
use crate::decode::Part;
use crate::fault::{Classify, Fault};
use crate::record::{Rejections, Stage};
use crate::transform::{TransformError, TransformPlan};

/// Failures that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The policy says to stop on this schema change.
    #[error("table `{table}`: {message}")]
    Policy {
        /// Table name.
        table: String,
        /// What changed and the fix.
        message: String,
    },
    /// A transform cannot be planned for the fixed input schema (the
    /// operator's fault), cannot run at all, or failed on a whole batch
    /// (inlet's fault); never a row's (those are rejections). Named as
    /// `tables.<name>.transforms[i] (<op>)`.
    #[error("tables.{table}.{source}")]
    Transform {
        /// Table name.
        table: String,
        /// The transform error.
        #[source]
        source: TransformError,
    },
    /// A bug.
    #[error("table `{table}`: {message}")]
    Internal {
        /// Table name.
        table: String,
        /// What failed.
        message: String,
    },
}

impl Classify for NormalizeError {
    fn fault(&self) -> Fault {
        match self {
            NormalizeError::Policy { .. } => Fault::Operator,
            NormalizeError::Transform { source, .. } => source.fault(),
            NormalizeError::Internal { .. } => Fault::Internal,
        }
    }
}

/// How rows of one input schema become table rows.
struct Plan {
    input: SchemaRef,
    fate: Fate,
    /// The value-schema generation the plan targets.
    generation: u64,
}

enum Fate {
    Ready(Option<TransformPlan>, Conformer),
    /// Rows of this input schema cannot become rows of the table.
    Refused(Stage, String),
}

/// Rows of one chunk in the table's value schema.
#[derive(Debug)]
pub struct Normalized {
    /// The rows, in the current value schema.
    pub batch: RecordBatch,
    /// The message index of each row, ascending.
    pub rows: Vec<usize>,
    /// Columns this chunk added to the table (empty almost always).
    pub added: Vec<String>,
}

/// Transforms and conforms the decoded parts of one table.
pub struct Normalizer {
    table: String,
    transforms: Vec<TransformSpec>,
    policy: EvolutionPolicy,
    value: SchemaRef,
    generation: u64,
    plans: HashMap<u32, Plan>,
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalizer")
            .field("table", &self.table)
            .field("plans", &self.plans.len())
            .finish()
    }
}

impl Normalizer {
    /// A normalizer filling the value columns `value` of table `table`.
    pub fn new(
        table: &str,
        transforms: Vec<TransformSpec>,
        policy: EvolutionPolicy,
        value: SchemaRef,
    ) -> Self {
        Normalizer {
            table: table.to_string(),
            transforms,
            policy,
            value,
            generation: 0,
            plans: HashMap::new(),
        }
    }

    /// The table's value columns as they are now (wider after evolution).
    pub fn value_schema(&self) -> &SchemaRef {
        &self.value
    }

    fn internal(&self, message: impl std::fmt::Display) -> NormalizeError {
        NormalizeError::Internal {
            table: self.table.clone(),
            message: message.to_string(),
        }
    }

    /// Plans the fixed input schema of the plain JSON, bytes and string
    /// formats (schema id 0) at start, so that transforms that do not fit
    /// stop inlet before it reads anything. Returns the columns this adds to
    /// the table.
    pub fn prepare(&mut self, input: SchemaRef) -> Result<Vec<String>, NormalizeError> {
        let mut added = Vec::new();
        self.plan(0, &input, &mut added)?;
        Ok(added)
    }

    /// (Re)plans input schema `id` when it is new, changed, or the value
    /// schema grew since.
    fn plan(
        &mut self,
        id: u32,
        input: &SchemaRef,
        added: &mut Vec<String>,
    ) -> Result<(), NormalizeError> {
        if let Some(p) = self.plans.get(&id) {
            let same_input = Arc::ptr_eq(&p.input, input) || p.input == *input;
            if same_input && p.generation == self.generation {
                return Ok(());
            }
        }
        let fate = self.compile(id, input, added)?;
        self.plans.insert(
            id,
            Plan {
                input: input.clone(),
                fate,
                generation: self.generation,
            },
        );
        Ok(())
    }

    fn compile(
        &mut self,
        id: u32,
        input: &SchemaRef,
        added: &mut Vec<String>,
    ) -> Result<Fate, NormalizeError> {
        let transform = if self.transforms.is_empty() {
            None
        } else {
            match TransformPlan::compile(&self.transforms, input.clone()) {
                Ok(t) => Some(t),
                // A fixed input is checked at start: stop there. Transforms
                // that cannot run at all are inlet's fault, whatever the
                // schema: stop rather than quarantine.
                Err(e) if id == 0 || e.fault() != Fault::Operator => {
                    return Err(NormalizeError::Transform {
                        table: self.table.clone(),
                        source: e,
                    })
                }
                // A writer schema the transforms do not fit: its messages
                // are the producer's problem, not the pipeline's.
                Err(e) => {
                    return Ok(Fate::Refused(
                        Stage::Transform,
                        format!("schema id {id}: {e}"),
                    ))
                }
            }
        };
        let shaped = transform
            .as_ref()
            .map_or_else(|| input.clone(), |t| t.output_schema().clone());
        match Conformer::new(&shaped, &self.value, self.policy) {
            Ok(c) => {
                if !c.new_fields().is_empty() {
                    added.extend(c.new_fields().iter().cloned());
                    self.value = c.output_schema().clone();
                    self.generation += 1;
                }
                Ok(Fate::Ready(transform, c))
            }
            Err(e @ ConformError::NewFields { .. }) => Err(NormalizeError::Policy {
                table: self.table.clone(),
                message: e.to_string(),
            }),
            Err(e @ ConformError::Incompatible { .. }) => {
                if self.policy == EvolutionPolicy::Fail {
                    return Err(NormalizeError::Policy {
                        table: self.table.clone(),
                        message: format!("{e} (evolution = \"fail\")"),
                    });
                }
                Ok(Fate::Refused(Stage::Schema, e.to_string()))
            }
            Err(e) => Err(self.internal(e)),
        }
    }

    /// Turns `parts` into rows of the table's value columns; rows that fail
    /// a transform, do not fit, or break NOT NULL go to `rejected`.
    pub fn normalize(
        &mut self,
        parts: Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<Normalized, NormalizeError> {
        let mut added = Vec::new();
        let mut outs: Vec<(RecordBatch, Vec<usize>)> = Vec::with_capacity(parts.len());
        for part in parts {
            let input = part.batch.schema();
            self.plan(part.schema_id, &input, &mut added)?;
            let (transform, conformer) = match &self.plans[&part.schema_id].fate {
                Fate::Refused(stage, reason) => {
                    for &m in &part.rows {
                        rejected.reject(m, *stage, reason.clone());
                    }
                    continue;
                }
                Fate::Ready(t, c) => (t, c),
            };
            let (batch, rows) = match transform {
                None => (part.batch, part.rows),
                Some(t) => {
                    // Rows' failures are in `out.rejected`; an error is a
                    // whole batch failing: inlet's, never quarantined.
                    let out = t
                        .apply(&part.batch)
                        .map_err(|source| NormalizeError::Transform {
                            table: self.table.clone(),
                            source,
                        })?;
                    rejected.extend_subset(Stage::Transform, out.rejected, &part.rows);
                    let rows = out.rows.iter().map(|&r| part.rows[r]).collect();
                    (out.batch, rows)
                }
            };
            let out = conformer
                .apply(&batch)
                .map_err(|e| NormalizeError::Internal {
                    table: self.table.clone(),
                    message: format!("conforming rows: {e}"),
                })?;
            // Only NOT NULL breaks here: the types were checked when planning.
            rejected.extend_subset(Stage::Constraint, out.rejected, &rows);
            let rows: Vec<usize> = out.rows.iter().map(|&r| rows[r]).collect();
            outs.push((out.batch, rows));
        }
        rejected.sort();
        // A part planned before a later part widened the table lacks the new
        // columns: they are null for it.
        for (batch, _) in &mut outs {
            if batch.schema().fields() != self.value.fields() {
                let c = Conformer::new(&batch.schema(), &self.value, EvolutionPolicy::Fail)
                    .map_err(|e| self.internal(format!("widening earlier rows: {e}")))?;
                *batch = c
                    .apply(batch)
                    .map_err(|e| self.internal(format!("widening earlier rows: {e}")))?
                    .batch;
            }
        }
        let (batch, rows) = match outs.len() {
            0 => (RecordBatch::new_empty(self.value.clone()), Vec::new()),
            1 => outs
                .pop()
                .unwrap_or_else(|| (RecordBatch::new_empty(self.value.clone()), Vec::new())),
            _ => self.merge(outs)?,
        };
        Ok(Normalized { batch, rows, added })
    }

    /// Several parts (schema ids) in one chunk: back into message order.
    fn merge(
        &self,
        outs: Vec<(RecordBatch, Vec<usize>)>,
    ) -> Result<(RecordBatch, Vec<usize>), NormalizeError> {
        let batches: Vec<RecordBatch> = outs.iter().map(|(b, _)| b.clone()).collect();
        let all =
            arrow::compute::concat_batches(&self.value, &batches).map_err(|e| self.internal(e))?;
        let mut rows: Vec<(usize, u32)> = outs
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .enumerate()
            .map(|(pos, m)| (m, pos as u32))
            .collect();
        rows.sort_unstable();
        let order = UInt32Array::from_iter_values(rows.iter().map(|(_, pos)| *pos));
        let batch =
            arrow::compute::take_record_batch(&all, &order).map_err(|e| self.internal(e))?;
        Ok((batch, rows.into_iter().map(|(m, _)| m).collect()))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::Schema;

    use super::*;

    fn normalizer(expr: &str) -> Normalizer {
        let derive = serde_json::json!({"op": "derive", "column": "v", "expr": expr});
        Normalizer::new(
            "events",
            vec![serde_json::from_value(derive).unwrap()],
            EvolutionPolicy::AddColumns,
            Arc::new(Schema::empty()),
        )
    }

    fn part(schema_id: u32) -> Part {
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![1, 3])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
            (
                "code",
                Arc::new(StringArray::from(vec!["md5", "sha256"])) as ArrayRef,
            ),
        ])
        .unwrap();
        Part {
            schema_id,
            batch,
            rows: vec![4, 9],
        }
    }

    /// DataFusion cannot execute `digest` with a per-row algorithm; only rows
    /// with `a > 2` take that branch, so the compile-time probe cannot see it.
    const UNRUNNABLE_BRANCH: &str =
        "CASE WHEN a > 2 THEN digest(s, code) WHEN a > 0 THEN digest(s, 'md5') END";

    #[test]
    fn a_transform_failing_for_inlets_reasons_stops_and_rejects_nothing() {
        for id in [0, 7] {
            let mut n = normalizer(UNRUNNABLE_BRANCH);
            let mut rejected = Rejections::new();
            let err = n.normalize(vec![part(id)], &mut rejected).unwrap_err();
            assert_eq!(err.fault(), Fault::Internal, "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("tables.events.transforms[0] (derive): column `v`: `CASE"),
                "{text}"
            );
            assert!(rejected.is_empty(), "{rejected:?}");
        }
    }

    #[test]
    fn a_transform_that_cannot_run_stops_even_for_a_registry_schema() {
        // Found when compiling for schema id 7, at run time: inlet's fault,
        // not the writer's; its messages are not quarantined.
        let mut n = normalizer("digest(s, code)");
        let mut rejected = Rejections::new();
        let err = n.normalize(vec![part(7)], &mut rejected).unwrap_err();
        assert_eq!(err.fault(), Fault::Internal, "{err}");
        assert!(
            err.to_string()
                .starts_with("tables.events.transforms[0] (derive): "),
            "{err}"
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        // A writer schema the transforms do not fit (no column `nope`) is
        // the producer's: its messages are rejected, stage `transform`.
        let mut n = normalizer("nope + 1");
        let out = n.normalize(vec![part(7)], &mut rejected).unwrap();
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|r| r.stage == Stage::Transform));
        // The fixed input schema (plain JSON) stops at start: the operator's.
        let err = normalizer("nope + 1")
            .prepare(part(0).batch.schema())
            .unwrap_err();
        assert_eq!(err.fault(), Fault::Operator, "{err}");
    }

    #[test]
    fn rows_failing_on_their_own_data_are_rejected() {
        let mut n = normalizer("CAST(code AS INT)");
        let mut rejected = Rejections::new();
        let out = n.normalize(vec![part(0)], &mut rejected).unwrap();
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [4, 9]);
        assert!(rejected.iter().all(|r| r.stage == Stage::Transform));
    }
}

//! From decoded parts to rows of the table: the table's transforms, then
//! conforming to its value columns, with schema evolution. Both are planned
//! once per input schema (a topic can bring several writer schema versions)
//! and run on whole batches.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use crate::decode::{Part, Rejection, Stage};
use crate::schema::{ConformError, Conformer, EvolutionPolicy};
use crate::transform::{TransformPlan, TransformSpec};

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
    /// A transform cannot be planned for an input schema.
    #[error("table `{table}`: {message}")]
    Transform {
        /// Table name.
        table: String,
        /// The transform error.
        message: String,
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
                // A fixed input is checked at start: stop there.
                Err(e) if id == 0 => {
                    return Err(NormalizeError::Transform {
                        table: self.table.clone(),
                        message: e.to_string(),
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
        rejected: &mut Vec<Rejection>,
    ) -> Result<Normalized, NormalizeError> {
        let mut added = Vec::new();
        let mut outs: Vec<(RecordBatch, Vec<usize>)> = Vec::with_capacity(parts.len());
        for part in parts {
            let input = part.batch.schema();
            self.plan(part.schema_id, &input, &mut added)?;
            let (transform, conformer) = match &self.plans[&part.schema_id].fate {
                Fate::Refused(stage, reason) => {
                    for &m in &part.rows {
                        rejected.push(Rejection::new(m, *stage, reason.clone()));
                    }
                    continue;
                }
                Fate::Ready(t, c) => (t, c),
            };
            let (batch, rows) = match transform {
                None => (part.batch, part.rows),
                Some(t) => {
                    let out = t.apply(&part.batch).map_err(|e| NormalizeError::Internal {
                        table: self.table.clone(),
                        message: format!("transform: {e}"),
                    })?;
                    for (r, reason) in out.rejected {
                        rejected.push(Rejection::new(part.rows[r], Stage::Transform, reason));
                    }
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
            for (r, reason) in out.rejected {
                rejected.push(Rejection::new(rows[r], Stage::Constraint, reason));
            }
            let rows: Vec<usize> = out.rows.iter().map(|&r| rows[r]).collect();
            outs.push((out.batch, rows));
        }
        rejected.sort_by_key(|r| r.index);
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

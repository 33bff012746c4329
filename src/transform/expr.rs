//! `derive`, `filter` and `sql`: DataFusion expressions compiled once and
//! evaluated synchronously on whole batches. When an expression fails on a
//! batch, the batch is bisected to find the rows it fails on; those rows are
//! rejected and the others keep their values.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray as _};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::tree_node::TreeNode as _;
use deltalake::datafusion::common::{DFSchema, DataFusionError, Result as DFResult, SchemaError};
use deltalake::datafusion::execution::context::SessionState;
use deltalake::datafusion::logical_expr::simplify::SimplifyContext;
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::optimizer::simplify_expressions::ExprSimplifier;
use deltalake::datafusion::physical_expr::expressions::Column;
use deltalake::datafusion::physical_plan::PhysicalExpr;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, GroupByExpr, Ident, ObjectNamePart, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableWithJoins,
    WildcardAdditionalOptions,
};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;

use super::{ColumnFn, Compiled, Computed, Ctx, Failed};
use crate::fault::Fault;

const SUPPORTED: &str = "supported: SELECT <items> FROM input [WHERE <condition>], where an item is `*`, `* EXCEPT (a, b)`, a column, or `<expression> AS <name>`";

/// Compiles SQL expressions; one per plan.
pub(crate) struct SqlCompiler {
    state: SessionState,
}

/// A compiled expression.
pub(crate) struct ExprFn {
    physical: Arc<dyn PhysicalExpr>,
    text: String,
    ty: DataType,
    prefix: String,
}

impl fmt::Debug for ExprFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({} → {})", self.text, self.ty)
    }
}

/// Why an evaluation did not produce an array.
enum Failure {
    /// DataFusion failed on the values: rows of this batch are at fault.
    Rows(String),
    /// DataFusion failed for its own or inlet's reasons, or the result does
    /// not fit: a bug, for the whole batch.
    Fatal(String),
}

/// Whose fault it is when evaluating an expression on rows fails: the
/// values' (a cast of `'abc'` to INT, a division by zero, an unparseable
/// date: [`Fault::Message`]), or DataFusion's and so inlet's (`Internal`,
/// `NotImplemented`, planning and schema errors, which no row can cause or
/// avoid: [`Fault::Internal`]). Anything not known to come from the values
/// is inlet's, so that a bug stops the pipeline instead of quarantining
/// every message.
pub(crate) fn fault_of(e: &DataFusionError) -> Fault {
    match e {
        DataFusionError::ArrowError(a, _) => arrow_fault(a),
        DataFusionError::Execution(_)
        | DataFusionError::External(_)
        | DataFusionError::ResourcesExhausted(_) => Fault::Message,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            fault_of(inner)
        }
        DataFusionError::Shared(inner) => fault_of(inner),
        DataFusionError::Collection(all) => {
            if !all.is_empty() && all.iter().all(|e| fault_of(e) == Fault::Message) {
                Fault::Message
            } else {
                Fault::Internal
            }
        }
        _ => Fault::Internal,
    }
}

/// [`fault_of`] for Arrow's errors: the kernels' complaints about values
/// are the values' fault; missing kernels and broken schemas are not.
fn arrow_fault(e: &ArrowError) -> Fault {
    match e {
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::ComputeError(_)
        | ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::JsonError(_)
        | ArrowError::CsvError(_)
        | ArrowError::AvroError(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError
        | ArrowError::OffsetOverflowError(_) => Fault::Message,
        ArrowError::ExternalError(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(df) => fault_of(df),
            None => Fault::Message,
        },
        _ => Fault::Internal,
    }
}

impl SqlCompiler {
    pub(crate) fn new() -> Self {
        let mut config = SessionConfig::new();
        // Column names as written: `userName` is the column `userName`.
        config.options_mut().sql_parser.enable_ident_normalization = false;
        SqlCompiler {
            state: SessionContext::new_with_config(config).state(),
        }
    }

    fn physical(
        &self,
        schema: &Schema,
        df_schema: &DFSchema,
        sql: SqlExpr,
    ) -> Result<Arc<dyn PhysicalExpr>, String> {
        let logical = self
            .state
            .create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: sql,
                    alias: None,
                },
                df_schema,
            )
            .map_err(|e| df_error(&e, schema))?;
        row_level(&logical)?;
        self.plan(logical, df_schema)
            .map_err(|e| df_error(&e, schema))
    }

    /// Coerces, simplifies and plans a logical expression, as DataFusion's
    /// optimizer would before executing it. Some functions cannot run
    /// unsimplified (`coalesce`, `nvl`, `ifnull`, `nvl2`, `arrow_cast` fail
    /// with "should have been simplified"); `create_physical_expr` alone only
    /// coerces. No query start time is given, so `now()` is not frozen at
    /// the time of compiling (it is refused by the compile-time probe).
    fn plan(&self, logical: Expr, df_schema: &DFSchema) -> DFResult<Arc<dyn PhysicalExpr>> {
        let context = SimplifyContext::builder()
            .with_schema(Arc::new(df_schema.clone()))
            .with_config_options(Arc::clone(self.state.config_options()))
            .build();
        let simplifier = ExprSimplifier::new(context);
        let coerced = simplifier.coerce(logical, df_schema)?;
        let simplified = simplifier.simplify(coerced)?;
        self.state.create_physical_expr(simplified, df_schema)
    }

    /// Parses and compiles one expression against `ctx.schema`.
    fn expr(&self, ctx: &Ctx<'_>, text: &str) -> Result<ExprFn, String> {
        let schema = ctx.schema.as_ref();
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.strip_backtrace())?;
        let logical = self
            .state
            .create_logical_expr(text, &df_schema)
            .map_err(|e| format!("`{text}`: {}", df_error(&e, schema)))?;
        row_level(&logical).map_err(|e| format!("`{text}`: {e}"))?;
        let physical = self
            .plan(logical, &df_schema)
            .map_err(|e| format!("`{text}`: {}", df_error(&e, schema)))?;
        ExprFn::new(ctx, physical, text)
    }

    pub(crate) fn derive(
        &self,
        ctx: &Ctx<'_>,
        column: &str,
        expr: &str,
    ) -> Result<Compiled, String> {
        if column.is_empty() {
            return Err("`column` is empty; name the column to add".to_string());
        }
        let function = self.expr(ctx, expr)?;
        let (field, column_fn) = function.into_column(ctx.schema, column);
        Ok(Compiled::replace_or_add(
            ctx.schema,
            column,
            field.as_ref().clone(),
            column_fn,
        ))
    }

    pub(crate) fn filter(&self, ctx: &Ctx<'_>, expr: &str) -> Result<Compiled, String> {
        let function = self.expr(ctx, expr)?.predicate()?;
        Ok(Compiled {
            filter: Some(function),
            unwrap: None,
            columns: super::keep_all(ctx.schema),
        })
    }

    pub(crate) fn query(&self, ctx: &Ctx<'_>, query: &str) -> Result<Compiled, String> {
        let parsed = Parser::parse_sql(&GenericDialect {}, query)
            .map_err(|e| format!("the query does not parse: {e}; {SUPPORTED}"))?;
        let [Statement::Query(q)] = parsed.as_slice() else {
            return Err(format!("expected one SELECT query; {SUPPORTED}"));
        };
        let (select, from) = single_select(q)?;
        let qualifier = input_qualifier(from)?;
        no_other_clauses(q, select, from)?;
        let df_schema =
            DFSchema::try_from_qualified_schema(qualifier.as_str(), ctx.schema.as_ref())
                .map_err(|e| e.strip_backtrace())?;
        let filter = match &select.selection {
            None => None,
            Some(w) => Some(self.sql_fn(ctx, &df_schema, w, "WHERE ")?.predicate()?),
        };
        let mut columns: Vec<(FieldRef, ColumnFn)> = Vec::new();
        for item in &select.projection {
            columns.extend(self.select_item(ctx, &df_schema, &qualifier, item)?);
        }
        unique_names(&columns)?;
        Ok(Compiled {
            filter,
            unwrap: None,
            columns,
        })
    }

    /// The column(s) one SELECT item makes.
    fn select_item(
        &self,
        ctx: &Ctx<'_>,
        df_schema: &DFSchema,
        qualifier: &str,
        item: &SelectItem,
    ) -> Result<Vec<(FieldRef, ColumnFn)>, String> {
        match item {
            SelectItem::Wildcard(options) => wildcard(ctx, options),
            SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(n),
                options,
            ) if matches!(n.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.value == qualifier || i.value.eq_ignore_ascii_case("input")) => {
                wildcard(ctx, options)
            }
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    SqlExpr::Identifier(Ident { value, .. }) => value.clone(),
                    SqlExpr::CompoundIdentifier(parts) => {
                        parts.last().map(|p| p.value.clone()).unwrap_or_default()
                    }
                    other => {
                        return Err(format!("`{other}` needs a name: write `{other} AS <name>`"));
                    }
                };
                let f = self.sql_fn(ctx, df_schema, e, "")?;
                Ok(vec![f.into_column(ctx.schema, &name)])
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let f = self.sql_fn(ctx, df_schema, expr, "")?;
                Ok(vec![f.into_column(ctx.schema, &alias.value)])
            }
            other => Err(format!("the item `{other}` is not supported; {SUPPORTED}")),
        }
    }

    /// A SQL expression of the query compiled; its errors quote it after
    /// `what` (`WHERE ` for the condition).
    fn sql_fn(
        &self,
        ctx: &Ctx<'_>,
        df_schema: &DFSchema,
        e: &SqlExpr,
        what: &str,
    ) -> Result<ExprFn, String> {
        let text = e.to_string();
        let physical = self
            .physical(ctx.schema.as_ref(), df_schema, e.clone())
            .map_err(|m| format!("{what}`{text}`: {m}"))?;
        ExprFn::new(ctx, physical, &text)
    }
}

/// The query's one SELECT and its one FROM, refusing the clauses that are
/// not row by row.
fn single_select(q: &Query) -> Result<(&Select, &TableWithJoins), String> {
    let unsupported = |what: &str| Err(format!("{what} is not supported; {SUPPORTED}"));
    if q.with.is_some() {
        return unsupported("WITH");
    }
    if q.order_by.is_some() {
        return unsupported("ORDER BY");
    }
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return unsupported("LIMIT");
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return unsupported("anything but a single SELECT (UNION, VALUES, ...)");
    };
    if select.distinct.is_some() {
        return unsupported("DISTINCT");
    }
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
    };
    if grouped || select.having.is_some() {
        return unsupported("GROUP BY / HAVING (each batch is transformed row by row)");
    }
    let [from] = select.from.as_slice() else {
        return unsupported("a FROM other than exactly `FROM input`");
    };
    if !from.joins.is_empty() {
        return unsupported("JOIN");
    }
    Ok((select, from))
}

/// The name the query gives `input` (its alias, or `input`), refusing any
/// other table.
fn input_qualifier(from: &TableWithJoins) -> Result<String, String> {
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return Err(format!(
            "a FROM other than exactly `FROM input` is not supported; {SUPPORTED}"
        ));
    };
    let is_input = matches!(name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("input"));
    if !is_input {
        return Err(format!(
            "the table is `{name}`, but the only table is `input` (the batch); {SUPPORTED}"
        ));
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err(format!(
            "column aliases on `input` is not supported; {SUPPORTED}"
        ));
    }
    Ok(alias
        .as_ref()
        .map_or("input".to_string(), |a| a.name.value.clone()))
}

/// Anything else (QUALIFY, WINDOW, LATERAL VIEW, table hints, ...) is
/// refused: the query is compared with a plain one once the supported
/// parts are blanked.
fn no_other_clauses(q: &Query, select: &Select, from: &TableWithJoins) -> Result<(), String> {
    let baseline =
        Parser::parse_sql(&GenericDialect {}, "SELECT * FROM input").map_err(|e| e.to_string())?;
    let [Statement::Query(base)] = baseline.as_slice() else {
        return Err("internal: baseline query".to_string());
    };
    let SetExpr::Select(base_select) = base.body.as_ref() else {
        return Err("internal: baseline query".to_string());
    };
    let mut rest_query = q.clone();
    rest_query.body = base.body.clone();
    let blank = |s: &Select| {
        let mut s = s.clone();
        s.projection.clear();
        s.from.clear();
        s.selection = None;
        s
    };
    let mut rest_from = from.clone();
    if let TableFactor::Table { name, alias, .. } = &mut rest_from.relation {
        *name = base_select.from[0].relation_name();
        *alias = None;
    }
    if rest_query != **base
        || blank(select) != blank(base_select)
        || rest_from != base_select.from[0]
    {
        return Err(format!(
            "the query has a clause that is not supported; {SUPPORTED}"
        ));
    }
    Ok(())
}

/// Two columns of one name are refused, with the way to replace one.
fn unique_names(columns: &[(FieldRef, ColumnFn)]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (field, _) in columns {
        if !seen.insert(field.name().as_str()) {
            return Err(format!(
                "the query makes two columns named `{0}`; to replace a column write `* EXCEPT ({0}), <expression> AS {0}`",
                field.name()
            ));
        }
    }
    Ok(())
}

trait RelationName {
    fn relation_name(&self) -> deltalake::datafusion::sql::sqlparser::ast::ObjectName;
}

impl RelationName for deltalake::datafusion::sql::sqlparser::ast::TableWithJoins {
    fn relation_name(&self) -> deltalake::datafusion::sql::sqlparser::ast::ObjectName {
        match &self.relation {
            TableFactor::Table { name, .. } => name.clone(),
            _ => deltalake::datafusion::sql::sqlparser::ast::ObjectName(Vec::new()),
        }
    }
}

/// `*` with an optional `EXCEPT (...)` / `EXCLUDE (...)`.
fn wildcard(
    ctx: &Ctx<'_>,
    options: &WildcardAdditionalOptions,
) -> Result<Vec<(FieldRef, ColumnFn)>, String> {
    use deltalake::datafusion::sql::sqlparser::ast::ExcludeSelectItem;
    if options.opt_ilike.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
        || options.opt_alias.is_some()
    {
        return Err(format!("`*` only takes EXCEPT (...); {SUPPORTED}"));
    }
    let mut except: Vec<String> = Vec::new();
    if let Some(e) = &options.opt_except {
        except.push(e.first_element.value.clone());
        except.extend(e.additional_elements.iter().map(|i| i.value.clone()));
    }
    match &options.opt_exclude {
        None => {}
        Some(ExcludeSelectItem::Single(n)) => except.push(last_part(n)),
        Some(ExcludeSelectItem::Multiple(ns)) => except.extend(ns.iter().map(last_part)),
    }
    let mut gone = HashSet::new();
    for name in &except {
        gone.insert(
            ctx.column(name)
                .map_err(|e| format!("in `* EXCEPT`: {e}"))?,
        );
    }
    Ok(super::keep_all(ctx.schema)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, c)| c)
        .collect())
}

fn last_part(n: &deltalake::datafusion::sql::sqlparser::ast::ObjectName) -> String {
    match n.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        _ => n.to_string(),
    }
}

/// Errors for what cannot be computed from one row alone.
fn row_level(expr: &Expr) -> Result<(), String> {
    let mut found = None;
    let _ = expr.exists(|e| {
        found = match e {
            Expr::AggregateFunction(_) | Expr::GroupingSet(_) => Some("aggregate functions"),
            Expr::WindowFunction(_) => Some("window functions (OVER)"),
            Expr::ScalarSubquery(_)
            | Expr::InSubquery(_)
            | Expr::Exists(_)
            | Expr::SetComparison(_) => Some("subqueries"),
            Expr::Placeholder(_) => Some("placeholders ($1)"),
            _ => None,
        };
        Ok(found.is_some())
    });
    match found {
        None => Ok(()),
        Some(what) => Err(format!(
            "{what} are not supported: transforms compute each row from that row alone"
        )),
    }
}

/// A DataFusion error as a message; a missing column lists the columns.
fn df_error(e: &DataFusionError, schema: &Schema) -> String {
    if let DataFusionError::SchemaError(se, _) = e.find_root() {
        if let SchemaError::FieldNotFound { field, .. } = se.as_ref() {
            return super::not_found(
                schema.fields().iter().map(|f| f.name().as_str()),
                &field.name,
            );
        }
    }
    e.strip_backtrace()
}

impl ExprFn {
    fn new(ctx: &Ctx<'_>, physical: Arc<dyn PhysicalExpr>, text: &str) -> Result<Self, String> {
        let ty = physical
            .data_type(ctx.schema)
            .map_err(|e| format!("`{text}`: {}", e.strip_backtrace()))?;
        if ty == DataType::Null {
            return Err(format!(
                "`{text}` has no type (it is always NULL); write e.g. `CAST(NULL AS STRING)`"
            ));
        }
        Ok(ExprFn {
            physical,
            text: text.to_string(),
            ty,
            prefix: ctx.reason_prefix(),
        })
    }

    /// Checks that it is a condition.
    fn predicate(self) -> Result<Self, String> {
        if self.ty == DataType::Boolean {
            Ok(self)
        } else {
            Err(format!(
                "`{}` is {}, not a condition (true/false); write e.g. `{} IS NOT NULL`",
                self.text, self.ty, self.text
            ))
        }
    }

    /// The output column `name`: a bare column reference keeps its field.
    fn into_column(self, schema: &Schema, name: &str) -> (FieldRef, ColumnFn) {
        if let Some(c) = self.physical.downcast_ref::<Column>() {
            let field = schema.field(c.index()).clone().with_name(name);
            return (Arc::new(field), ColumnFn::Keep(c.index()));
        }
        let field = Field::new(name, self.ty.clone(), true);
        (Arc::new(field), ColumnFn::Expr(self))
    }

    /// One evaluation on `batch`.
    fn once(&self, batch: &RecordBatch) -> Result<ArrayRef, Failure> {
        let value = self
            .physical
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| self.failure(&e, batch.num_rows()))?;
        if value.data_type() != &self.ty {
            return Err(Failure::Fatal(format!(
                "`{}` gave {} values, expected {}",
                self.text,
                value.data_type(),
                self.ty
            )));
        }
        if value.len() != batch.num_rows() {
            return Err(Failure::Fatal(format!(
                "`{}` gave {} values for {} rows",
                self.text,
                value.len(),
                batch.num_rows()
            )));
        }
        Ok(value)
    }

    /// Whose fault a failed evaluation of `rows` rows is: only a row's data
    /// can be the message's (bisected down to the rows), and a batch
    /// without rows has none.
    fn failure(&self, e: &DataFusionError, rows: usize) -> Failure {
        let message = e.strip_backtrace();
        if rows > 0 && fault_of(e) == Fault::Message {
            Failure::Rows(message)
        } else {
            Failure::Fatal(format!("`{}` failed: {message}", self.text))
        }
    }

    /// Evaluates on the whole batch; if that fails, isolates the failing
    /// rows (null in the result).
    pub(crate) fn eval(&self, batch: &RecordBatch) -> Computed {
        match self.once(batch) {
            Ok(a) => return Ok((a, Vec::new())),
            Err(Failure::Fatal(m)) => return Err(m),
            Err(Failure::Rows(m)) if batch.num_rows() == 1 => {
                return Ok((new_null_array(&self.ty, 1), vec![(0, self.reason(&m))]));
            }
            Err(Failure::Rows(_)) => {}
        }
        let mut parts = Vec::new();
        let mut failed = Vec::new();
        let half = batch.num_rows() / 2;
        self.bisect(batch, 0, half, &mut parts, &mut failed)?;
        self.bisect(
            batch,
            half,
            batch.num_rows() - half,
            &mut parts,
            &mut failed,
        )?;
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        let array = arrow::compute::concat(&refs).map_err(|e| e.to_string())?;
        Ok((array, failed))
    }

    fn bisect(
        &self,
        batch: &RecordBatch,
        offset: usize,
        len: usize,
        parts: &mut Vec<ArrayRef>,
        failed: &mut Failed,
    ) -> Result<(), String> {
        if len == 0 {
            return Ok(());
        }
        match self.once(&batch.slice(offset, len)) {
            Ok(a) => parts.push(a),
            Err(Failure::Fatal(m)) => return Err(m),
            Err(Failure::Rows(m)) if len == 1 => {
                parts.push(new_null_array(&self.ty, 1));
                failed.push((offset, self.reason(&m)));
            }
            Err(Failure::Rows(_)) => {
                let half = len / 2;
                self.bisect(batch, offset, half, parts, failed)?;
                self.bisect(batch, offset + half, len - half, parts, failed)?;
            }
        }
        Ok(())
    }

    fn reason(&self, message: &str) -> String {
        format!("{}: `{}` failed: {message}", self.prefix, self.text)
    }

    /// Evaluates a condition: the rows where it is true (false and NULL
    /// are not), and the rows it failed on.
    pub(crate) fn eval_predicate(
        &self,
        batch: &RecordBatch,
    ) -> Result<(BooleanBuffer, Failed), String> {
        let (array, failed) = self.eval(batch)?;
        let bools = array.as_boolean();
        let mask = match bools.nulls() {
            Some(n) => bools.values() & n.inner(),
            None => bools.values().clone(),
        };
        Ok((mask, failed))
    }
}

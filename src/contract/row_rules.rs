//! Row rules (`x-rules`): named SQL boolean expressions over the columns of one row, such as
//! `updated_at >= created_at` or `coalesce(phone, email) is not null`.
//!
//! DataFusion parses, type-checks and plans them (its SQL expression parser, type coercion and
//! physical expressions, evaluated vectorised over a whole batch); nothing here parses SQL.
//! A rule is planned twice: once when the contract is parsed, against the contract's own column
//! types, so a rule that names an unknown column, is not boolean or aggregates is a contract
//! error naming the file and JSON pointer; and again by the validator against each input's real
//! column types, which is the plan that runs.
//!
//! Rules see `date-time` and `date` columns as the typed values validation parsed
//! (`Timestamp(µs, UTC)`, `Date32`), so `shipped_at >= created_at` compares instants, not text.
//! Column names are case-sensitive, as written in the contract (`"Op"`, `AR_H_CHANGE_SEQ`);
//! function names are not. A row breaks a rule only where the expression is false: null passes,
//! as in a SQL `CHECK` constraint, so a rule over an optional column holds where it is absent.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

/// One entry of `x-rules`.
#[derive(Debug, Clone)]
pub struct RowRule {
    /// The rule's name: what quarantine rows and the report call it.
    pub name: String,
    /// The SQL boolean expression, as written.
    pub check: String,
    /// JSON pointer of the rule in the contract, for error messages.
    pub pointer: String,
    /// The contract columns the expression reads, in contract order.
    pub columns: Vec<String>,
}

/// The one planning context: column names as written (no lowercasing of identifiers).
fn context() -> &'static SessionContext {
    static CONTEXT: OnceLock<SessionContext> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        SessionContext::new_with_config(config)
    })
}

/// Parses `check` against `schema` and returns the expression with the names of the columns it
/// reads; the error says why it is not a row rule.
fn parse(check: &str, schema: &Schema) -> Result<(Expr, Vec<String>), String> {
    let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?;
    let expr = context()
        .parse_sql_expr(check, &df_schema)
        .map_err(|e| e.strip_backtrace())?;
    let not_of_one_row = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::AggregateFunction(_)
                    | Expr::WindowFunction(_)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..)
            ))
        })
        .map_err(|e| e.strip_backtrace())?;
    if not_of_one_row {
        return Err("a row rule reads one row: no aggregate, window function or subquery".into());
    }
    let columns = expr
        .column_refs()
        .into_iter()
        .map(|c| c.name.clone())
        .collect();
    Ok((expr, columns))
}

impl RowRule {
    /// A rule named `name` at `pointer`, checked against `schema` (every contract column, typed
    /// as rules see it); the error says why it is not a row rule.
    pub(super) fn new(
        name: String,
        check: String,
        pointer: String,
        schema: &Schema,
    ) -> Result<Self, String> {
        let (_, reads) = parse(&check, schema)?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| f.name())
            .filter(|n| reads.contains(n))
            .cloned()
            .collect();
        let rule = RowRule {
            name,
            check,
            pointer,
            columns,
        };
        rule.plan(schema)?;
        Ok(rule)
    }

    /// Plans the rule over `schema`, which holds the columns the rule reads (by name) with
    /// their types in the data at hand; the error says why it cannot run on such data.
    pub fn plan(&self, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>, String> {
        let (expr, _) = parse(&self.check, schema)?;
        let df_schema = Arc::new(DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?);
        let state = context().state();
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(df_schema.clone())
                .with_config_options(state.config_options().clone())
                .build(),
        );
        // Planning alone leaves `coalesce` and the like to the simplifier, which rewrites them
        // into the expressions that have a physical form.
        let physical = simplifier
            .coerce(expr, &df_schema)
            .and_then(|e| simplifier.simplify(e))
            .and_then(|e| state.create_physical_expr(e, &df_schema))
            .map_err(|e| e.strip_backtrace())?;
        match physical
            .data_type(schema)
            .map_err(|e| e.strip_backtrace())?
        {
            DataType::Boolean => Ok(physical),
            other => Err(format!("the expression is of type {other}, not boolean")),
        }
    }
}

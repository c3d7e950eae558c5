//! Phase 1, plan: the contracts, every dataset's curated objects (footers only) and their union
//! schema, then every model and check parsed, ordered by the tables it reads and planned by
//! DataFusion against empty tables; no data is read. Also the run id, and planning errors as
//! configuration errors naming the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use super::exec::session;
use super::model::{self, Model};
use super::{state, ProdSpec, VIOLATIONS_TABLE};
use crate::contract::Contract;
use crate::source::{self, Input, InputObject};
use crate::store::Location;
use crate::{Error, Result};

/// A dataset's curated objects with their footers, read once for planning and building.
type Opened = Vec<Input>;

/// Everything before any row is read: the contracts, every dataset's curated objects and their
/// union schema (datasets without objects have none), and the planned models and checks.
pub(super) struct Prepared {
    pub(super) contracts: BTreeMap<String, Contract>,
    pub(super) objects: BTreeMap<String, Opened>,
    pub(super) schemas: BTreeMap<String, SchemaRef>,
    pub(super) ctx: SessionContext,
    pub(super) plan: Plan,
}

/// Phase 1 for `run` and `ddl`: lists and opens the curated objects (footers only) and plans.
pub(super) async fn prepare(spec: &ProdSpec) -> Result<Prepared> {
    let contracts = load_contracts(&spec.contracts_dir)?;
    if let Some(d) = &spec.dataset {
        if !contracts.contains_key(d) {
            return Err(Error::Config(format!(
                "dataset `{d}` has no contract in {}",
                spec.contracts_dir.display()
            )));
        }
    }
    let root = Location::parse(&spec.curated)?;
    let mut objects = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for (dataset, contract) in &contracts {
        let mut opened = Vec::new();
        for o in curated_objects(&root, dataset).await? {
            opened.push(Input::open(o).await?);
        }
        if !opened.is_empty() {
            schemas.insert(dataset.clone(), state::union_schema(contract, &opened)?);
        }
        objects.insert(dataset.clone(), opened);
    }
    let ctx = session(spec)?;
    let plan = plan(&ctx, spec, &schemas).await?;
    Ok(Prepared {
        contracts,
        objects,
        schemas,
        ctx,
        plan,
    })
}

/// Every contract (`*.json`) of `dir`, by dataset.
fn load_contracts(dir: &Path) -> Result<BTreeMap<String, Contract>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "contracts directory {}: cannot read: {e}",
            dir.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") {
            let contract = Contract::from_path(&path)?;
            out.insert(contract.dataset.clone(), contract);
        }
    }
    Ok(out)
}

/// The curated objects of `dataset` below `root`, in object order (path order): every
/// `.parquet` object under `<dataset>-curated/` or else `<dataset>/`, except below a segment
/// starting with `_` or `.` (quarantine, reports, temporary directories).
async fn curated_objects(root: &Location, dataset: &str) -> Result<Vec<InputObject>> {
    for dir in [format!("{dataset}-curated"), dataset.to_string()] {
        let objects = source::curated_objects(&root.child(&dir)).await?;
        if !objects.is_empty() {
            return Ok(objects);
        }
    }
    Ok(Vec::new())
}

/// A DataFusion error of `model` as edp's: planning errors are configuration errors naming the
/// file and line (from DataFusion's spans, else the first line naming the missing identifier).
pub(super) fn plan_error(model: &Model, e: DataFusionError) -> Error {
    let root = e.find_root();
    let message = e
        .diagnostic()
        .map(|d| d.message.clone())
        .unwrap_or_else(|| root.message().into_owned());
    let line = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| s.start.line as usize)
        .filter(|&l| l > 0)
        .or_else(|| {
            message
                .split(['\'', '"', '`'])
                .nth(1)
                .and_then(|name| model.line_of(name.rsplit('.').next().unwrap_or(name)))
        });
    match line {
        Some(line) => Error::Config(format!("model {}: line {line}: {message}", model.file())),
        None => Error::Config(format!("model {}: {message}", model.file())),
    }
}

/// The tables `model` reads.
fn references(ctx: &SessionContext, model: &Model) -> Result<Vec<String>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let stmt = state
        .sql_to_statement(&model.sql, &dialect)
        .map_err(|e| plan_error(model, e))?;
    Ok(state
        .resolve_table_references(&stmt)
        .map_err(|e| plan_error(model, e))?
        .iter()
        .map(|t| t.table().to_string())
        .collect())
}

/// `models` ordered so that each comes after the models it reads; a cycle is an error.
fn dependency_order(models: Vec<(Model, Vec<String>)>) -> Result<Vec<(Model, Vec<String>)>> {
    let names: BTreeSet<String> = models.iter().map(|(m, _)| m.name.clone()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut pending = models;
    let mut out = Vec::new();
    while !pending.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, refs)| refs.iter().all(|r| !names.contains(r) || done.contains(r)));
        if ready.is_empty() {
            let stuck: Vec<String> = rest.iter().map(|(m, _)| m.file()).collect();
            return Err(Error::Config(format!(
                "models read each other in a cycle: {}",
                stuck.join(", ")
            )));
        }
        for (m, refs) in ready {
            done.insert(m.name.clone());
            out.push((m, refs));
        }
        pending = rest;
    }
    Ok(out)
}

fn register_empty(ctx: &SessionContext, name: &str, schema: SchemaRef) -> Result<()> {
    let table = MemTable::try_new(schema, vec![vec![]])
        .map_err(|e| Error::Internal(format!("empty table {name}: {e}")))?;
    ctx.deregister_table(name)
        .and_then(|_| ctx.register_table(name, Arc::new(table)))
        .map_err(|e| Error::Internal(format!("table {name}: {e}")))?;
    Ok(())
}

/// A model or check checked against its result schema: its settings name existing columns, the
/// partition column is a date; a check has `keys`, `observed` and `expected`.
fn check_settings(m: &Model, schema: &SchemaRef, is_check: bool) -> Result<()> {
    let missing = |c: &str| schema.index_of(c).is_err();
    let named = if is_check {
        vec!["keys".to_string(), "observed".into(), "expected".into()]
    } else {
        m.order()
    };
    if let Some(c) = named.iter().find(|c| missing(c)) {
        let what = if is_check {
            "a check must select"
        } else {
            "a setting names"
        };
        return Err(Error::Config(format!(
            "model {}: {what} column `{c}`, which is not in the result (columns: {})",
            m.file(),
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(p) = &m.partition_by {
        let dt = schema.field_with_name(p).map(|f| f.data_type().clone());
        if !matches!(
            dt,
            Ok(DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _))
        ) {
            return Err(Error::Config(format!(
                "model {}: partition_by column `{p}` must be a DATE or TIMESTAMP",
                m.file()
            )));
        }
    }
    Ok(())
}

/// A planned run: what to build, in order.
pub(super) struct Plan {
    pub(super) models: Vec<(Model, SchemaRef)>,
    pub(super) checks: Vec<(Model, SchemaRef)>,
    /// Datasets some model or check reads.
    pub(super) datasets: BTreeSet<String>,
    /// Models some later model or check reads (teed into scratch tables).
    pub(super) read_later: BTreeSet<String>,
    /// The tables (datasets and models) each model reads.
    pub(super) reads: BTreeMap<String, Vec<String>>,
}

/// Phase 1: plans every model and check against empty tables of `schemas` (no data read).
async fn plan(
    ctx: &SessionContext,
    spec: &ProdSpec,
    schemas: &BTreeMap<String, SchemaRef>,
) -> Result<Plan> {
    let models = model::load_dir(&spec.models_dir, false)?;
    if models.is_empty() {
        return Err(Error::Config(format!(
            "models directory {}: no *.sql model files",
            spec.models_dir.display()
        )));
    }
    let checks = model::load_dir(&spec.models_dir.join("checks"), true)?;
    for (name, schema) in schemas {
        register_empty(ctx, name, schema.clone())?;
    }
    let mut with_refs = Vec::new();
    for m in models {
        let refs = references(ctx, &m)?;
        if schemas.contains_key(&m.name) || m.name == VIOLATIONS_TABLE {
            return Err(Error::Config(format!(
                "model {}: the name `{}` is taken by a dataset or the checks' table",
                m.file(),
                m.name
            )));
        }
        with_refs.push((m, refs));
    }
    let ordered = dependency_order(with_refs)?;
    let by_name: BTreeMap<String, Vec<String>> = ordered
        .iter()
        .map(|(m, r)| (m.name.clone(), r.clone()))
        .collect();
    for name in &spec.only {
        if !by_name.contains_key(name) {
            return Err(Error::Config(format!(
                "--model {name}: no such model in {} (models: {})",
                spec.models_dir.display(),
                by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // What the selection needs: the chosen models and, transitively, the models they read.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut reads_dataset: BTreeSet<String> = BTreeSet::new();
    for (m, refs) in &ordered {
        let chosen = match (&spec.dataset, spec.only.is_empty()) {
            (Some(d), _) => refs.contains(d) || refs.iter().any(|r| reads_dataset.contains(r)),
            (None, true) => true,
            (None, false) => spec.only.contains(&m.name),
        };
        if chosen {
            reads_dataset.insert(m.name.clone());
        }
    }
    let mut stack: Vec<String> = reads_dataset.iter().cloned().collect();
    while let Some(name) = stack.pop() {
        if wanted.insert(name.clone()) {
            stack.extend(
                by_name[&name]
                    .iter()
                    .filter(|r| by_name.contains_key(*r))
                    .cloned(),
            );
        }
    }
    let mut out = Plan {
        models: Vec::new(),
        checks: Vec::new(),
        datasets: BTreeSet::new(),
        read_later: BTreeSet::new(),
        reads: BTreeMap::new(),
    };
    let available =
        |t: &String, planned: &BTreeSet<String>| schemas.contains_key(t) || planned.contains(t);
    let mut planned: BTreeSet<String> = BTreeSet::new();
    for (m, refs) in ordered
        .into_iter()
        .filter(|(m, _)| wanted.contains(&m.name))
    {
        let schema = plan_one(ctx, &m, &refs, false).await?;
        for r in &refs {
            if schemas.contains_key(r) {
                out.datasets.insert(r.clone());
            } else {
                out.read_later.insert(r.clone());
            }
        }
        register_empty(ctx, &m.name, schema.clone())?;
        planned.insert(m.name.clone());
        out.reads.insert(m.name.clone(), refs);
        out.models.push((m, schema));
    }
    // dq_violations is one table: it is rewritten only by a run that can run every check (a
    // check of models outside this run's selection waits for a run that builds them).
    let mut planned_checks = Vec::new();
    for c in checks {
        let refs = references(ctx, &c)?;
        if !refs.iter().all(|r| available(r, &planned))
            && refs.iter().any(|r| by_name.contains_key(r))
        {
            tracing::info!(check = %c.name, "checks not run: a check reads models this run does not build");
            return Ok(out);
        }
        planned_checks.push((c, refs));
    }
    for (c, refs) in planned_checks {
        let schema = plan_one(ctx, &c, &refs, true).await?;
        for r in refs {
            if schemas.contains_key(&r) {
                out.datasets.insert(r);
            } else {
                out.read_later.insert(r);
            }
        }
        out.checks.push((c, schema));
    }
    Ok(out)
}

async fn plan_one(
    ctx: &SessionContext,
    m: &Model,
    refs: &[String],
    is_check: bool,
) -> Result<SchemaRef> {
    let df = ctx.sql(&m.sql).await.map_err(|e| plan_error(m, e))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    df.into_optimized_plan().map_err(|e| plan_error(m, e))?;
    check_settings(m, &schema, is_check)?;
    tracing::debug!(model = %m.name, reads = ?refs, "planned");
    Ok(schema)
}

/// A stable id of the inputs: the curated objects (path, size) and the model files' text.
pub(super) fn run_id(objects: &BTreeMap<String, Opened>, plan: &Plan) -> String {
    let mut h = Sha256::new();
    for (dataset, objs) in objects {
        h.update(dataset.as_bytes());
        for o in objs {
            h.update(o.object.location.path.as_ref().as_bytes());
            h.update(o.object.size.to_le_bytes());
        }
    }
    for (m, _) in plan.models.iter().chain(&plan.checks) {
        h.update(m.sql.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Model {
        model::parse(Path::new(&format!("{name}.sql")), "SELECT 1").unwrap()
    }

    #[test]
    fn models_run_after_the_models_they_read_and_cycles_are_errors() {
        let order = dependency_order(vec![
            (m("agg"), vec!["fact".into()]),
            (m("dim"), vec!["customers".into(), "fact".into()]),
            (m("fact"), vec!["orders".into(), "items".into()]),
            (m("items"), vec!["order_items".into()]),
        ])
        .unwrap();
        let names: Vec<&str> = order.iter().map(|(m, _)| m.name.as_str()).collect();
        assert_eq!(names, ["items", "fact", "agg", "dim"]);
        let e = dependency_order(vec![(m("a"), vec!["b".into()]), (m("b"), vec!["a".into()])])
            .unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }
}

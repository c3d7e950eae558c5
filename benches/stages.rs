//! Criterion benches, one group per stage plus the end-to-end job, all on generated `orders`
//! data and reporting rows per second (`Throughput::Elements`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edp::contract::Contract;
use edp::generate::{self, Dataset, GenSpec};
use edp::output::Codec;
use edp::protect::Protector;
use edp::settings::Settings;
use edp::stage1::dedup::{DedupIndex, DedupPlan};
use edp::stage1::validate::Validator;
use edp::stage1::{self, JobSpec};
use edp::store::Location;

const ROWS: u64 = 65_536;

fn contract() -> Contract {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contracts/orders.json");
    Contract::from_path(&path).unwrap()
}

fn orders(rows: u64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let spec = GenSpec {
        dataset: Dataset::Orders,
        rows,
        seed: 1,
        fault_rate: generate::DEFAULT_FAULT_RATE,
        days: generate::DEFAULT_DAYS,
        end_day: generate::DEFAULT_END_DAY,
    };
    generate::batches(spec, |b| {
        out.push(b);
        Ok(())
    })
    .unwrap();
    out
}

fn stages(c: &mut Criterion) {
    let contract = contract();
    let batches = orders(ROWS);
    let schema = batches[0].schema();

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(ROWS));
    let validator = Validator::new(&contract, &schema, "bench").unwrap();
    g.bench_function("validate", |b| {
        b.iter(|| {
            for batch in &batches {
                criterion::black_box(validator.validate(batch, false).unwrap());
            }
        })
    });
    let protector = Protector::new(&contract, &schema, true, b"bench-key");
    g.bench_function("protect", |b| {
        b.iter(|| {
            for batch in &batches {
                criterion::black_box(protector.protect(batch, "bench", false).unwrap());
            }
        })
    });
    let plan = DedupPlan::new(&contract, &schema, "bench")
        .unwrap()
        .unwrap();
    g.bench_function("dedup", |b| {
        b.iter(|| {
            let mut index = DedupIndex::new(&plan, ROWS, None).unwrap();
            let mut first = 0;
            for batch in &batches {
                let n = batch.num_rows() as u64;
                let numbers: Vec<u64> = (first..first + n).collect();
                index.offer(&plan, batch, None, 0, &numbers).unwrap();
                first += n;
            }
            criterion::black_box(index.finish(&[ROWS]).unwrap())
        })
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    const E2E_ROWS: u64 = 200_000;
    let dir = tempfile::TempDir::new().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = Location::parse(dir.path().join("raw").to_str().unwrap()).unwrap();
    let spec = GenSpec {
        dataset: Dataset::Orders,
        rows: E2E_ROWS,
        seed: 1,
        fault_rate: generate::DEFAULT_FAULT_RATE,
        days: generate::DEFAULT_DAYS,
        end_day: generate::DEFAULT_END_DAY,
    };
    rt.block_on(generate::generate(spec, &raw)).unwrap();
    let defaults = Settings::default();
    let job = JobSpec {
        inputs: vec![raw.url.clone()],
        output: Some(dir.path().join("out").to_str().unwrap().to_string()),
        errors: None,
        contract: Arc::new(contract()),
        csv: Default::default(),
        batch_size: defaults.batch_size,
        read_ahead: defaults.read_ahead,
        codec: Codec::Snappy,
        pci_enabled: true,
        validation_enabled: true,
        deduplication_enabled: true,
        pii_key: b"bench-key".to_vec(),
        pii_key_development: false,
        progress: false,
        memory_limit: defaults.memory_limit.0,
        index_memory: defaults.memory_limit.0 / stage1::INDEX_BUDGET_SHARE,
        spill_dir: std::env::temp_dir(),
        references: Vec::new(),
        shard: stage1::Shard::ALL,
        interrupted: Default::default(),
        replay: None,
    };
    let mut g = c.benchmark_group("end_to_end");
    g.sample_size(10);
    g.throughput(Throughput::Elements(E2E_ROWS));
    g.bench_function("raw_to_curated_orders", |b| {
        b.iter_batched(
            || (),
            |_| rt.block_on(stage1::run(&job)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, stages, end_to_end);
criterion_main!(benches);

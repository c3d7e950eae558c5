//! Shared helpers for the integration tests: run the binary, read Parquet back, small
//! accessors that keep assertions about contents short.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The Python with the test tools (moto, boto3, duckdb): `EDP_TEST_PYTHON` as scripts/test.sh
/// sets it (its virtual environment), else `python3`.
pub fn python() -> String {
    std::env::var("EDP_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Path of the built `edp` binary.
pub fn edp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edp"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled contract of `dataset`.
pub fn contract(dataset: &str) -> PathBuf {
    root()
        .join("fixtures/contracts")
        .join(format!("{dataset}.json"))
}

/// Runs `edp` with `args` (logs as text unless `args` say otherwise, no progress bar).
pub fn edp(args: &[&str]) -> Output {
    edp_env(args, &[])
}

/// Runs `edp` with extra environment variables.
pub fn edp_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(edp_bin());
    if !args.contains(&"--log-format") {
        cmd.args(["--log-format", "text"]);
    }
    cmd.args(["--progress", "never"]).args(args);
    cmd.env_remove("PCI_DSS_ENABLED")
        .env_remove("BATCH_SIZE")
        .env_remove("PII_HASH_KEY")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run edp")
}

/// Runs `edp` like [`edp_env`] with JSON logs, sends it SIGTERM once it logs `processing`
/// (the job has started), and returns what it did.
pub fn edp_terminated(args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::io::{BufRead, Read};
    let mut cmd = Command::new(edp_bin());
    cmd.args(["--log-format", "json", "--progress", "never"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run edp");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut logged = Vec::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("read stderr") == 0 {
            break;
        }
        logged.extend_from_slice(line.as_bytes());
        if line.contains("\"processing\"") {
            let pid = child.id().to_string();
            let kill = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(kill.expect("kill").success());
            break;
        }
    }
    err.read_to_end(&mut logged).expect("read stderr");
    let mut out = child.wait_with_output().expect("wait for edp");
    out.stderr = logged;
    out
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stderr.
pub fn ok(o: Output) -> String {
    let err = stderr(&o);
    assert!(
        o.status.success(),
        "edp failed ({:?}): {err}",
        o.status.code()
    );
    err
}

/// The arguments of `edp raw-to-curated` from `input` to `out` under `contract_path`.
pub fn stage1(input: &Path, out: &Path, contract_path: &Path) -> Vec<String> {
    vec![
        "raw-to-curated".into(),
        "--input".into(),
        input.to_str().unwrap().into(),
        "--output".into(),
        out.to_str().unwrap().into(),
        "--contract".into(),
        contract_path.to_str().unwrap().into(),
    ]
}

/// The `status` enum of fixtures/contracts/orders.json, written out for checks that compute
/// validity independently of the program.
pub const ORDER_STATUSES: [&str; 6] = [
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];

/// The six datasets of `edp generate --dataset all`, parents before children.
pub const DATASETS: [&str; 6] = [
    "customers",
    "products",
    "inventory",
    "orders",
    "order_items",
    "payments",
];

/// `&str` views of owned arguments, as [`edp`] takes them.
pub fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Generates `rows` rows of `dataset` into `dir/<dataset>/` and returns the object path.
pub fn generate(dir: &Path, dataset: &str, rows: u64, seed: u64, fault_rate: f64) -> PathBuf {
    let out = dir.join(dataset);
    ok(edp(&[
        "generate",
        "--dataset",
        dataset,
        "--rows",
        &rows.to_string(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        &seed.to_string(),
        "--fault-rate",
        &fault_rate.to_string(),
    ]));
    out.join("20250116-000000000.parquet")
}

/// Writes `batch` as Parquet to `path` with the writer's defaults (an offset index included),
/// in row groups of at most `row_group_rows` rows when given.
pub fn write_parquet(path: &Path, batch: &RecordBatch, row_group_rows: Option<usize>) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(row_group_rows)
        .build();
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// All rows of a Parquet file as one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    parquet_rows(file)
}

/// All rows of Parquet data (a file or bytes) as one batch.
pub fn parquet_rows<T: parquet::file::reader::ChunkReader + 'static>(data: T) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// `(name, value)` pairs borrowed the way [`edp_env`] takes them.
pub fn env_refs<K: AsRef<str>>(env: &[(K, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_ref(), v.as_str())).collect()
}

/// A string column as owned optional values.
pub fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = a.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

/// A curated date-time column: `Timestamp(Microsecond, "UTC")`, as microseconds since the epoch.
pub fn micros(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let a = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(
        a.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "{name}"
    );
    let a = a.as_primitive::<TimestampMicrosecondType>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

/// The microseconds since the epoch of an ISO 8601 date-time string, as curated output holds it.
pub fn parse_micros(s: &str) -> Option<i64> {
    edp::datetime::parse_datetime(s).map(|n| n.div_euclid(1_000) as i64)
}

/// An Int64 column.
pub fn ints(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// A Float64 column.
pub fn floats(b: &RecordBatch, name: &str) -> Vec<f64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

/// A UInt64 column.
pub fn uints(b: &RecordBatch, name: &str) -> Vec<u64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec()
}

/// The `_edp_errors` of each quarantine row as (column, rule) pairs.
pub fn quarantine_errors(b: &RecordBatch) -> Vec<Vec<(String, String)>> {
    let list = b.column_by_name("_edp_errors").unwrap().as_list::<i32>();
    (0..list.len())
        .map(|i| {
            let s = list.value(i);
            let s = s.as_struct();
            let rules = s.column_by_name("rule").unwrap().as_string::<i32>();
            let cols = s.column_by_name("column").unwrap().as_string::<i32>();
            (0..s.len())
                .map(|j| (cols.value(j).to_string(), rules.value(j).to_string()))
                .collect()
        })
        .collect()
}

/// The run report of an output prefix.
pub fn report(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("_edp_report.json")).expect("report");
    serde_json::from_str(&text).unwrap()
}

/// Every card number the independent checker finds in `s`: spans of 13–19 digits with single
/// spaces or dashes between groups, starting and ending at any digit (a card glued to other
/// digits counts, as in `protect`), Luhn-valid, with a major brand's prefix.
pub fn find_pans(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut found = Vec::new();
    for start in 0..b.len() {
        if !b[start].is_ascii_digit() {
            continue;
        }
        let mut digits = Vec::new();
        let mut i = start;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                digits.push(b[i]);
                i += 1;
                if (13..=19).contains(&digits.len())
                    && edp::protect::luhn_valid(&digits)
                    && edp::protect::brand_fits(&digits)
                {
                    found.push(String::from_utf8(digits.clone()).unwrap());
                }
                if digits.len() > 19 {
                    break;
                }
            } else if (b[i] == b' ' || b[i] == b'-')
                && i + 1 < b.len()
                && b[i + 1].is_ascii_digit()
                && i > start
            {
                i += 1;
            } else {
                break;
            }
        }
    }
    found
}

/// Columns of the fixture contracts declared `x-pci: "none"`, which are not scanned (DMS's
/// 35-digit change sequence holds card-like spans by the glued rule).
const NOT_SCANNED: &[&str] = &["AR_H_CHANGE_SEQ"];

/// The key `edp run` tests hash PII with (`edp run` refuses the built-in development key).
pub const TEST_PII_KEY: &str = "edp-test-key";

/// The key the local commands hash PII with when `PII_HASH_KEY` is unset.
pub const DEV_PII_KEY: &str = "edp-development-key-not-for-production";

/// HMAC-SHA-256 of `value` under `key` as lowercase hex, computed here with the `hmac` crate
/// (the reference the `x-pii: hash` tokens are checked against).
pub fn hmac_hex(key: &str, value: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A PII hash token (64 lowercase hex digits): replaced whole and not scanned by edp, since
/// a run of its digits can pass Luhn by chance.
fn is_token(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Asserts no string column of `batch` holds a card number, except the columns declared
/// `x-pci: "none"` in the fixture contracts and PII hash tokens.
pub fn assert_no_pans(batch: &RecordBatch, what: &str) {
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if NOT_SCANNED.contains(&field.name().as_str()) {
            continue;
        }
        if let Some(a) = col.as_string_opt::<i32>() {
            for i in 0..a.len() {
                if a.is_valid(i) && !is_token(a.value(i)) {
                    let pans = find_pans(a.value(i));
                    assert!(
                        pans.is_empty(),
                        "{what}: column {} row {i} holds a card number",
                        field.name()
                    );
                }
            }
        }
    }
}

/// An S3-protocol server on loopback for the tests: `EDP_TEST_S3_ENDPOINT` when set (the test
/// script starts the moto server once), else one started here (`python3 -m moto.server`) and
/// stopped on drop.
pub struct S3Server {
    pub endpoint: String,
    child: Option<std::process::Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        if let Ok(endpoint) = std::env::var("EDP_TEST_S3_ENDPOINT") {
            return S3Server {
                endpoint,
                child: None,
            };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 not found: run scripts/test.sh");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 30,
                "moto server did not start: run scripts/test.sh, or pip install 'moto[server]'"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    /// Environment for `edp` to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("PII_HASH_KEY", TEST_PII_KEY.into()),
        ]
    }

    /// Generates `rows` orders rows, a share `fault_rate` of them faulty, into the S3 URL `out`.
    pub fn generate_orders(&self, rows: u64, out: &str, seed: u64, fault_rate: f64) {
        let env = self.env();
        let env = env_refs(&env);
        let (rows, seed, fault_rate) = (rows.to_string(), seed.to_string(), fault_rate.to_string());
        let args = [
            "generate",
            "--dataset",
            "orders",
            "--rows",
            &rows,
            "--out",
            out,
        ];
        let args = [&args[..], &["--seed", &seed, "--fault-rate", &fault_rate]].concat();
        ok(edp_env(&args, &env));
    }

    /// Creates `bucket` with a plain S3 `PUT /bucket` (the server does not check signatures).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {resp}"
        );
    }

    /// SDK configuration for SNS and SQS on this server.
    pub fn sdk_config(&self, rt: &tokio::runtime::Runtime) -> aws_config::SdkConfig {
        rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(&self.endpoint)
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .load(),
        )
    }

    /// (ServerSideEncryption, SSEKMSKeyId) of an object, read with boto3 (which moto brings):
    /// the server answers unsigned requests for KMS-encrypted objects with 403.
    pub fn encryption(&self, bucket: &str, key: &str) -> (String, String) {
        let script = "import boto3, sys\n\
            s = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id='test', aws_secret_access_key='test')\n\
            h = s.head_object(Bucket=sys.argv[2], Key=sys.argv[3])\n\
            print(h.get('ServerSideEncryption'), h.get('SSEKMSKeyId'))";
        let out = Command::new(python())
            .args(["-c", script, &self.endpoint, bucket, key])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
        (a.to_string(), b.to_string())
    }

    /// Number of multipart uploads in progress in `bucket` (S3 `GET /bucket?uploads`).
    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /{bucket}?uploads HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.matches("<Upload>").count()
    }

    /// An object store client for `bucket`.
    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// Every key under `bucket` with its size.
    pub fn list(&self, bucket: &str) -> Vec<(String, u64)> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let store = self.store(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out: Vec<(String, u64)> = rt
            .block_on(store.list(None).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        out.sort();
        out
    }

    /// The rows of a Parquet object.
    pub fn read_parquet(&self, bucket: &str, key: &str) -> RecordBatch {
        parquet_rows(self.get(bucket, key))
    }

    /// The bytes of an object.
    pub fn get(&self, bucket: &str, key: &str) -> bytes::Bytes {
        use object_store::ObjectStoreExt;
        let store = self.store(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            store
                .get(&object_store::path::Path::parse(key).unwrap())
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap()
    }
}

/// A TCP proxy in front of the S3 server that answers the first `fail_first` requests with
/// `503 Slow Down` and forwards everything after: an injected transient fault.
pub struct FaultyProxy {
    pub endpoint: String,
    pub faults_served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyProxy {
    pub fn start(upstream: &str, fail_first: usize) -> FaultyProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let faults = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = faults.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                if served.load(Ordering::SeqCst) < fail_first {
                    // Read the request head, then refuse it the way S3 does under load.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                    let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        FaultyProxy {
            endpoint,
            faults_served: faults,
        }
    }
}

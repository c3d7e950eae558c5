//! Stage 2 against the loopback S3/Glue server: `edp run` on a curated object builds the prod
//! tables under the prod bucket and registers them and their partitions in Glue; the same
//! event again changes nothing; partition projection writes the properties instead.

use std::collections::BTreeSet;

use crate::util::{edp_env, env_refs, ok, root, S3Server};

const DATASETS: [&str; 6] = [
    "customers",
    "orders",
    "order_items",
    "products",
    "inventory",
    "payments",
];

fn glue_tables(
    rt: &tokio::runtime::Runtime,
    glue: &aws_sdk_glue::Client,
    db: &str,
) -> Vec<aws_sdk_glue::types::Table> {
    rt.block_on(glue.get_tables().database_name(db).send())
        .expect("get_tables")
        .table_list
        .unwrap_or_default()
}

fn glue_partitions(
    rt: &tokio::runtime::Runtime,
    glue: &aws_sdk_glue::Client,
    db: &str,
    table: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let page = rt
            .block_on(
                glue.get_partitions()
                    .database_name(db)
                    .table_name(table)
                    .set_next_token(token)
                    .send(),
            )
            .expect("get_partitions");
        for p in page.partitions.unwrap_or_default() {
            let values = p.values.unwrap_or_default();
            out.insert(format!(
                "year={}/month={}/day={}",
                values[0], values[1], values[2]
            ));
        }
        token = page.next_token;
        if token.is_none() {
            return out;
        }
    }
}

#[test]
fn run_on_a_curated_object_builds_prod_and_the_glue_catalog() {
    let s3 = S3Server::start();
    for b in ["raw-s2", "cur-s2", "err-s2", "prod-s2"] {
        s3.create_bucket(b);
    }
    let mut env = s3.env();
    env.extend([
        ("CURATED_BUCKET", "cur-s2".to_string()),
        ("ERROR_BUCKET", "err-s2".into()),
        ("PROD_BUCKET", "prod-s2".into()),
        (
            "CONTRACTS_DIR",
            root().join("fixtures/contracts").display().to_string(),
        ),
        ("MODELS_DIR", root().join("models").display().to_string()),
        ("CATALOG", "glue".into()),
        ("GLUE_DATABASE", "shop_prod".into()),
    ]);
    let env_ref = env_refs(&env);
    for d in DATASETS {
        let key = format!("shop/{d}-raw/2025/01/LOAD00000001.parquet");
        ok(edp_env(
            &[
                "generate",
                "--dataset",
                d,
                "--rows",
                "400",
                "--out",
                &format!("s3://raw-s2/{key}"),
            ],
            &env_ref,
        ));
        ok(edp_env(
            &["run", "--bucket", "raw-s2", "--key", &key],
            &env_ref,
        ));
    }
    let event = "shop/orders-curated/2025/01/LOAD00000001.parquet/part-00000.parquet";
    let run = || {
        let o = edp_env(&["run", "--bucket", "cur-s2", "--key", event], &env_ref);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        ok(o);
        let emf: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(emf["Stage"], "curated-to-prod");
        assert_eq!(emf["Dataset"], "orders");
        assert_eq!(emf["ErrorCount"], 0);
        assert!(emf["RecordsProcessed"].as_u64().unwrap() > 400, "{emf}");
        let report: serde_json::Value =
            serde_json::from_slice(&s3.get("prod-s2", "shop/_edp_prod_report.json")).unwrap();
        // Everything but the report (its durations differ from run to run).
        let listing: Vec<(String, u64)> = s3
            .list("prod-s2")
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_edp_prod_report.json"))
            .collect();
        (listing, report)
    };
    let (first, report) = run();
    let models: BTreeSet<String> = first
        .iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .map(|(k, _)| k.split('/').nth(1).unwrap().to_string())
        .collect();
    // The models that read orders, directly or through other models, and the checks' table;
    // dim_products reads only products and inventory.
    let expected: BTreeSet<String> = [
        "agg_daily_product_sales",
        "agg_daily_sales",
        "dim_customers",
        "dq_violations",
        "fact_order_items",
        "fact_orders",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(models, expected);
    let fact_dirs: BTreeSet<String> = first
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("shop/fact_orders/"))
        .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    assert!(fact_dirs.len() > 30, "{fact_dirs:?}");
    assert!(fact_dirs
        .iter()
        .all(|d| d.len() == "year=2024/month=06/day=01".len() || d.contains("__HIVE")));
    let fact_rows: u64 = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "fact_orders")
        .map(|m| m["rows"].as_u64().unwrap())
        .unwrap();
    let orders_current = report["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "orders")
        .map(|d| d["rows_current"].as_u64().unwrap())
        .unwrap();
    assert_eq!(fact_rows, orders_current);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let glue = aws_sdk_glue::Client::new(&s3.sdk_config(&rt));
    let tables = glue_tables(&rt, &glue, "shop_prod");
    let names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, expected);
    let fact = tables.iter().find(|t| t.name == "fact_orders").unwrap();
    let sd = fact.storage_descriptor.as_ref().unwrap();
    assert_eq!(
        sd.location.as_deref(),
        Some("s3://prod-s2/shop/fact_orders/")
    );
    let columns: Vec<(String, String)> = sd
        .columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.clone(), c.r#type.clone().unwrap_or_default()))
        .collect();
    assert!(columns.contains(&("total_amount".into(), "decimal(18,2)".into())));
    assert!(columns.contains(&("created_at".into(), "timestamp".into())));
    assert!(
        !columns.iter().any(|(c, _)| c == "order_date"),
        "{columns:?}"
    );
    let keys: Vec<String> = fact
        .partition_keys
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(keys, ["year", "month", "day"]);
    assert_eq!(
        glue_partitions(&rt, &glue, "shop_prod", "fact_orders"),
        fact_dirs
    );

    // The same event again: the same objects, nothing uploaded, the same partitions.
    let (second, report) = run();
    assert_eq!(first, second);
    assert!(report["models"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["files_uploaded"] == 0 && m["files_unchanged"].as_u64().unwrap() > 0));
    assert_eq!(
        glue_partitions(&rt, &glue, "shop_prod", "fact_orders"),
        fact_dirs
    );

    // Partition projection: the table carries the projection properties.
    let mut env = env.clone();
    env.push(("CATALOG", "projection".into()));
    env.push(("GLUE_DATABASE", "shop_projected".into()));
    let env_ref = env_refs(&env);
    ok(edp_env(
        &["run", "--bucket", "cur-s2", "--key", event],
        &env_ref,
    ));
    let tables = glue_tables(&rt, &glue, "shop_projected");
    let fact = tables.iter().find(|t| t.name == "fact_orders").unwrap();
    let params = fact.parameters.as_ref().unwrap();
    assert_eq!(
        params.get("projection.enabled").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        params.get("projection.month.digits").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        params.get("storage.location.template").map(String::as_str),
        Some("s3://prod-s2/shop/fact_orders/year=${year}/month=${month}/day=${day}/")
    );
}

-- The stage 2 models written by hand for DuckDB, for scripts/bench.sh --stage2: the current
-- state of each dataset (latest version per key by updated_at, sequence, object, row; deletes
-- removed) from the curated files under CUR, the six models of models/, written to OUT as
-- ZSTD Parquet with Hive partitions. Placeholders CUR, OUT, THREADS, MEMORY are substituted.
SET threads = THREADS;
SET memory_limit = 'MEMORY';
SET preserve_insertion_order = false;

CREATE TEMP TABLE customers AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/customers/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';
CREATE TEMP TABLE orders AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/orders/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY updated_at DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';
CREATE TEMP TABLE order_items AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/order_items/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY order_item_id ORDER BY updated_at DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';
CREATE TEMP TABLE products AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/products/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY updated_at DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';
CREATE TEMP TABLE inventory AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/inventory/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY product_id, warehouse_id ORDER BY updated_at DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';
CREATE TEMP TABLE payments AS
SELECT * EXCLUDE (Op, filename, file_row_number) FROM read_parquet('CUR/payments/part-*.parquet', filename = true, file_row_number = true)
QUALIFY row_number() OVER (PARTITION BY payment_id ORDER BY updated_at DESC, CAST(AR_H_CHANGE_SEQ AS HUGEINT) DESC, filename DESC, file_row_number DESC) = 1 AND Op <> 'D';

CREATE TEMP TABLE fact_order_items AS
SELECT i.order_item_id, i.order_id, i.product_id, i.quantity,
    CAST(i.unit_price AS DECIMAL(18, 2)) AS unit_price,
    CAST(i.discount_pct AS DECIMAL(5, 2)) AS discount_pct,
    CAST(CAST(i.quantity AS DECIMAL(18, 0)) * CAST(i.unit_price AS DECIMAL(18, 2))
        * (100 - CAST(i.discount_pct AS DECIMAL(5, 2))) / 100 AS DECIMAL(18, 2)) AS line_amount,
    i.updated_at, CAST(o.created_at AS DATE) AS order_date, o.status, o.customer_id, p.category
FROM order_items i
LEFT JOIN orders o ON o.order_id = i.order_id
LEFT JOIN products p ON p.product_id = i.product_id;

CREATE TEMP TABLE fact_orders AS
WITH lines AS (
    SELECT order_id, count(*) AS item_count, sum(quantity) AS units, sum(line_amount) AS items_amount
    FROM fact_order_items GROUP BY order_id),
payments_of AS (
    SELECT order_id,
        sum(CASE WHEN status = 'captured' THEN CAST(amount AS DECIMAL(18, 2)) END) AS paid_amount,
        first(method ORDER BY created_at DESC, payment_id DESC) AS method
    FROM payments GROUP BY order_id)
SELECT o.order_id, o.customer_id, o.status, CAST(o.total_amount AS DECIMAL(18, 2)) AS total_amount,
    o.currency, o.email, o.phone, o.card_number, o.notes, o.shipping_country, o.created_at,
    o.updated_at, c.country, c.loyalty_tier, coalesce(l.item_count, 0) AS item_count,
    coalesce(l.units, 0) AS units, CAST(coalesce(l.items_amount, 0) AS DECIMAL(18, 2)) AS items_amount,
    CAST(coalesce(p.paid_amount, 0) AS DECIMAL(18, 2)) AS paid_amount, p.method AS payment_method,
    o.status IN ('paid', 'shipped', 'delivered') AS is_revenue, CAST(o.created_at AS DATE) AS order_date
FROM orders o
LEFT JOIN customers c ON c.customer_id = o.customer_id
LEFT JOIN lines l ON l.order_id = o.order_id
LEFT JOIN payments_of p ON p.order_id = o.order_id;

COPY (SELECT * EXCLUDE (order_date), strftime(order_date, '%Y') AS year, strftime(order_date, '%m') AS month,
        strftime(order_date, '%d') AS day FROM fact_order_items ORDER BY order_date, order_id, order_item_id)
    TO 'OUT/fact_order_items' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month, day));
COPY (SELECT * EXCLUDE (order_date), strftime(order_date, '%Y') AS year, strftime(order_date, '%m') AS month,
        strftime(order_date, '%d') AS day FROM fact_orders ORDER BY order_date, order_id)
    TO 'OUT/fact_orders' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month, day));

COPY (
    WITH revenue AS (
        SELECT customer_id, count(*) AS order_count, sum(total_amount) AS lifetime_value,
            min(created_at) AS first_order_at, max(created_at) AS last_order_at
        FROM fact_orders WHERE is_revenue GROUP BY customer_id)
    SELECT c.*, CAST(c.created_at AS DATE) AS customer_since, coalesce(r.order_count, 0) AS order_count,
        CAST(coalesce(r.lifetime_value, 0) AS DECIMAL(18, 2)) AS lifetime_value, r.first_order_at, r.last_order_at
    FROM customers c LEFT JOIN revenue r ON r.customer_id = c.customer_id ORDER BY c.customer_id)
TO 'OUT/dim_customers.parquet' (FORMAT parquet, COMPRESSION zstd);

COPY (
    WITH stock AS (
        SELECT product_id, sum(quantity_on_hand) AS quantity_on_hand,
            sum(CASE WHEN quantity_on_hand > 0 THEN 1 ELSE 0 END) AS warehouses_in_stock,
            max(CASE WHEN quantity_on_hand <= reorder_level THEN 1 ELSE 0 END) AS below_reorder
        FROM inventory GROUP BY product_id)
    SELECT p.* REPLACE (CAST(p.price AS DECIMAL(18, 2)) AS price), coalesce(s.quantity_on_hand, 0) AS quantity_on_hand,
        coalesce(s.warehouses_in_stock, 0) AS warehouses_in_stock, coalesce(s.below_reorder, 0) = 1 AS below_reorder
    FROM products p LEFT JOIN stock s ON s.product_id = p.product_id ORDER BY p.product_id)
TO 'OUT/dim_products.parquet' (FORMAT parquet, COMPRESSION zstd);

COPY (
    SELECT order_date, shipping_country, currency,
        sum(CASE WHEN is_revenue THEN 1 ELSE 0 END) AS orders,
        sum(CASE WHEN is_revenue THEN units ELSE 0 END) AS units,
        CAST(coalesce(sum(CASE WHEN is_revenue THEN total_amount END), 0) AS DECIMAL(18, 2)) AS revenue,
        count(DISTINCT CASE WHEN is_revenue THEN customer_id END) AS customers,
        CAST(sum(CASE WHEN is_revenue THEN total_amount END)
            / nullif(sum(CASE WHEN is_revenue THEN 1 ELSE 0 END), 0) AS DECIMAL(18, 2)) AS avg_order_value,
        sum(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunded_orders,
        strftime(order_date, '%Y') AS year, strftime(order_date, '%m') AS month
    FROM fact_orders GROUP BY order_date, shipping_country, currency ORDER BY order_date, shipping_country, currency)
TO 'OUT/agg_daily_sales' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month));

COPY (
    SELECT order_date, product_id, category, sum(quantity) AS units, CAST(sum(line_amount) AS DECIMAL(18, 2)) AS revenue,
        strftime(order_date, '%Y') AS year, strftime(order_date, '%m') AS month
    FROM fact_order_items WHERE status IN ('paid', 'shipped', 'delivered')
    GROUP BY order_date, product_id, category ORDER BY order_date, product_id)
TO 'OUT/agg_daily_product_sales' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month));

-- One row per current order line, with its order's date, status and customer and its
-- product's category. line_amount = quantity × unit_price × (1 − discount_pct/100), rounded to
-- cents (exact decimal arithmetic, half away from zero). Lines whose order is unknown have a
-- null order_date (Hive's default partition); the checks report them.
-- partition_by: order_date
-- granularity: day
-- sort_by: order_id, order_item_id
-- key: order_item_id
SELECT
    i.order_item_id,
    i.order_id,
    i.product_id,
    i.quantity,
    CAST(i.unit_price AS DECIMAL(18, 2)) AS unit_price,
    CAST(i.discount_pct AS DECIMAL(5, 2)) AS discount_pct,
    CAST(
        CAST(i.quantity AS DECIMAL(18, 0))
        * CAST(i.unit_price AS DECIMAL(18, 2))
        * (CAST(100 AS DECIMAL(5, 2)) - CAST(i.discount_pct AS DECIMAL(5, 2)))
        * CAST(0.01 AS DECIMAL(3, 2))
        AS DECIMAL(18, 2)
    ) AS line_amount,
    i.updated_at,
    CAST(o.created_at AS DATE) AS order_date,
    o.status,
    o.customer_id,
    p.category
FROM order_items i
LEFT JOIN orders o ON o.order_id = i.order_id
LEFT JOIN products p ON p.product_id = i.product_id

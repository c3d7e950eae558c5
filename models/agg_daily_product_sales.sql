-- Per order date, product and category: units and revenue (Σ line_amount) over the lines of
-- revenue orders.
-- partition_by: order_date
-- granularity: month
-- sort_by: order_date, product_id
-- key: order_date, product_id, category
SELECT
    order_date,
    product_id,
    category,
    SUM(quantity) AS units,
    CAST(SUM(line_amount) AS DECIMAL(18, 2)) AS revenue
FROM fact_order_items
WHERE status IN ('paid', 'shipped', 'delivered')
GROUP BY order_date, product_id, category

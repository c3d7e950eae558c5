-- Per order date, shipping country and currency: the number of revenue orders, their units,
-- revenue (Σ total_amount), distinct customers and average order value (revenue / orders,
-- null without revenue orders), and the number of refunded orders.
-- partition_by: order_date
-- granularity: month
-- sort_by: order_date, shipping_country, currency
-- key: order_date, shipping_country, currency
SELECT
    order_date,
    shipping_country,
    currency,
    SUM(CASE WHEN is_revenue THEN 1 ELSE 0 END) AS orders,
    SUM(CASE WHEN is_revenue THEN units ELSE 0 END) AS units,
    CAST(COALESCE(SUM(CASE WHEN is_revenue THEN total_amount END), 0) AS DECIMAL(18, 2)) AS revenue,
    COUNT(DISTINCT CASE WHEN is_revenue THEN customer_id END) AS customers,
    CAST(
        SUM(CASE WHEN is_revenue THEN total_amount END)
        / NULLIF(SUM(CASE WHEN is_revenue THEN 1 ELSE 0 END), 0)
        AS DECIMAL(18, 2)
    ) AS avg_order_value,
    SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunded_orders
FROM fact_orders
GROUP BY order_date, shipping_country, currency

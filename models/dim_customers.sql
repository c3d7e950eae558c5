-- One row per current customer: every curated column, the date of created_at, and the count,
-- Σ total_amount and first and last created_at of its current revenue orders (0, 0 and null
-- when it has none).
-- sort_by: customer_id
-- key: customer_id
WITH revenue AS (
    SELECT
        customer_id,
        COUNT(*) AS order_count,
        SUM(total_amount) AS lifetime_value,
        MIN(created_at) AS first_order_at,
        MAX(created_at) AS last_order_at
    FROM fact_orders
    WHERE is_revenue
    GROUP BY customer_id
)
SELECT
    c.customer_id,
    c.email,
    c.first_name,
    c.last_name,
    c.phone,
    c.street,
    c.city,
    c.postal_code,
    c.country,
    c.loyalty_tier,
    c.marketing_opt_in,
    c.created_at,
    c.updated_at,
    CAST(c.created_at AS DATE) AS customer_since,
    COALESCE(r.order_count, 0) AS order_count,
    CAST(COALESCE(r.lifetime_value, 0) AS DECIMAL(18, 2)) AS lifetime_value,
    r.first_order_at,
    r.last_order_at
FROM customers c
LEFT JOIN revenue r ON r.customer_id = c.customer_id

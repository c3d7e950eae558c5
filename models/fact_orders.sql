-- One row per current order: every curated column (money as DECIMAL(18,2)), the customer's
-- country and loyalty tier (null when the customer is unknown), its current lines (count,
-- units, Σ line_amount), Σ amount of its captured payments, the method of its latest payment
-- by created_at (ties: greatest payment_id), whether it is a revenue order (paid, shipped,
-- delivered) and its UTC order date.
-- partition_by: order_date
-- granularity: day
-- sort_by: order_id
-- key: order_id
WITH lines AS (
    SELECT
        order_id,
        COUNT(*) AS item_count,
        SUM(quantity) AS units,
        SUM(line_amount) AS items_amount
    FROM fact_order_items
    GROUP BY order_id
),
payments_of AS (
    -- One pass over payments: Σ of the captured ones, and the method of the latest.
    SELECT
        order_id,
        SUM(CASE WHEN status = 'captured' THEN CAST(amount AS DECIMAL(18, 2)) END) AS paid_amount,
        first_value(method ORDER BY created_at DESC, payment_id DESC) AS method
    FROM payments
    GROUP BY order_id
)
SELECT
    o.order_id,
    o.customer_id,
    o.status,
    CAST(o.total_amount AS DECIMAL(18, 2)) AS total_amount,
    o.currency,
    o.email,
    o.phone,
    o.card_number,
    o.notes,
    o.shipping_country,
    o.created_at,
    o.updated_at,
    c.country,
    c.loyalty_tier,
    COALESCE(l.item_count, 0) AS item_count,
    COALESCE(l.units, 0) AS units,
    CAST(COALESCE(l.items_amount, 0) AS DECIMAL(18, 2)) AS items_amount,
    CAST(COALESCE(p.paid_amount, 0) AS DECIMAL(18, 2)) AS paid_amount,
    p.method AS payment_method,
    o.status IN ('paid', 'shipped', 'delivered') AS is_revenue,
    CAST(o.created_at AS DATE) AS order_date
FROM orders o
LEFT JOIN customers c ON c.customer_id = o.customer_id
LEFT JOIN lines l ON l.order_id = o.order_id
LEFT JOIN payments_of p ON p.order_id = o.order_id

-- An order's total_amount equals the sum of its lines within 0.01 (orders with lines).
SELECT
    CAST(order_id AS VARCHAR) AS keys,
    CAST(total_amount AS VARCHAR) AS observed,
    CAST(items_amount AS VARCHAR) AS expected
FROM fact_orders
WHERE item_count > 0 AND ABS(total_amount - items_amount) > 0.01

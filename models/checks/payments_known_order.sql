-- Every current payment belongs to a current order.
SELECT
    p.payment_id AS keys,
    CAST(p.order_id AS VARCHAR) AS observed,
    'an existing order_id' AS expected
FROM payments p
LEFT JOIN orders o ON o.order_id = p.order_id
WHERE o.order_id IS NULL

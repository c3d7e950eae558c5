-- Every current order line belongs to a current order.
SELECT
    CAST(i.order_item_id AS VARCHAR) AS keys,
    CAST(i.order_id AS VARCHAR) AS observed,
    'an existing order_id' AS expected
FROM order_items i
LEFT JOIN orders o ON o.order_id = i.order_id
WHERE o.order_id IS NULL

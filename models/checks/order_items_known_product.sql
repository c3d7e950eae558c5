-- Every current order line names a current product.
SELECT
    CAST(i.order_item_id AS VARCHAR) AS keys,
    CAST(i.product_id AS VARCHAR) AS observed,
    'an existing product_id' AS expected
FROM order_items i
LEFT JOIN products p ON p.product_id = i.product_id
WHERE p.product_id IS NULL

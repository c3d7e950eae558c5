-- Inventory is never negative.
SELECT
    CAST(product_id AS VARCHAR) || '/' || CAST(warehouse_id AS VARCHAR) AS keys,
    CAST(quantity_on_hand AS VARCHAR) AS observed,
    '>= 0' AS expected
FROM inventory
WHERE quantity_on_hand < 0

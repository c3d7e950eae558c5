-- One row per current product: every curated column (price as DECIMAL(18,2)), Σ current
-- quantity on hand over its warehouses, the number of warehouses with quantity > 0, and
-- whether any warehouse is at or under its reorder level (0, 0 and false without inventory).
-- sort_by: product_id
-- key: product_id
WITH stock AS (
    SELECT
        product_id,
        SUM(quantity_on_hand) AS quantity_on_hand,
        SUM(CASE WHEN quantity_on_hand > 0 THEN 1 ELSE 0 END) AS warehouses_in_stock,
        MAX(CASE WHEN quantity_on_hand <= reorder_level THEN 1 ELSE 0 END) AS below_reorder
    FROM inventory
    GROUP BY product_id
)
SELECT
    p.product_id,
    p.sku,
    p.name,
    p.description,
    p.category,
    CAST(p.price AS DECIMAL(18, 2)) AS price,
    p.weight_kg,
    p.active,
    p.updated_at,
    COALESCE(s.quantity_on_hand, 0) AS quantity_on_hand,
    COALESCE(s.warehouses_in_stock, 0) AS warehouses_in_stock,
    COALESCE(s.below_reorder, 0) = 1 AS below_reorder
FROM products p
LEFT JOIN stock s ON s.product_id = p.product_id

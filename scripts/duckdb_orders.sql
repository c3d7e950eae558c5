-- The stage 1 `orders` job written by hand in DuckDB, for scripts/bench.sh to compare against:
-- the same row checks as fixtures/contracts/orders.json (a delete checked on its key, event time
-- and op only), the latest valid version per order_id, card numbers masked (declared column and free text, by regex: no Luhn check, so
-- it does less work than edp), e-mails hashed, date-times typed in curated, curated and quarantine
-- written as Snappy Parquet.
-- scripts/bench.sh fills in the placeholders: the raw rows after FROM (with their filename and
-- file_row_number: the Parquet object, or the DMS CSV full load and CDC objects), the output
-- directory and the thread count.
SET threads = THREADS;
SET preserve_insertion_order = false;

CREATE TEMP TABLE checked AS
SELECT *,
  list_concat(
    list_filter([
      CASE WHEN Op IS NOT NULL AND Op NOT IN ('I', 'U', 'D') THEN 'Op enum' END,
      CASE WHEN order_id IS NULL OR order_id < 1 THEN 'order_id minimum' END,
      CASE WHEN try_cast(updated_at AS TIMESTAMP) IS NULL THEN 'updated_at format' END,
      CASE WHEN try_cast(updated_at AS TIMESTAMP) < TIMESTAMP '2000-01-01' THEN 'updated_at formatMinimum' END
    ], lambda x: x IS NOT NULL),
    CASE WHEN upper(Op) = 'D' THEN []::VARCHAR[] ELSE list_filter([
      CASE WHEN customer_id IS NULL OR customer_id < 1 THEN 'customer_id minimum' END,
      CASE WHEN status IS NULL OR status NOT IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded') THEN 'status enum' END,
      CASE WHEN total_amount IS NULL OR total_amount < 0 THEN 'total_amount minimum' END,
      CASE WHEN total_amount > 1000000 THEN 'total_amount maximum' END,
      CASE WHEN currency IS NULL OR NOT regexp_full_match(currency, '[A-Z]{3}') THEN 'currency pattern' END,
      CASE WHEN email IS NULL OR NOT regexp_full_match(email, '[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}') THEN 'email format' END,
      CASE WHEN phone IS NOT NULL AND NOT regexp_full_match(phone, '\+[1-9][0-9]{6,14}') THEN 'phone format' END,
      CASE WHEN notes IS NOT NULL AND length(notes) > 2000 THEN 'notes maxLength' END,
      CASE WHEN shipping_country IS NULL OR NOT regexp_full_match(shipping_country, '[A-Z]{2}') THEN 'shipping_country pattern' END,
      CASE WHEN try_cast(created_at AS TIMESTAMP) IS NULL THEN 'created_at format' END,
      CASE WHEN try_cast(created_at AS TIMESTAMP) < TIMESTAMP '2000-01-01' THEN 'created_at formatMinimum' END
    ], lambda x: x IS NOT NULL) END
  ) AS _errors
FROM SOURCE;

COPY (
  SELECT * REPLACE (
      CASE WHEN card_number IS NULL THEN NULL ELSE repeat('*', length(card_number) - 4) || right(card_number, 4) END AS card_number,
      regexp_replace(notes, '([0-9][ -]?){9,15}([0-9]{4})', '************\2', 'g') AS notes,
      sha256('edp-bench-key' || email) AS email)
  FROM checked WHERE len(_errors) > 0
) TO 'OUT/quarantine.parquet' (FORMAT parquet, COMPRESSION snappy);

COPY (
  SELECT * EXCLUDE (_errors, filename, file_row_number) REPLACE (
      CASE WHEN card_number IS NULL THEN NULL ELSE repeat('*', length(card_number) - 4) || right(card_number, 4) END AS card_number,
      regexp_replace(notes, '([0-9][ -]?){9,15}([0-9]{4})', '************\2', 'g') AS notes,
      sha256('edp-bench-key' || email) AS email,
      try_cast(created_at AS TIMESTAMP) AS created_at,
      try_cast(updated_at AS TIMESTAMP) AS updated_at)
  FROM checked
  WHERE len(_errors) = 0
  QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY try_cast(updated_at AS TIMESTAMP) DESC NULLS LAST, filename DESC, file_row_number DESC) = 1
) TO 'OUT/curated.parquet' (FORMAT parquet, COMPRESSION snappy);

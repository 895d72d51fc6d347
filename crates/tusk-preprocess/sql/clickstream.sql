-- tusk: clickstream feature pipeline (DataFusion SQL). Input: table `events` in the REES46
-- "eCommerce behavior data" layout. Output: one row per training sample with a `split` column
-- ('train' | 'test') that tusk uses to route rows to OUTPUT/train and OUTPUT/test, and the
-- entity tables of step 7 (OUTPUT/entities/user_id, OUTPUT/entities/item_id).
-- Parameters substituted before running: ${negatives} (per positive), ${seed}, and
-- ${last_day} (the last day with events, as days since 1970-01-01; tusk computes it in the
-- same pass that counts event types, so no join is needed to tag the split).
-- Override with `tusk preprocess clickstream --sql FILE` (keep the final SELECT's `split`).

-- 1. Clean events. Unknown event types were counted and reported by tusk; here they drop out.
--    strength: purchase 3 > cart 2 > view 1 (remove_from_cart carries no positive signal).
CREATE VIEW ev AS
SELECT
  user_id,
  product_id,
  category_id,
  category_code,
  brand,
  price,
  event_type,
  CAST(floor(date_part('epoch', CAST(substr(event_time, 1, 19) AS TIMESTAMP)) / 86400) AS BIGINT) AS day,
  CASE event_type WHEN 'purchase' THEN 3 WHEN 'cart' THEN 2 WHEN 'view' THEN 1 ELSE 0 END AS strength
FROM events
WHERE event_type IN ('view', 'cart', 'remove_from_cart', 'purchase')
  AND user_id IS NOT NULL AND product_id IS NOT NULL;

-- 2. Time-based split: the last day is the test period, everything before it trains.
--    Materialised (an in-memory table): six views below read it, and re-parsing the logs for
--    each of them would cost more than holding the projected columns once.
CREATE TABLE ev_split AS
SELECT ev.*,
       CASE WHEN ev.day = ${last_day} THEN 'test' ELSE 'train' END AS split,
       CAST(${last_day} AS BIGINT) AS last_day
FROM ev;

-- 3. User features, from the training period only (nothing leaks from the test day).
--    The feature tables are small (one row per user / item) and materialised: the engine then
--    knows their sizes and broadcasts them into the joins with the millions of samples below,
--    instead of building hash tables over the samples.
CREATE TABLE user_features AS
SELECT
  c.user_id, c.u_events, c.u_views, c.u_carts, c.u_purchases, c.u_active_days,
  c.u_recency_days, c.u_avg_price, t.u_top_category
FROM (
  SELECT
    user_id,
    count(*) AS u_events,
    sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS u_views,
    sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS u_carts,
    sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS u_purchases,
    count(DISTINCT day) AS u_active_days,
    max(last_day) - max(day) AS u_recency_days,
    avg(price) AS u_avg_price
  FROM ev_split
  WHERE split = 'train'
  GROUP BY user_id
) c
-- the user's favourite category: the one with the most interaction strength (ties: lower id)
LEFT JOIN (
  SELECT user_id, category_id AS u_top_category
  FROM (
    SELECT user_id, category_id,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY s DESC, category_id) AS rn
    FROM (
      SELECT user_id, category_id, sum(strength) AS s
      FROM ev_split WHERE split = 'train'
      GROUP BY user_id, category_id
    ) per_category
  ) ranked
  WHERE rn = 1
) t ON t.user_id = c.user_id;

-- 4. Item features, from the training period only.
CREATE TABLE item_features AS
SELECT
  product_id,
  count(DISTINCT user_id) AS i_users,
  sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS i_views,
  sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS i_purchases,
  avg(price) AS i_price,
  max(category_id) AS i_category_id,
  max(coalesce(category_code, '')) AS i_category_code,
  max(coalesce(brand, '')) AS i_brand
FROM ev_split
WHERE split = 'train'
GROUP BY product_id;

-- 5. Every (split, user, item) the user touched, with its strongest interaction (one
--    aggregation serves both the positives and the sampler's exclusion list).
--    Implicit positives: the pairs with a positive strength, weighted by it.
CREATE TABLE interactions AS
SELECT split, user_id, product_id, max(strength) AS strength
FROM ev_split
GROUP BY split, user_id, product_id;

CREATE VIEW positives AS
SELECT split, user_id, product_id, strength
FROM interactions
WHERE strength > 0;

-- 6. Negatives: for each positive, ${negatives} items drawn by a deterministic hash of
--    (user, item, k, seed) over the training catalogue, minus anything the user touched in
--    that split (so a few draws are dropped rather than mislabelled).
CREATE TABLE catalogue AS
SELECT product_id, CAST(ROW_NUMBER() OVER (ORDER BY product_id) - 1 AS BIGINT) AS idx
FROM (SELECT DISTINCT product_id FROM ev_split WHERE split = 'train') items;

CREATE VIEW draws AS
SELECT p.split, p.user_id,
       ((p.user_id % 1000003) * 7919 + (p.product_id % 1000003) * 104729
        + ks.value * 15485863 + ${seed}) % n.n AS idx
-- the one-row and K-row sides come first: the engine buffers the left side of a cross join
-- and streams the right, so the positives stream through in whole batches.
FROM (SELECT count(*) AS n FROM catalogue) n
CROSS JOIN range(${negatives}) AS ks
CROSS JOIN positives p;

CREATE VIEW negatives AS
SELECT d.split, d.user_id, c.product_id
FROM draws d
JOIN catalogue c ON c.idx = d.idx
LEFT JOIN interactions seen
  ON seen.split = d.split AND seen.user_id = d.user_id AND seen.product_id = c.product_id
WHERE seen.user_id IS NULL;

-- 7. Entity tables: what a model version keeps to answer for a known user or item from its
--    id alone (`data.entities` in the training config). tusk writes every table or view
--    named entities_KEY to OUTPUT/entities/KEY, keyed by its column KEY. The columns are the
--    samples' own, computed exactly as below and from the training period only, so a request
--    that names a user and an item is scored as the test samples are; `seen` (the items of
--    the user's training positives) is what `:recommend` leaves out with exclude_seen.
CREATE VIEW entities_user_id AS
SELECT
  u.user_id, u.u_events, u.u_views, u.u_carts, u.u_purchases, u.u_active_days,
  u.u_recency_days, CAST(u.u_avg_price AS FLOAT) AS u_avg_price, u.u_top_category,
  s.seen
FROM user_features u
LEFT JOIN (
  SELECT user_id, array_agg(product_id ORDER BY product_id) AS seen
  FROM positives WHERE split = 'train'
  GROUP BY user_id
) s ON s.user_id = u.user_id;

-- the catalogue `:recommend` ranks: every item with training events
CREATE VIEW entities_item_id AS
SELECT
  product_id AS item_id, i_users, i_views, i_purchases, CAST(i_price AS FLOAT) AS i_price,
  i_category_id, i_category_code, i_brand
FROM item_features;

-- 8. Samples with features. Cold users/items (no training history) get NULL features,
--    which become absent features in the records.
SELECT
  s.split,
  s.user_id,
  s.product_id AS item_id,
  CAST(s.label AS FLOAT) AS label,
  CAST(s.weight AS FLOAT) AS weight,
  u.u_events, u.u_views, u.u_carts, u.u_purchases, u.u_active_days, u.u_recency_days,
  CAST(u.u_avg_price AS FLOAT) AS u_avg_price,
  u.u_top_category,
  i.i_users, i.i_views, i.i_purchases,
  CAST(i.i_price AS FLOAT) AS i_price,
  i.i_category_id, i.i_category_code, i.i_brand
FROM (
  SELECT split, user_id, product_id, 1 AS label, strength AS weight FROM positives
  UNION ALL
  SELECT split, user_id, product_id, 0 AS label, 1 AS weight FROM negatives
) s
LEFT JOIN user_features u ON u.user_id = s.user_id
LEFT JOIN item_features i ON i.product_id = s.product_id
-- a stable order (split, user, item, label) makes the output reproducible for an input and seed
ORDER BY 1, 2, 3, 4 DESC

-- The review context's reviews: one per customer and product. `verified` is recomputed when
-- the customer's order is delivered or a return of it is received. Keep in step with
-- ../sqlite/0107_reviews.sql.
CREATE TABLE reviews (
    id          TEXT PRIMARY KEY NOT NULL,
    product     TEXT NOT NULL,
    customer    TEXT NOT NULL,
    rating      BIGINT NOT NULL CONSTRAINT reviews_rating_bounded CHECK (rating >= 1 AND rating <= 5),
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    verified    BIGINT NOT NULL CONSTRAINT reviews_verified_flag CHECK (verified IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT reviews_one_per_customer UNIQUE (product, customer)
);
CREATE INDEX reviews_by_customer ON reviews (customer);

-- Shipping as weighed: the fulfillment context records, when a fulfilment is packed, what its
-- packages cost to ship beside what the checkout planned, and the order shows the adjustment.
-- Keep in step with ../sqlite/0108_order_shipping_adjustments.sql.
ALTER TABLE order_fulfillments ADD COLUMN shipping_planned_minor BIGINT;
ALTER TABLE order_fulfillments ADD COLUMN shipping_actual_minor BIGINT;

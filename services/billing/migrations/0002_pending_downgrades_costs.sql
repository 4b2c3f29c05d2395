DROP INDEX "billing_cost_records_ref_uq";--> statement-breakpoint
ALTER TABLE "billing_cost_records" ADD COLUMN "product" text;--> statement-breakpoint
ALTER TABLE "billing_cost_records" ADD COLUMN "task_id" text;--> statement-breakpoint
ALTER TABLE "billing_cost_records" ADD COLUMN "description" text;--> statement-breakpoint
ALTER TABLE "billing_subscriptions" ADD COLUMN "pending_requested_at" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "billing_usage_entities" ADD COLUMN "product" text;--> statement-breakpoint
CREATE UNIQUE INDEX "billing_cost_records_source_ref_uq" ON "billing_cost_records" USING btree ("org_id","source","reference_id");--> statement-breakpoint
ALTER TABLE "billing_cost_records" ADD CONSTRAINT "billing_cost_records_kind_ck" CHECK ("billing_cost_records"."kind" IN ('ai','infra'));
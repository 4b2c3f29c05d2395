ALTER TABLE "activity_log" ADD COLUMN "idempotency_key" text;--> statement-breakpoint
ALTER TABLE "notifications" ADD COLUMN "idempotency_key" text;--> statement-breakpoint
ALTER TABLE "webhooks" ADD COLUMN "idempotency_key" text;--> statement-breakpoint
CREATE UNIQUE INDEX "activity_log_idempotency_uq" ON "activity_log" USING btree ("org_id","idempotency_key") WHERE "activity_log"."idempotency_key" IS NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "notifications_idempotency_uq" ON "notifications" USING btree ("org_id","idempotency_key") WHERE "notifications"."idempotency_key" IS NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "webhooks_idempotency_uq" ON "webhooks" USING btree ("org_id","idempotency_key") WHERE "webhooks"."idempotency_key" IS NOT NULL;
ALTER TABLE "billing_subscriptions" ADD COLUMN "managed" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "billing_subscriptions" ADD COLUMN "managed_by" text;--> statement-breakpoint
ALTER TABLE "billing_subscriptions" ADD COLUMN "managed_note" text;--> statement-breakpoint
ALTER TABLE "billing_subscriptions" ADD COLUMN "custom_limits" jsonb;
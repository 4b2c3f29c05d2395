ALTER TABLE "backups" ADD COLUMN "s3_status" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "s3_key" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "s3_error" text;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "s3_at" timestamp with time zone;
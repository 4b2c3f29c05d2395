CREATE TABLE "backups" (
	"id" serial PRIMARY KEY NOT NULL,
	"filename" text NOT NULL,
	"database" text NOT NULL,
	"status" text NOT NULL,
	"trigger" text NOT NULL,
	"job_id" text,
	"size_bytes" bigint,
	"sha256" text,
	"error" text,
	"table_counts" jsonb,
	"verify_status" text,
	"verify_details" jsonb,
	"verified_at" timestamp with time zone,
	"offsite_status" text,
	"offsite_ref" text,
	"offsite_error" text,
	"offsite_at" timestamp with time zone,
	"restored_at" timestamp with time zone,
	"deleted_at" timestamp with time zone,
	"deleted_reason" text,
	"attempt" integer DEFAULT 1 NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "backups_filename_uq" ON "backups" USING btree ("filename");--> statement-breakpoint
CREATE INDEX "backups_created_idx" ON "backups" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX "backups_database_idx" ON "backups" USING btree ("database","status","completed_at");
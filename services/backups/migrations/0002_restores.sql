CREATE TABLE "backup_restores" (
	"id" serial PRIMARY KEY NOT NULL,
	"backup_id" integer NOT NULL,
	"filename" text NOT NULL,
	"database" text NOT NULL,
	"status" text NOT NULL,
	"error" text,
	"idempotency_key" text,
	"requested_by" jsonb NOT NULL,
	"pg_restore_at" timestamp with time zone,
	"xid" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "backup_restores" ADD CONSTRAINT "backup_restores_backup_id_backups_id_fk" FOREIGN KEY ("backup_id") REFERENCES "public"."backups"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "backup_restores_idempotency_uq" ON "backup_restores" USING btree ("idempotency_key");--> statement-breakpoint
CREATE UNIQUE INDEX "backup_restores_active_uq" ON "backup_restores" USING btree ("database") WHERE status IN ('queued', 'running');--> statement-breakpoint
CREATE INDEX "backup_restores_created_idx" ON "backup_restores" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX "backup_restores_backup_idx" ON "backup_restores" USING btree ("backup_id");
DROP INDEX "agent_logs_org_idx";--> statement-breakpoint
ALTER TABLE "agent_logs" ADD COLUMN "source" text DEFAULT 'db' NOT NULL;--> statement-breakpoint
CREATE INDEX "agent_logs_org_time_idx" ON "agent_logs" USING btree ("org_id","created_at","id");--> statement-breakpoint
CREATE INDEX "agent_logs_files_idx" ON "agent_logs" USING btree ("org_id","source","agent","created_at");--> statement-breakpoint
CREATE INDEX "agent_logs_created_idx" ON "agent_logs" USING btree ("created_at");--> statement-breakpoint
ALTER TABLE "agent_logs" ADD CONSTRAINT "agent_logs_source_ck" CHECK ("agent_logs"."source" IN ('file', 'db'));--> statement-breakpoint
-- The bootstrap's own line was the runtime's before lines had a source.
UPDATE "agent_logs" SET "source" = 'file' WHERE "meta" ? 'agent_id' AND "message" = 'agent ' || "agent" || ' bootstrapped';

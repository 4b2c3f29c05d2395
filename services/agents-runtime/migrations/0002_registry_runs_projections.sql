CREATE TABLE "org_budgets" (
	"org_id" text PRIMARY KEY NOT NULL,
	"token_balance" bigint NOT NULL,
	"balance_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "task_lineage" (
	"org_id" text NOT NULL,
	"task_id" integer NOT NULL,
	"parent_task_id" integer NOT NULL,
	"depth" integer NOT NULL,
	CONSTRAINT "task_lineage_org_id_task_id_pk" PRIMARY KEY("org_id","task_id")
);
--> statement-breakpoint
DROP INDEX "templates_org_slug_key";--> statement-breakpoint
ALTER TABLE "agent_runs" ADD COLUMN "job_id" text;--> statement-breakpoint
ALTER TABLE "agent_runs" ADD COLUMN "cancel_requested_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "bootstrapped_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "bootstrap_lease_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "daily_token_budget" integer;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "template_slug" text;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "last_cycle_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "last_cycle_result" text;--> statement-breakpoint
ALTER TABLE "assigned_tasks" ADD COLUMN "title" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "assigned_tasks" ADD COLUMN "event_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "discovery_engines" ADD COLUMN "provider" text DEFAULT 'offline' NOT NULL;--> statement-breakpoint
ALTER TABLE "files" ADD COLUMN "file_type" text;--> statement-breakpoint
ALTER TABLE "files" ADD COLUMN "category" text;--> statement-breakpoint
CREATE INDEX "agent_runs_open_idx" ON "agent_runs" USING btree ("status","created_at") WHERE "agent_runs"."status" IN ('queued', 'running');--> statement-breakpoint
CREATE INDEX "files_org_category_idx" ON "files" USING btree ("org_id","category");--> statement-breakpoint
CREATE UNIQUE INDEX "templates_org_slug_live_key" ON "templates" USING btree ("org_id","slug") WHERE "templates"."archived_at" IS NULL;--> statement-breakpoint
ALTER TABLE "agent_runs" ADD CONSTRAINT "agent_runs_status_ck" CHECK ("agent_runs"."status" IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));--> statement-breakpoint
ALTER TABLE "agents" ADD CONSTRAINT "agents_status_ck" CHECK ("agents"."status" IN ('active', 'idle', 'working', 'blocked', 'offline', 'paused', 'error'));--> statement-breakpoint
-- Agents created before bootstrap steps were resumable ran them in one go: they count as bootstrapped.
UPDATE "agents" SET "bootstrapped_at" = "created_at",
  "bootstrap" = COALESCE((SELECT jsonb_agg(jsonb_build_object('step', e->>'step', 'state', CASE WHEN (e->>'ok')::boolean THEN 'done' ELSE 'failed' END, 'detail', e->>'detail', 'at', NULL))
                          FROM jsonb_array_elements("bootstrap") e), '[]'::jsonb);--> statement-breakpoint
UPDATE "agent_runs" SET "job_id" = 'run-' || "id";

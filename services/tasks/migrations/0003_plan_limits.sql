CREATE TABLE "plan_limits" (
	"org_id" text PRIMARY KEY NOT NULL,
	"tier" text NOT NULL,
	"agents" integer,
	"seats" integer,
	"tasks_per_month" integer,
	"event_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "task_monthly_usage" (
	"org_id" text NOT NULL,
	"month" date NOT NULL,
	"created" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "task_monthly_usage_org_id_month_pk" PRIMARY KEY("org_id","month")
);
--> statement-breakpoint
-- The tasks already created count against their month (those deleted before this migration are not known).
INSERT INTO "task_monthly_usage" ("org_id", "month", "created")
SELECT "org_id", date_trunc('month', "created_at" AT TIME ZONE 'UTC')::date, count(*)::int FROM "tasks" GROUP BY 1, 2;

CREATE TABLE "plan_limits" (
	"org_id" text PRIMARY KEY NOT NULL,
	"tier" text NOT NULL,
	"agents" integer,
	"seats" integer,
	"tasks_per_month" integer,
	"event_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);

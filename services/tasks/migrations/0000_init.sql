CREATE TABLE "changelog" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"task_id" integer NOT NULL,
	"event_id" uuid NOT NULL,
	"title" text NOT NULL,
	"agent" text,
	"product_slug" text,
	"area" text NOT NULL,
	"summary" text NOT NULL,
	"completed_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "changelog_event_id_unique" UNIQUE("event_id")
);
--> statement-breakpoint
CREATE TABLE "products" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"name" text NOT NULL,
	"slug" text NOT NULL,
	"tagline" text,
	"description" text,
	"status" text DEFAULT 'building' NOT NULL,
	"domain" text,
	"brand_color" text,
	"accent_color" text,
	"logo_url" text,
	"created_by" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "queue_jobs" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "queue_jobs_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"org_id" text NOT NULL,
	"queue_name" text NOT NULL,
	"task_type" text NOT NULL,
	"payload" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"priority" integer DEFAULT 0 NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"max_attempts" integer DEFAULT 3 NOT NULL,
	"timeout_seconds" integer DEFAULT 300 NOT NULL,
	"idempotency_key" text,
	"worker_id" text,
	"lease_expires_at" timestamp with time zone,
	"available_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_error" text,
	"result" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "task_dependencies" (
	"org_id" text NOT NULL,
	"task_id" integer NOT NULL,
	"blocked_by_id" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "task_dependencies_task_id_blocked_by_id_pk" PRIMARY KEY("task_id","blocked_by_id")
);
--> statement-breakpoint
CREATE TABLE "tasks" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"title" text NOT NULL,
	"title_key" text NOT NULL,
	"description" text,
	"status" text DEFAULT 'todo' NOT NULL,
	"priority" text DEFAULT 'P2' NOT NULL,
	"type" text DEFAULT 'feature' NOT NULL,
	"assignee" text,
	"product_id" integer,
	"category" text,
	"tags" text,
	"estimated_minutes" integer,
	"due_date" date,
	"parent_task_id" integer,
	"derivation_rule_id" text,
	"resolution" text,
	"max_duration_seconds" integer,
	"created_by" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone,
	"search" "tsvector" GENERATED ALWAYS AS (to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(description, ''))) STORED
);
--> statement-breakpoint
ALTER TABLE "task_dependencies" ADD CONSTRAINT "task_dependencies_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "task_dependencies" ADD CONSTRAINT "task_dependencies_blocked_by_id_tasks_id_fk" FOREIGN KEY ("blocked_by_id") REFERENCES "public"."tasks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_product_id_products_id_fk" FOREIGN KEY ("product_id") REFERENCES "public"."products"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "changelog_org_idx" ON "changelog" USING btree ("org_id","completed_at","id");--> statement-breakpoint
CREATE UNIQUE INDEX "products_org_slug_key" ON "products" USING btree ("org_id","slug");--> statement-breakpoint
CREATE INDEX "queue_jobs_claim_idx" ON "queue_jobs" USING btree ("org_id","queue_name","status","priority","id");--> statement-breakpoint
CREATE UNIQUE INDEX "queue_jobs_idempotency_key" ON "queue_jobs" USING btree ("org_id","idempotency_key") WHERE "queue_jobs"."idempotency_key" IS NOT NULL;--> statement-breakpoint
CREATE INDEX "task_dependencies_blocker_idx" ON "task_dependencies" USING btree ("blocked_by_id");--> statement-breakpoint
CREATE INDEX "tasks_org_status_idx" ON "tasks" USING btree ("org_id","status","priority","id");--> statement-breakpoint
CREATE INDEX "tasks_org_assignee_idx" ON "tasks" USING btree ("org_id","assignee");--> statement-breakpoint
CREATE INDEX "tasks_org_product_idx" ON "tasks" USING btree ("org_id","product_id");--> statement-breakpoint
CREATE INDEX "tasks_parent_idx" ON "tasks" USING btree ("parent_task_id");--> statement-breakpoint
CREATE INDEX "tasks_search_idx" ON "tasks" USING gin ("search");--> statement-breakpoint
CREATE UNIQUE INDEX "tasks_open_title_key" ON "tasks" USING btree ("org_id",coalesce("product_id", 0),"title_key") WHERE "tasks"."status" NOT IN ('done', 'cancelled');--> statement-breakpoint
CREATE UNIQUE INDEX "tasks_derivation_key" ON "tasks" USING btree ("parent_task_id","derivation_rule_id") WHERE "tasks"."derivation_rule_id" IS NOT NULL;
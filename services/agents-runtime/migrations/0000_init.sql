CREATE TABLE "agent_messages" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "agent_messages_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"org_id" text NOT NULL,
	"agent_id" integer NOT NULL,
	"conversation_id" text NOT NULL,
	"role" text NOT NULL,
	"content" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "agent_runs" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"agent_id" integer NOT NULL,
	"task_id" integer,
	"input" text NOT NULL,
	"status" text DEFAULT 'queued' NOT NULL,
	"output" text,
	"error" text,
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"input_tokens" integer DEFAULT 0 NOT NULL,
	"output_tokens" integer DEFAULT 0 NOT NULL,
	"cost_usd" double precision DEFAULT 0 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"user_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "agents" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"name" text NOT NULL,
	"display_name" text,
	"role" text DEFAULT 'engineer' NOT NULL,
	"emoji" text,
	"color" text,
	"model" text DEFAULT 'offline-1' NOT NULL,
	"provider" text DEFAULT 'offline' NOT NULL,
	"system_prompt" text,
	"interval_sec" integer DEFAULT 3600 NOT NULL,
	"status" text DEFAULT 'idle' NOT NULL,
	"workspace_path" text,
	"current_task" text,
	"derivation_rules" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"bootstrap" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"owner_user_id" text,
	"last_heartbeat" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "assigned_tasks" (
	"org_id" text NOT NULL,
	"task_id" integer NOT NULL,
	"assignee" text NOT NULL,
	"status" text NOT NULL,
	"queued_since" timestamp with time zone NOT NULL,
	"completed_at" timestamp with time zone,
	CONSTRAINT "assigned_tasks_org_id_task_id_pk" PRIMARY KEY("org_id","task_id")
);
--> statement-breakpoint
CREATE TABLE "automations" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"name" text NOT NULL,
	"agent_name" text NOT NULL,
	"type" text NOT NULL,
	"path" text NOT NULL,
	"label" text,
	"status" text DEFAULT 'active' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "derivations" (
	"org_id" text NOT NULL,
	"task_id" integer NOT NULL,
	"rule_id" text NOT NULL,
	"agent_name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "derivations_org_id_task_id_rule_id_pk" PRIMARY KEY("org_id","task_id","rule_id")
);
--> statement-breakpoint
CREATE TABLE "files" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"path" text NOT NULL,
	"name" text NOT NULL,
	"content" text NOT NULL,
	"mime_type" text,
	"agent" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "agent_logs" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "agent_logs_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"org_id" text NOT NULL,
	"agent" text NOT NULL,
	"level" text DEFAULT 'info' NOT NULL,
	"message" text NOT NULL,
	"meta" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rules" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"title" text NOT NULL,
	"body" text NOT NULL,
	"scope" text DEFAULT 'global' NOT NULL,
	"agent" text,
	"category" text,
	"permanent" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "templates" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"name" text NOT NULL,
	"slug" text NOT NULL,
	"description" text,
	"icon" text,
	"category" text,
	"model" text,
	"interval_sec" integer,
	"identity" text,
	"tools" text[] DEFAULT '{}'::text[] NOT NULL,
	"capabilities" text[] DEFAULT '{}'::text[] NOT NULL,
	"config" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"is_featured" boolean DEFAULT false NOT NULL,
	"sort_order" integer DEFAULT 0 NOT NULL,
	"archived_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "agent_messages" ADD CONSTRAINT "agent_messages_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "agent_runs" ADD CONSTRAINT "agent_runs_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "agent_messages_conv_idx" ON "agent_messages" USING btree ("agent_id","conversation_id","id");--> statement-breakpoint
CREATE INDEX "agent_runs_org_idx" ON "agent_runs" USING btree ("org_id","id");--> statement-breakpoint
CREATE INDEX "agent_runs_agent_idx" ON "agent_runs" USING btree ("agent_id","id");--> statement-breakpoint
CREATE UNIQUE INDEX "agents_org_name_key" ON "agents" USING btree ("org_id","name");--> statement-breakpoint
CREATE INDEX "agents_org_status_idx" ON "agents" USING btree ("org_id","status");--> statement-breakpoint
CREATE INDEX "assigned_tasks_assignee_idx" ON "assigned_tasks" USING btree ("org_id","assignee","status");--> statement-breakpoint
CREATE INDEX "automations_org_idx" ON "automations" USING btree ("org_id");--> statement-breakpoint
CREATE UNIQUE INDEX "files_org_path_key" ON "files" USING btree ("org_id","path");--> statement-breakpoint
CREATE INDEX "agent_logs_org_idx" ON "agent_logs" USING btree ("org_id","id");--> statement-breakpoint
CREATE INDEX "rules_org_idx" ON "rules" USING btree ("org_id","scope");--> statement-breakpoint
CREATE UNIQUE INDEX "templates_org_slug_key" ON "templates" USING btree ("org_id","slug");
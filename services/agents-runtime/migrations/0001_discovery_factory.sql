CREATE TABLE "discovery_engines" (
	"id" serial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"slug" text NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"layer" text NOT NULL,
	"schedule_interval_ms" integer DEFAULT 3600000 NOT NULL,
	"model" text DEFAULT 'offline-1' NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"last_run_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "discovery_runs" (
	"id" serial PRIMARY KEY NOT NULL,
	"engine_id" integer NOT NULL,
	"trigger" text NOT NULL,
	"status" text NOT NULL,
	"findings" integer DEFAULT 0 NOT NULL,
	"tokens" integer DEFAULT 0 NOT NULL,
	"cost_usd" double precision DEFAULT 0 NOT NULL,
	"duration_ms" integer DEFAULT 0 NOT NULL,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "factory_config" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"worker_count" integer DEFAULT 2 NOT NULL,
	"concurrency" integer DEFAULT 2 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "discovery_runs" ADD CONSTRAINT "discovery_runs_engine_id_discovery_engines_id_fk" FOREIGN KEY ("engine_id") REFERENCES "public"."discovery_engines"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "discovery_engines_org_slug_key" ON "discovery_engines" USING btree ("org_id","slug");--> statement-breakpoint
CREATE INDEX "discovery_runs_engine_idx" ON "discovery_runs" USING btree ("engine_id","id");
ALTER TABLE "agent_runs" ADD COLUMN "usage_estimated" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "agent_runs" ADD COLUMN "retry_of" integer;--> statement-breakpoint
ALTER TABLE "agent_runs" ADD CONSTRAINT "agent_runs_retry_of_agent_runs_id_fk" FOREIGN KEY ("retry_of") REFERENCES "public"."agent_runs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "agent_runs_retry_of_key" ON "agent_runs" USING btree ("retry_of") WHERE "agent_runs"."retry_of" IS NOT NULL;
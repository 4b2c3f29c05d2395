CREATE INDEX "agent_runs_finished_idx" ON "agent_runs" USING btree ("finished_at");--> statement-breakpoint
CREATE INDEX "discovery_runs_created_idx" ON "discovery_runs" USING btree ("created_at");
CREATE INDEX "api_key_usage_at_idx" ON "api_key_usage" USING btree ("at");--> statement-breakpoint
CREATE INDEX "login_failures_window_idx" ON "login_failures" USING btree ("window_start");
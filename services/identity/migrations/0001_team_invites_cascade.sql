-- Invitations to teams that no longer exist cannot be accepted; drop them before the constraint.
DELETE FROM "invites" WHERE "team_id" IS NOT NULL AND "team_id" NOT IN (SELECT "id" FROM "teams");--> statement-breakpoint
ALTER TABLE "invites" ADD CONSTRAINT "invites_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;
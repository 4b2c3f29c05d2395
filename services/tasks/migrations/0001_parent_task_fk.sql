-- Children of tasks deleted before this constraint existed lose their dangling parent.
UPDATE "tasks" c SET "parent_task_id" = NULL
 WHERE c."parent_task_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "tasks" p WHERE p."id" = c."parent_task_id");--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_parent_task_id_tasks_id_fk" FOREIGN KEY ("parent_task_id") REFERENCES "public"."tasks"("id") ON DELETE set null ON UPDATE no action;

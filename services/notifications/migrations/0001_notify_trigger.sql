-- New notifications wake the SSE streams of every replica at commit.
CREATE OR REPLACE FUNCTION aos_notification_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('aos_notifications', json_build_object('id', NEW.id, 'org_id', NEW.org_id, 'user_id', NEW.user_id)::text);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER aos_notification_notify AFTER INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION aos_notification_notify();

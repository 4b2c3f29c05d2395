-- Wake the outbox relay as soon as an event commits (NOTIFY is delivered at commit).
CREATE OR REPLACE FUNCTION aos_outbox_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('aos_outbox', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER aos_outbox_notify AFTER INSERT ON aos_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION aos_outbox_notify();

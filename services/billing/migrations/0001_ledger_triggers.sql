-- The balance is derived from the journal: every entry moves its account in the same statement,
-- and the account's CHECK (balance >= 0) makes an overdraw fail atomically (SQLSTATE 23514).
CREATE OR REPLACE FUNCTION billing_ledger_apply() RETURNS trigger AS $$
BEGIN
  -- UPDATE first: an INSERT .. ON CONFLICT would check the CHECK on the proposed row (the bare amount).
  UPDATE billing_ledger_accounts SET balance = balance + NEW.amount, updated_at = now()
  WHERE org_id = NEW.org_id AND ledger = NEW.ledger
  RETURNING balance INTO NEW.balance_after;
  IF NOT FOUND THEN
    INSERT INTO billing_ledger_accounts (org_id, ledger, balance, updated_at)
    VALUES (NEW.org_id, NEW.ledger, NEW.amount, now())
    RETURNING balance INTO NEW.balance_after;
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER billing_ledger_entries_apply BEFORE INSERT ON billing_ledger_entries
  FOR EACH ROW EXECUTE FUNCTION billing_ledger_apply();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'billing_ledger_entries is append-only' USING ERRCODE = '42501';
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER billing_ledger_entries_no_update BEFORE UPDATE OR DELETE ON billing_ledger_entries
  FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();

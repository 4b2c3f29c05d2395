-- The balance is derived from the journal: every entry moves its account in the same statement,
-- and the account's CHECK (balance >= 0) makes an overdraw fail atomically (SQLSTATE 23514).
CREATE OR REPLACE FUNCTION billing_ledger_apply() RETURNS trigger AS $$
BEGIN
  INSERT INTO billing_ledger_accounts (org_id, ledger, balance, updated_at)
  VALUES (NEW.org_id, NEW.ledger, NEW.amount, now())
  ON CONFLICT (org_id, ledger) DO UPDATE
    SET balance = billing_ledger_accounts.balance + EXCLUDED.balance, updated_at = now()
  RETURNING balance INTO NEW.balance_after;
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

CREATE TABLE "billing_auto_topup_configs" (
	"org_id" text NOT NULL,
	"ledger" text NOT NULL,
	"tenant_id" text,
	"enabled" boolean DEFAULT true NOT NULL,
	"threshold" bigint NOT NULL,
	"package_slug" text NOT NULL,
	"max_monthly_topups" integer DEFAULT 3 NOT NULL,
	"stripe_payment_method_id" text,
	"armed" boolean DEFAULT true NOT NULL,
	"crossings" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_auto_topup_configs_org_id_ledger_pk" PRIMARY KEY("org_id","ledger")
);
--> statement-breakpoint
CREATE TABLE "billing_auto_topup_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"ledger" text NOT NULL,
	"crossing_id" text NOT NULL,
	"month" text NOT NULL,
	"status" text NOT NULL,
	"package_slug" text NOT NULL,
	"amount" bigint NOT NULL,
	"price_cents" integer NOT NULL,
	"payment_intent_id" text,
	"reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_auto_topup_runs_crossing_id_unique" UNIQUE("crossing_id")
);
--> statement-breakpoint
CREATE TABLE "billing_cost_records" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"kind" text NOT NULL,
	"source" text NOT NULL,
	"reference_id" text NOT NULL,
	"amount_usd" numeric(14, 6) NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"model" text,
	"occurred_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "billing_customers" (
	"org_id" text PRIMARY KEY NOT NULL,
	"tenant_id" text,
	"stripe_customer_id" text NOT NULL,
	"default_payment_method_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_customers_stripe_customer_id_unique" UNIQUE("stripe_customer_id")
);
--> statement-breakpoint
CREATE TABLE "billing_ledger_accounts" (
	"org_id" text NOT NULL,
	"ledger" text NOT NULL,
	"balance" bigint DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_ledger_accounts_org_id_ledger_pk" PRIMARY KEY("org_id","ledger"),
	CONSTRAINT "billing_ledger_accounts_balance_non_negative" CHECK ("billing_ledger_accounts"."balance" >= 0)
);
--> statement-breakpoint
CREATE TABLE "billing_ledger_entries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"ledger" text NOT NULL,
	"type" text NOT NULL,
	"amount" bigint NOT NULL,
	"balance_after" bigint DEFAULT 0 NOT NULL,
	"action" text,
	"reference_id" text,
	"user_id" text,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_ledger_entries_type_ck" CHECK ("billing_ledger_entries"."type" IN ('consume','purchase','bonus','signup_bonus','admin_grant','refund')),
	CONSTRAINT "billing_ledger_entries_ledger_ck" CHECK ("billing_ledger_entries"."ledger" IN ('tokens','credits')),
	CONSTRAINT "billing_ledger_entries_sign_ck" CHECK (("billing_ledger_entries"."type" = 'consume') = ("billing_ledger_entries"."amount" < 0) AND "billing_ledger_entries"."amount" <> 0)
);
--> statement-breakpoint
CREATE TABLE "billing_stripe_events" (
	"id" text PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"created" bigint NOT NULL,
	"org_id" text,
	"outcome" text NOT NULL,
	"processed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "billing_subscriptions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"tenant_id" text,
	"tier" text NOT NULL,
	"status" text NOT NULL,
	"stripe_subscription_id" text,
	"stripe_customer_id" text,
	"current_period_start" timestamp with time zone,
	"current_period_end" timestamp with time zone,
	"cancel_at_period_end" boolean DEFAULT false NOT NULL,
	"pending_tier" text,
	"pending_at" timestamp with time zone,
	"stripe_state_at" bigint DEFAULT 0 NOT NULL,
	"mrr_cents" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_subscriptions_org_id_unique" UNIQUE("org_id"),
	CONSTRAINT "billing_subscriptions_stripe_subscription_id_unique" UNIQUE("stripe_subscription_id")
);
--> statement-breakpoint
CREATE TABLE "billing_usage_entities" (
	"org_id" text NOT NULL,
	"kind" text NOT NULL,
	"entity_id" text NOT NULL,
	"present" boolean NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"event_at" timestamp with time zone NOT NULL,
	CONSTRAINT "billing_usage_entities_org_id_kind_entity_id_pk" PRIMARY KEY("org_id","kind","entity_id")
);
--> statement-breakpoint
CREATE INDEX "billing_auto_topup_runs_org_idx" ON "billing_auto_topup_runs" USING btree ("org_id","ledger","month");--> statement-breakpoint
CREATE UNIQUE INDEX "billing_cost_records_ref_uq" ON "billing_cost_records" USING btree ("org_id","kind","reference_id");--> statement-breakpoint
CREATE INDEX "billing_cost_records_org_idx" ON "billing_cost_records" USING btree ("org_id","kind","occurred_at");--> statement-breakpoint
CREATE INDEX "billing_ledger_entries_org_idx" ON "billing_ledger_entries" USING btree ("org_id","ledger","id");--> statement-breakpoint
CREATE INDEX "billing_ledger_entries_org_type_idx" ON "billing_ledger_entries" USING btree ("org_id","ledger","type","id");--> statement-breakpoint
CREATE UNIQUE INDEX "billing_ledger_entries_reference_uq" ON "billing_ledger_entries" USING btree ("org_id","ledger","type","reference_id") WHERE "billing_ledger_entries"."reference_id" IS NOT NULL;--> statement-breakpoint
CREATE INDEX "billing_usage_entities_created_idx" ON "billing_usage_entities" USING btree ("org_id","kind","created_at");
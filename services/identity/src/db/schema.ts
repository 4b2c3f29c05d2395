import { sql } from 'drizzle-orm';
import { bigint, boolean, index, integer, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';

const created = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();

export const tenants = pgTable('tenants', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  createdAt: created(),
});

export const users = pgTable('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  tenantId: uuid('tenant_id').notNull().references(() => tenants.id),
  username: text('username').notNull(),
  email: text('email').notNull(),
  passwordHash: text('password_hash').notNull(),
  platformRoles: text('platform_roles').array().notNull().default(sql`'{}'::text[]`),
  avatarUrl: text('avatar_url'),
  /** Access tokens issued before this instant are void (logout everywhere, password reset). */
  tokensNotBefore: timestamp('tokens_not_before', { withTimezone: true }),
  createdAt: created(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('users_email_key').on(sql`lower(${t.email})`), uniqueIndex('users_username_key').on(sql`lower(${t.username})`)]);

export const organizations = pgTable('organizations', {
  id: uuid('id').primaryKey().defaultRandom(),
  tenantId: uuid('tenant_id').notNull().references(() => tenants.id),
  name: text('name').notNull(),
  slug: text('slug').notNull(),
  avatarUrl: text('avatar_url'),
  personal: boolean('personal').notNull().default(false),
  createdBy: uuid('created_by'),
  createdAt: created(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
}, (t) => [uniqueIndex('organizations_slug_key').on(t.slug).where(sql`${t.deletedAt} IS NULL`)]);

export const memberships = pgTable('memberships', {
  orgId: uuid('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  role: text('role').notNull(),
  createdAt: created(),
}, (t) => [primaryKey({ columns: [t.orgId, t.userId] }), index('memberships_user_idx').on(t.userId)]);

export const refreshTokens = pgTable('refresh_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  familyId: uuid('family_id').notNull(),
  tokenHash: text('token_hash').notNull().unique(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  usedAt: timestamp('used_at', { withTimezone: true }),
  revokedAt: timestamp('revoked_at', { withTimezone: true }),
  createdAt: created(),
}, (t) => [index('refresh_tokens_family_idx').on(t.familyId), index('refresh_tokens_user_idx').on(t.userId)]);

export const passwordResets = pgTable('password_resets', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  tokenHash: text('token_hash').notNull().unique(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  usedAt: timestamp('used_at', { withTimezone: true }),
  createdAt: created(),
});

/** Failed logins per key (`email:<addr>` or `ip:<addr>`) in fixed windows. */
export const loginFailures = pgTable('login_failures', {
  key: text('key').notNull(),
  windowStart: timestamp('window_start', { withTimezone: true }).notNull(),
  count: integer('count').notNull().default(0),
}, (t) => [primaryKey({ columns: [t.key, t.windowStart] }), index('login_failures_window_idx').on(t.windowStart)]);

/**
 * Client addresses (keyed hashes) a user logged in from: they skip the account-wide failure ceiling,
 * so failures from elsewhere cannot lock the user out where they usually sign in.
 */
export const loginKnownAddresses = pgTable('login_known_addresses', {
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  addressHash: text('address_hash').notNull(),
  lastSuccessAt: timestamp('last_success_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.userId, t.addressHash] }), index('login_known_addresses_seen_idx').on(t.lastSuccessAt)]);

export const invites = pgTable('invites', {
  id: uuid('id').primaryKey().defaultRandom(),
  orgId: uuid('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  /** A team invitation disappears with its team. */
  teamId: uuid('team_id').references(() => teams.id, { onDelete: 'cascade' }),
  email: text('email').notNull(),
  role: text('role').notNull(),
  tokenHash: text('token_hash').notNull().unique(),
  invitedBy: uuid('invited_by'),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  acceptedAt: timestamp('accepted_at', { withTimezone: true }),
  acceptedBy: uuid('accepted_by'),
  createdAt: created(),
}, (t) => [index('invites_org_idx').on(t.orgId)]);

export const teams = pgTable('teams', {
  id: uuid('id').primaryKey().defaultRandom(),
  orgId: uuid('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  name: text('name').notNull(),
  description: text('description'),
  createdAt: created(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('teams_org_name_key').on(t.orgId, sql`lower(${t.name})`)]);

export const teamMembers = pgTable('team_members', {
  teamId: uuid('team_id').notNull().references(() => teams.id, { onDelete: 'cascade' }),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  role: text('role').notNull().default('member'),
  createdAt: created(),
}, (t) => [primaryKey({ columns: [t.teamId, t.userId] })]);

export const apiKeys = pgTable('api_keys', {
  id: uuid('id').primaryKey().defaultRandom(),
  orgId: uuid('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  tenantId: uuid('tenant_id').notNull(),
  createdBy: uuid('created_by'),
  name: text('name').notNull(),
  description: text('description'),
  scopes: text('scopes').array().notNull(),
  /** Shown in listings: `osk_live_ab…yz`. */
  masked: text('masked').notNull(),
  keyHash: text('key_hash').notNull().unique(),
  /** After a rotation the old secret stays valid until `previous_valid_until`. */
  previousKeyHash: text('previous_key_hash').unique(),
  previousMasked: text('previous_masked'),
  previousValidUntil: timestamp('previous_valid_until', { withTimezone: true }),
  expiresAt: timestamp('expires_at', { withTimezone: true }),
  isActive: boolean('is_active').notNull().default(true),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
  revokedAt: timestamp('revoked_at', { withTimezone: true }),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
  createdAt: created(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('api_keys_org_idx').on(t.orgId)]);

export const apiKeyUsage = pgTable('api_key_usage', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  apiKeyId: uuid('api_key_id').notNull(),
  method: text('method').notNull(),
  path: text('path').notNull(),
  status: integer('status').notNull(),
  latencyMs: integer('latency_ms').notNull(),
  at: timestamp('at', { withTimezone: true }).notNull(),
}, (t) => [index('api_key_usage_key_idx').on(t.apiKeyId, t.at), index('api_key_usage_at_idx').on(t.at)]);

export const credentials = pgTable('credentials', {
  key: text('key').primaryKey(),
  description: text('description'),
  /** AES-256-GCM: base64 nonce, ciphertext and tag; `key_id` names the encryption key for rotation. */
  nonce: text('nonce').notNull(),
  ciphertext: text('ciphertext').notNull(),
  tag: text('tag').notNull(),
  keyId: text('key_id').notNull(),
  updatedBy: uuid('updated_by'),
  createdAt: created(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** The plan limits billing announced per organization (billing.subscription.changed), enforced here. */
export { planLimits } from '@aos/db';

import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

const Org = { orgId: Type.String(), tenantId: Type.String() };

export const identityEvents = {
  /** A user signed up; carries the tenant and personal organization created with it. */
  'identity.user.registered': defineEvent('identity.user.registered', 1, Type.Object({
    userId: Type.String(), email: Type.String(), username: Type.String(),
    tenantId: Type.String(), personalOrgId: Type.String(), platformRoles: Type.Array(Type.String()),
  })),
  'identity.user.updated': defineEvent('identity.user.updated', 1, Type.Object({
    userId: Type.String(), changes: Type.Array(Type.String()),
  })),
  /** Account erased: services delete or anonymise what they hold for this user. */
  'identity.user.deleted': defineEvent('identity.user.deleted', 1, Type.Object({
    userId: Type.String(), tenantId: Nullable(Type.String()),
  })),
  /** Carries the one-time reset link that notifications e-mails; the token is single use and short lived. */
  'identity.password_reset.requested': defineEvent('identity.password_reset.requested', 1, Type.Object({
    userId: Type.String(), email: Type.String(), resetUrl: Type.String(), expiresAt: Type.String(),
  })),
  'identity.org.created': defineEvent('identity.org.created', 1, Type.Object({ ...Org, name: Type.String(), slug: Type.String() })),
  'identity.org.updated': defineEvent('identity.org.updated', 1, Type.Object({ ...Org, changes: Type.Array(Type.String()) })),
  'identity.org.deleted': defineEvent('identity.org.deleted', 1, Type.Object(Org)),
  'identity.member.added': defineEvent('identity.member.added', 1, Type.Object({ ...Org, userId: Type.String(), role: Type.String() })),
  'identity.member.role_changed': defineEvent('identity.member.role_changed', 1, Type.Object({ ...Org, userId: Type.String(), role: Type.String() })),
  'identity.member.removed': defineEvent('identity.member.removed', 1, Type.Object({ ...Org, userId: Type.String() })),
  /** An invitation to an organization or team; notifications e-mails `acceptUrl`. */
  'identity.invite.created': defineEvent('identity.invite.created', 1, Type.Object({
    ...Org, inviteId: Type.String(), email: Type.String(), role: Type.String(), teamId: Nullable(Type.String()),
    invitedBy: Nullable(Type.String()), inviteeUserId: Nullable(Type.String()), acceptUrl: Type.String(), expiresAt: Type.String(),
  })),
  'identity.invite.accepted': defineEvent('identity.invite.accepted', 1, Type.Object({ ...Org, inviteId: Type.String(), userId: Type.String() })),
  'identity.team.created': defineEvent('identity.team.created', 1, Type.Object({ ...Org, teamId: Type.String(), name: Type.String() })),
  'identity.team.updated': defineEvent('identity.team.updated', 1, Type.Object({ ...Org, teamId: Type.String() })),
  'identity.team.deleted': defineEvent('identity.team.deleted', 1, Type.Object({ ...Org, teamId: Type.String() })),
  'identity.team_member.added': defineEvent('identity.team_member.added', 1, Type.Object({ ...Org, teamId: Type.String(), userId: Type.String() })),
  'identity.team_member.removed': defineEvent('identity.team_member.removed', 1, Type.Object({ ...Org, teamId: Type.String(), userId: Type.String() })),
  'identity.api_key.created': defineEvent('identity.api_key.created', 1, Type.Object({ ...Org, apiKeyId: Type.String() })),
  /** Name, scopes, expiry or active flag changed: the gateway drops the key from its cache. */
  'identity.api_key.updated': defineEvent('identity.api_key.updated', 1, Type.Object({ ...Org, apiKeyId: Type.String() })),
  /** Revoked, deleted, or its organization deleted (`reason`): the gateway evicts the key at once (must fail within 1 s). */
  'identity.api_key.revoked': defineEvent('identity.api_key.revoked', 1, Type.Object({ ...Org, apiKeyId: Type.String(), reason: Type.String() })),
  /** Rotated (old secret valid until `graceUntil`) or rolled (`graceUntil` null: old secret dead now). */
  'identity.api_key.rotated': defineEvent('identity.api_key.rotated', 1, Type.Object({ ...Org, apiKeyId: Type.String(), graceUntil: Nullable(Type.String()) })),
  /** One access token revoked (logout): the gateway denies `jti` until `expiresAt`. */
  'identity.session.revoked': defineEvent('identity.session.revoked', 1, Type.Object({ userId: Type.String(), jti: Type.String(), expiresAt: Type.String() })),
  /** Every token of the user issued before `notBefore` is void (logout all devices, password reset, deletion). */
  'identity.user.tokens_revoked': defineEvent('identity.user.tokens_revoked', 1, Type.Object({ userId: Type.String(), notBefore: Type.String() })),
  'identity.credential.changed': defineEvent('identity.credential.changed', 1, Type.Object({ key: Type.String(), action: Type.Union([Type.Literal('saved'), Type.Literal('deleted')]) })),
};

import { Type, type Static } from '@sinclair/typebox';
import { OrgRoles } from './scopes.js';

/**
 * The authenticated caller, as the gateway forwards it to services inside the signed
 * internal token. `anonymous` is used for public routes.
 */
export const PrincipalSchema = Type.Object({
  kind: Type.Union([
    Type.Literal('user'), Type.Literal('api_key'), Type.Literal('service'), Type.Literal('anonymous'),
  ]),
  /** User id (uuid) for `user`; the key's creator for `api_key` when known. */
  userId: Type.Union([Type.String(), Type.Null()]),
  apiKeyId: Type.Union([Type.String(), Type.Null()]),
  tenantId: Type.Union([Type.String(), Type.Null()]),
  orgId: Type.Union([Type.String(), Type.Null()]),
  orgRole: Type.Union([Type.Union(OrgRoles.map((r) => Type.Literal(r))), Type.Null()]),
  /** Platform-wide roles, e.g. `admin`. */
  platformRoles: Type.Array(Type.String()),
  scopes: Type.Array(Type.String()),
  /** Calling service name for `service` principals. */
  service: Type.Optional(Type.String()),
  /** Tier of the caller's subscription, used by the gateway's rate limits. */
  tier: Type.Optional(Type.String()),
});

export type Principal = Static<typeof PrincipalSchema>;

export const ANONYMOUS: Principal = {
  kind: 'anonymous', userId: null, apiKeyId: null, tenantId: null, orgId: null,
  orgRole: null, platformRoles: [], scopes: [],
};

/** Claims of the gateway → service token. */
export const INTERNAL_TOKEN_ISSUER = 'aos-gateway';
export const INTERNAL_TOKEN_AUDIENCE = 'aos-internal';
export const INTERNAL_TOKEN_TYPE = 'aos-internal+jwt';
export const INTERNAL_TOKEN_HEADER = 'x-aos-internal-token';

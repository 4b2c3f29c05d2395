/** API-key scopes. Each route declares the one it needs; `*` grants all. */
export const Scopes = [
  'agents:read', 'agents:write', 'agents:execute',
  'tasks:read', 'tasks:write',
  'products:read', 'products:write',
  'billing:read', 'billing:write',
  'notifications:read', 'notifications:write',
  'backups:read', 'backups:write',
  'org:read', 'org:write',
  'credentials:read', 'credentials:write',
  '*',
] as const;

export type Scope = (typeof Scopes)[number];

export function hasScope(granted: readonly string[], needed: Scope): boolean {
  return granted.includes('*') || granted.includes(needed);
}

/** Organization roles, strongest first. */
export const OrgRoles = ['owner', 'admin', 'member', 'viewer'] as const;
export type OrgRole = (typeof OrgRoles)[number];

/** True when `role` is at least as strong as `atLeast`. */
export function roleAtLeast(role: OrgRole | null | undefined, atLeast: OrgRole): boolean {
  if (!role) return false;
  return OrgRoles.indexOf(role) <= OrgRoles.indexOf(atLeast);
}

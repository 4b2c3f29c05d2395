import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { badRequest } from '@aos/core';

/** Addresses a webhook may never reach unless explicitly allowed (RFC 1918, loopback, link-local, CGNAT, ULA, multicast…). */
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['2001:db8::', 32], ['64:ff9b::', 96]] as const) {
  blocked.addSubnet(net, prefix, 'ipv6');
}

export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family === 6) return blocked.check(address, 'ipv6');
  return true;
}

export interface TargetPolicy {
  allowPrivate: boolean;
  allowedHosts: string[];
}

/**
 * Refuses URLs that are not http(s) or whose host resolves to a private address. Returns the
 * resolved addresses (checked at registration and again before every delivery, so DNS
 * rebinding after registration does not help).
 */
export async function assertDeliverable(raw: string, policy: TargetPolicy): Promise<URL> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw badRequest('url is not a valid URL', [{ field: 'url' }]);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw badRequest('url must be http(s)', [{ field: 'url' }]);
  if (url.username || url.password) throw badRequest('url must not contain credentials', [{ field: 'url' }]);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (policy.allowPrivate || policy.allowedHosts.includes(host)) return url;
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
  } catch {
    throw badRequest(`url host ${host} does not resolve`, [{ field: 'url' }]);
  }
  if (addresses.length === 0 || addresses.some(isPrivateAddress)) {
    throw badRequest('url resolves to a private, loopback or link-local address', [{ field: 'url', host }]);
  }
  return url;
}

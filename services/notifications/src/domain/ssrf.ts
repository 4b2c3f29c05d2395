import { lookup as dnsLookup } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

/** Networks a webhook may not reach unless allowed by configuration. */
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['2001:db8::', 32], ['100::', 64],
] as const) blocked.addSubnet(net, prefix, 'ipv6');

export interface TargetPolicy {
  allowPrivate: boolean;
  allowedHosts: string[];
}

export class BlockedTargetError extends Error {}

/** True for addresses on private, loopback, link-local, CGNAT, multicast or reserved networks (IPv4-mapped included). */
export function isBlockedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family === 6) {
    const lower = address.toLowerCase();
    const mapped = /^(?:0*:)*:?(?:0*:)?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower) ?? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    if (mapped) return blocked.check(mapped[1]!, 'ipv4');
    const hexMapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
    if (hexMapped) {
      const hi = parseInt(hexMapped[1]!, 16);
      const lo = parseInt(hexMapped[2]!, 16);
      return blocked.check(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, 'ipv4');
    }
    return blocked.check(address, 'ipv6');
  }
  return true;
}

const stripBrackets = (host: string) => host.replace(/^\[|\]$/g, '');

export function hostAllowed(hostname: string, policy: TargetPolicy): boolean {
  if (policy.allowPrivate) return true;
  const host = stripBrackets(hostname).toLowerCase();
  return policy.allowedHosts.some((h) => h.toLowerCase() === host);
}

/** Parses and checks a webhook URL's shape (scheme, no credentials). */
export function parseTargetUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BlockedTargetError('URL is not valid');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new BlockedTargetError('URL must use http or https');
  if (url.username || url.password) throw new BlockedTargetError('URL must not contain credentials');
  if (!url.hostname) throw new BlockedTargetError('URL has no host');
  return url;
}

/** Resolves the host (all addresses) and refuses it when any address is blocked. */
export async function resolveTarget(hostname: string, policy: TargetPolicy): Promise<{ address: string; family: number }[]> {
  const host = stripBrackets(hostname);
  const addresses = isIP(host)
    ? [{ address: host, family: isIP(host) }]
    : await new Promise<{ address: string; family: number }[]>((resolve, reject) => {
      dnsLookup(host, { all: true }, (err, addrs) => (err ? reject(new BlockedTargetError(`host ${host} does not resolve`)) : resolve(addrs)));
    });
  if (addresses.length === 0) throw new BlockedTargetError(`host ${host} does not resolve`);
  if (!hostAllowed(hostname, policy)) {
    const bad = addresses.find((a) => isBlockedAddress(a.address));
    if (bad) throw new BlockedTargetError(`target ${host} resolves to a private or reserved address`);
  }
  // IPv4 first: local receivers usually listen on 127.0.0.1 only.
  return [...addresses].sort((a, b) => a.family - b.family);
}

/** Checks a URL at registration time. */
export async function assertSafeTarget(raw: string, policy: TargetPolicy): Promise<URL> {
  const url = parseTargetUrl(raw);
  await resolveTarget(url.hostname, policy);
  return url;
}

/**
 * A `lookup` for http.request that re-checks the resolved address at connect time, so a
 * host that re-resolves to a private address after registration (DNS rebinding) is refused.
 */
export function guardedLookup(policy: TargetPolicy, hostname: string): LookupFunction {
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    resolveTarget(hostname, policy).then((addrs) => {
      if (options?.all) callback(null, addrs);
      else callback(null, addrs[0]!.address, addrs[0]!.family);
    }, (err: Error) => callback(err));
  }) as unknown as LookupFunction;
}

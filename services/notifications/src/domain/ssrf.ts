import { lookup as dnsLookup, promises as dns } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

export interface TargetPolicy {
  allowPrivate: boolean;
  allowedHosts: string[];
  /** DNS servers (`ip` or `ip:port`) to resolve webhook hosts with; empty = the system resolver. */
  dnsServers?: string[];
}

export class BlockedTargetError extends Error {}

/** Networks a webhook may not reach unless allowed by configuration. */
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  // ULA, link-local, site-local (deprecated), multicast, NAT64 (well-known and local-use),
  // documentation, discard, Teredo (tunnels to an IPv4 address it hides), SIIT-translated IPv4.
  ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['64:ff9b:1::', 48],
  ['2001:db8::', 32], ['100::', 64], ['2001::', 32], ['::ffff:0:0:0', 96],
] as const) blocked.addSubnet(net, prefix, 'ipv6');

/** The eight 16-bit groups of an IPv6 address (`::` expanded, a trailing dotted quad folded in). */
function hextets(address: string): number[] {
  let addr = address.toLowerCase();
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(addr);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    addr = `${addr.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = addr.includes('::') ? addr.split('::') as [string, string] : [addr, null];
  const left = head ? head.split(':') : [];
  const right = tail === null ? [] : tail ? tail.split(':') : [];
  const groups = tail === null ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  return groups.map((g) => parseInt(g, 16));
}

const ipv4Of = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/**
 * True for addresses on private, loopback, link-local, CGNAT, multicast or reserved networks,
 * also when an IPv6 form carries such an IPv4 address (mapped, compatible, 6to4).
 */
export function isBlockedAddress(address: string): boolean {
  const bare = address.replace(/%.*$/, ''); // zone id of a link-local address
  const family = isIP(bare);
  if (family === 4) return blocked.check(bare, 'ipv4');
  if (family !== 6) return true;
  const h = hextets(bare);
  const zeroTo = (n: number) => h.slice(0, n).every((g) => g === 0);
  if (zeroTo(5) && h[5] === 0xffff) return blocked.check(ipv4Of(h[6]!, h[7]!), 'ipv4'); // ::ffff:a.b.c.d
  if (zeroTo(6)) return true; // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
  if (h[0] === 0x2002) return blocked.check(ipv4Of(h[1]!, h[2]!), 'ipv4'); // 6to4 2002:AABB:CCDD::
  return blocked.check(bare, 'ipv6');
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

type Address = { address: string; family: number };

const resolvers = new Map<string, dns.Resolver>();
/** A (cached) resolver asking the given servers directly, A and AAAA records. */
async function resolveWith(servers: string[], host: string): Promise<Address[]> {
  const key = servers.join(',');
  let resolver = resolvers.get(key);
  if (!resolver) {
    resolver = new dns.Resolver({ timeout: 3_000, tries: 2 });
    resolver.setServers(servers);
    resolvers.set(key, resolver);
  }
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
  return [
    ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 })) : []),
    ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 })) : []),
  ];
}

const lookupAll = (host: string) => new Promise<Address[]>((resolve) => {
  dnsLookup(host, { all: true }, (err, addrs) => resolve(err ? [] : addrs));
});

/**
 * Resolves the host (all addresses) and refuses it when any address is blocked. What this
 * returns is what the delivery connects to: no second resolution can swap the address.
 */
export async function resolveTarget(hostname: string, policy: TargetPolicy): Promise<Address[]> {
  const host = stripBrackets(hostname);
  const addresses = isIP(host)
    ? [{ address: host, family: isIP(host) }]
    : policy.dnsServers?.length ? await resolveWith(policy.dnsServers, host) : await lookupAll(host);
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
 * A `lookup` for http.request: the socket connects to the address checked here, resolved at
 * connect time, so a host that re-resolves to a private address after registration (DNS
 * rebinding) is refused, and no later lookup can swap the checked address for another.
 */
export function guardedLookup(policy: TargetPolicy, hostname: string): LookupFunction {
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    resolveTarget(hostname, policy).then((addrs) => {
      if (options?.all) callback(null, addrs);
      else callback(null, addrs[0]!.address, addrs[0]!.family);
    }, (err: Error) => callback(err));
  }) as unknown as LookupFunction;
}

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { BlockedTargetError, guardedLookup, hostAllowed, isBlockedAddress, parseTargetUrl, type TargetPolicy } from './ssrf.js';

export const SIGNATURE_HEADER = 'x-aos-signature';
export const TIMESTAMP_HEADER = 'x-aos-timestamp';

export const generateSecret = () => `whsec_${randomBytes(32).toString('base64url')}`;

/** `v1=` + hex HMAC-SHA256 of `${timestamp}.${body}` with the webhook's secret. */
export function sign(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** What a receiver does: recompute and compare in constant time, and reject old timestamps. */
export function verifySignature(secret: string, header: string, timestamp: string, body: string, toleranceSec = 300, now = Date.now()): boolean {
  const ts = Number(timestamp);
  if (!Number.isInteger(ts) || Math.abs(now / 1000 - ts) > toleranceSec) return false;
  const expected = Buffer.from(sign(secret, ts, body));
  const given = Buffer.from(header);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** `*` = every event, `tasks.*` = every event whose type starts with `tasks.`, else the exact type. */
export function matchesEvent(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => p === '*' || p === type || (p.endsWith('.*') && type.startsWith(p.slice(0, -1))));
}

export interface DeliveryResult {
  ok: boolean;
  status: number | null;
  error: string | null;
  durationMs: number;
  /** Retrying cannot help (target refused by the SSRF guard). */
  permanent: boolean;
}

/**
 * POSTs once; redirects are never followed (a 3xx is a failure), the target is re-checked at connect.
 * `timeoutMs` bounds the whole attempt: a receiver trickling its answer cannot hold a worker.
 */
export function deliver(urlStr: string, body: string, headers: Record<string, string>, policy: TargetPolicy, timeoutMs: number): Promise<DeliveryResult> {
  const started = Date.now();
  const done = (r: Omit<DeliveryResult, 'durationMs'>): DeliveryResult => ({ ...r, durationMs: Date.now() - started });
  let url: URL;
  try {
    url = parseTargetUrl(urlStr);
  } catch (err) {
    return Promise.resolve(done({ ok: false, status: null, error: (err as Error).message, permanent: true }));
  }
  const mod = url.protocol === 'https:' ? https : http;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  // Node does not call `lookup` for IP literals: those are checked here.
  if (isIP(host) && !hostAllowed(url.hostname, policy) && isBlockedAddress(host)) {
    return Promise.resolve(done({ ok: false, status: null, error: `target ${host} is a private or reserved address`, permanent: true }));
  }
  return new Promise((resolve) => {
    const finish = (r: Omit<DeliveryResult, 'durationMs'>) => { clearTimeout(deadline); resolve(done(r)); };
    const deadline = setTimeout(() => {
      finish({ ok: false, status: null, error: `timed out after ${timeoutMs} ms`, permanent: false });
      req.destroy();
    }, timeoutMs);
    const req = mod.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'AOS-Webhooks/1', 'content-length': Buffer.byteLength(body), ...headers },
      lookup: guardedLookup(policy, url.hostname),
    }, (res) => {
      res.resume();
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) finish({ ok: true, status, error: null, permanent: false });
        else finish({ ok: false, status, error: status >= 300 && status < 400 ? `redirect ${status} not followed` : `receiver answered ${status}`, permanent: false });
      });
      res.on('error', (err) => finish({ ok: false, status: res.statusCode ?? null, error: err.message, permanent: false }));
    });
    req.on('error', (err) => {
      const blockedTarget = err instanceof BlockedTargetError || (err as { cause?: unknown }).cause instanceof BlockedTargetError;
      finish({ ok: false, status: null, error: err.message, permanent: blockedTarget });
    });
    req.end(body);
  });
}

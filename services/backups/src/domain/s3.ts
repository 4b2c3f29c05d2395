import { createHmac, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';

export interface S3Settings {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  prefix: string;
}

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
const sha256hex = (data: string) => createHash('sha256').update(data).digest('hex');
const encodeSegment = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
}

const EMPTY_SHA256 = createHash('sha256').digest('hex');

/**
 * AWS Signature V4 headers for a request without query string (path-style S3). Every
 * `x-amz-*` header sent must be in `extra` so it is signed: S3 refuses unsigned ones.
 */
export function signV4(opts: { method: string; url: URL; payloadSha256: string; region: string; accessKeyId: string; secretAccessKey: string; extra?: Record<string, string>; now?: Date }): Record<string, string> {
  const amzDate = (opts.now ?? new Date()).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers: Record<string, string> = { ...opts.extra, host: opts.url.host, 'x-amz-content-sha256': opts.payloadSha256, 'x-amz-date': amzDate };
  const signed = Object.keys(headers).map((h) => h.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const canonical = [
    opts.method,
    opts.url.pathname,
    '',
    signed.map((h) => `${h}:${lower[h]!.trim()}\n`).join(''),
    signed.join(';'),
    opts.payloadSha256,
  ].join('\n');
  const scope = `${date}/${opts.region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  const signature = createHmac('sha256', signingKey(opts.secretAccessKey, date, opts.region, 's3')).update(toSign).digest('hex');
  const { host: _host, ...send } = lower;
  return {
    ...send,
    authorization: `AWS4-HMAC-SHA256 Credential=${opts.accessKeyId}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`,
  };
}

function objectUrl(s: S3Settings, key: string): URL {
  const base = s.endpoint.replace(/\/+$/, '');
  return new URL(`${base}/${encodeSegment(s.bucket)}/${key.split('/').map(encodeSegment).join('/')}`);
}

/**
 * What an S3 error may be stored and shown as: status and the XML `Code`/`Message` only.
 * S3 error bodies also echo the access key id, the string to sign and the canonical request.
 */
async function s3Failure(res: Response, s: S3Settings, what: string): Promise<Error> {
  const text = (await res.text().catch(() => '')).slice(0, 4_000);
  const code = /<Code>([^<]{1,100})<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]{1,300})<\/Message>/.exec(text)?.[1];
  const detail = [code, message].filter(Boolean).join(': ');
  return new Error(redactS3(`S3 ${what} answered ${res.status}${detail ? ` (${detail})` : ''}`, s));
}

export function redactS3(message: string, s: S3Settings): string {
  return message.split(s.secretAccessKey).join('***').split(s.accessKeyId).join('***').slice(0, 2_000);
}

/** Uploads a file (streamed) to an S3-compatible bucket with a path-style PUT; returns the object key. */
export async function s3Put(s: S3Settings, file: string, filename: string, sha256: string, timeoutMs: number): Promise<string> {
  const key = `${s.prefix}${filename}`;
  const url = objectUrl(s, key);
  const { size } = await stat(file);
  const headers = signV4({ method: 'PUT', url, payloadSha256: sha256, region: s.region, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, extra: { 'x-amz-meta-sha256': sha256 } });
  const res = await fetch(url, {
    method: 'PUT',
    headers: { ...headers, 'content-length': String(size), 'content-type': 'application/octet-stream' },
    body: Readable.toWeb(createReadStream(file)) as ReadableStream,
    duplex: 'half',
    signal: AbortSignal.timeout(timeoutMs),
  } as RequestInit);
  if (!res.ok) throw await s3Failure(res, s, 'PUT');
  await res.body?.cancel().catch(() => {});
  return key;
}

/** HEAD of the object of `filename`: its recorded SHA-256 (x-amz-meta-sha256) and size, or null when absent. */
export async function s3Head(s: S3Settings, filename: string, timeoutMs = 10_000): Promise<{ key: string; sha256: string | null; size: number } | null> {
  const key = `${s.prefix}${filename}`;
  const url = objectUrl(s, key);
  const headers = signV4({ method: 'HEAD', url, payloadSha256: EMPTY_SHA256, region: s.region, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey });
  const res = await fetch(url, { method: 'HEAD', headers, signal: AbortSignal.timeout(timeoutMs) });
  if (res.status === 404) return null;
  if (!res.ok) throw await s3Failure(res, s, 'HEAD');
  return { key, sha256: res.headers.get('x-amz-meta-sha256'), size: Number(res.headers.get('content-length') ?? 0) };
}

/** Deletes the object `key` (S3 answers 204 also when it did not exist). */
export async function s3Delete(s: S3Settings, key: string, timeoutMs = 30_000): Promise<void> {
  const url = objectUrl(s, key);
  const headers = signV4({ method: 'DELETE', url, payloadSha256: EMPTY_SHA256, region: s.region, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey });
  const res = await fetch(url, { method: 'DELETE', headers, signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok && res.status !== 404) throw await s3Failure(res, s, 'DELETE');
  await res.body?.cancel().catch(() => {});
}

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

/** AWS Signature V4 headers for a request without query string (path-style S3). */
export function signV4(opts: { method: string; url: URL; payloadSha256: string; region: string; accessKeyId: string; secretAccessKey: string; now?: Date }): Record<string, string> {
  const amzDate = (opts.now ?? new Date()).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers: Record<string, string> = { host: opts.url.host, 'x-amz-content-sha256': opts.payloadSha256, 'x-amz-date': amzDate };
  const signed = Object.keys(headers).sort();
  const canonical = [
    opts.method,
    opts.url.pathname,
    '',
    signed.map((h) => `${h}:${headers[h]!.trim()}\n`).join(''),
    signed.join(';'),
    opts.payloadSha256,
  ].join('\n');
  const scope = `${date}/${opts.region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  const signature = createHmac('sha256', signingKey(opts.secretAccessKey, date, opts.region, 's3')).update(toSign).digest('hex');
  return {
    'x-amz-content-sha256': opts.payloadSha256,
    'x-amz-date': amzDate,
    authorization: `AWS4-HMAC-SHA256 Credential=${opts.accessKeyId}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`,
  };
}

/** Uploads a file (streamed) to an S3-compatible bucket with a path-style PUT; returns the object key. */
export async function s3Put(s: S3Settings, file: string, filename: string, sha256: string, timeoutMs: number): Promise<string> {
  const key = `${s.prefix}${filename}`;
  const base = s.endpoint.replace(/\/+$/, '');
  const url = new URL(`${base}/${encodeSegment(s.bucket)}/${key.split('/').map(encodeSegment).join('/')}`);
  const { size } = await stat(file);
  const headers = signV4({ method: 'PUT', url, payloadSha256: sha256, region: s.region, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey });
  const res = await fetch(url, {
    method: 'PUT',
    headers: { ...headers, 'content-length': String(size), 'content-type': 'application/octet-stream', 'x-amz-meta-sha256': sha256 },
    body: Readable.toWeb(createReadStream(file)) as ReadableStream,
    duplex: 'half',
    signal: AbortSignal.timeout(timeoutMs),
  } as RequestInit);
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).slice(0, 500);
    throw new Error(`S3 PUT answered ${res.status}${text ? `: ${text}` : ''}`);
  }
  await res.body?.cancel().catch(() => {});
  return key;
}

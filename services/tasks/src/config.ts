import { Env } from '@aos/core';
import type { TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {
  /** Public origin of the API (the gateway), used for the links of the changelog RSS feed. */
  APP_URL: Env.httpUrl('http://127.0.0.1:3001'),
} satisfies TProperties;

import type { TProperties } from '@sinclair/typebox';

/** Settings of this service beyond the base ones every service reads (see @aos/runtime). */
export const config = {} satisfies TProperties;
